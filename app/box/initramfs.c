/* What the KVM box boots: the machine's own Debian kernel and an initramfs made here, at run
 * time, from that kernel's modules, a static busybox and the box's init script
 * (assets/box/init.sh, linked into vmws). No binary is committed and nothing is downloaded.
 * The one idea: the initramfs is a cache - its file name carries a hash of every input
 * (script, module files, busybox), so a kernel update or a new script makes a new one and an
 * unchanged machine reuses the old one. */
#include "app/box/box.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util/errfmt.h"
#include "core/util/fsutil.h"

extern const char vmws_box_init[], vmws_box_init_end[];

/* The modules the box loads, by file name in /lib/modules/VERSION/kernel; their dependencies
 * come from modules.dep and are loaded first. */
static const char *const box_modules[] = {
    "kvm-amd.ko",                    /* /dev/kvm on the emulated AMD CPU's SVM */
    "virtio_pci.ko",                 /* the box's devices */
    "9pnet_virtio.ko",               /* the host's / and the shares */
    "9p.ko",           "overlay.ko", /* a writable root over the read-only host */
    "virtio_net.ko",                 /* the host reaches the agent through QEMU's port forward */
    "qemu_fw_cfg.ko",                /* the box's configuration (token, shares) */
};
/* Parameters for kvm_amd: no nested virtualisation inside the box's guests, no features the
 * emulated CPU only half offers. */
static const char kvm_amd_params[] = "nested=0 avic=0 vgif=0 vls=0 lbrv=0";

static bool find_in_path(const char *prog, char *out, size_t len)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (snprintf(out, len, "%s/%s", d, prog) < (int)len && access(out, X_OK) == 0)
            return true;
    }
    return false;
}

/* True if PATH is an x86-64 ELF executable with no program interpreter (statically linked). */
static bool elf_is_static(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    Elf64_Ehdr eh;
    bool ok = pread(fd, &eh, sizeof(eh), 0) == sizeof(eh) && memcmp(eh.e_ident, ELFMAG, 4) == 0 &&
              eh.e_ident[EI_CLASS] == ELFCLASS64 && eh.e_phentsize == sizeof(Elf64_Phdr) &&
              eh.e_phnum < 64;
    for (unsigned i = 0; ok && i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        ok = pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) == sizeof(ph) &&
             ph.p_type != PT_INTERP;
    }
    close(fd);
    return ok;
}

/* Compares kernel version strings the way humans order them (6.1.0-9 < 6.1.0-10). */
static int kver_cmp(const char *a, const char *b)
{
    return strverscmp(a, b);
}

int box_host_find(struct box_host *h, char *why, size_t whylen)
{
    memset(h, 0, sizeof(*h));
    const char *q = getenv("VMWS_BOX_QEMU");
    if (q && *q) {
        snprintf(h->qemu, sizeof(h->qemu), "%s", q);
        if (access(h->qemu, X_OK) < 0)
            return err_set(why, whylen, -ENOENT, "cannot run %s (VMWS_BOX_QEMU): %s", h->qemu,
                        strerror(errno));
    } else if (!find_in_path("qemu-system-x86_64", h->qemu, sizeof(h->qemu))) {
        return err_set(why, whylen, -ENOENT,
                    "qemu-system-x86_64 not found: install the Debian package qemu-system-x86");
    }

    /* The newest /boot/vmlinuz-V whose modules include kvm-amd.ko ($VMWS_BOX_KERNEL picks). */
    const char *want = getenv("VMWS_BOX_KERNEL");
    DIR *d = opendir("/boot");
    struct dirent *e;
    bool any_kernel = false;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "vmlinuz-", 8) != 0)
            continue;
        const char *v = e->d_name + 8;
        if (want && *want && strcmp(want, v) != 0)
            continue;
        any_kernel = true;
        char ko[PATH_MAX];
        snprintf(ko, sizeof(ko), "/lib/modules/%s/kernel/arch/x86/kvm/kvm-amd.ko", v);
        if (access(ko, R_OK) == 0 && strlen(v) < sizeof(h->kver) &&
            (!h->kver[0] || kver_cmp(v, h->kver) > 0))
            snprintf(h->kver, sizeof(h->kver), "%s", v);
    }
    if (d)
        closedir(d);
    if (!h->kver[0])
        return err_set(why, whylen, -ENOENT,
                    any_kernel ? "no kernel in /boot has its modules (kvm-amd.ko) in /lib/modules: "
                                 "reinstall the Debian package linux-image-amd64"
                               : "no Linux kernel in /boot%s%s: install the Debian package "
                                 "linux-image-amd64",
                    want && *want ? " named by VMWS_BOX_KERNEL=" : "", want && *want ? want : "");
    snprintf(h->kernel, sizeof(h->kernel), "/boot/vmlinuz-%s", h->kver);
    if (access(h->kernel, R_OK) < 0)
        return err_set(why, whylen, -errno,
                    "cannot read %s: %s (the box boots it; run as root or "
                    "make it readable)",
                    h->kernel, strerror(errno));

    static const char *const busyboxes[] = {"/bin/busybox", "/usr/bin/busybox"};
    for (size_t i = 0; i < sizeof(busyboxes) / sizeof(busyboxes[0]); i++) {
        if (elf_is_static(busyboxes[i])) {
            snprintf(h->busybox, sizeof(h->busybox), "%s", busyboxes[i]);
            return 0;
        }
    }
    return err_set(why, whylen, -ENOENT,
                "no statically linked busybox: install the Debian package busybox-static");
}

/* ---- module dependencies ------------------------------------------------------------- */

struct modlist {
    char paths[64][160]; /* relative to /lib/modules/VERSION, dependencies first */
    int n;
};

/* The modules.dep line for a module whose file name is NAME: its path and dependencies. */
static bool modules_dep_line(FILE *f, const char *name, char *line, size_t len)
{
    rewind(f);
    size_t nlen = strlen(name);
    while (fgets(line, (int)len, f)) {
        char *colon = strchr(line, ':');
        if (!colon || (size_t)(colon - line) < nlen + 1)
            continue;
        if (colon[-(long)nlen - 1] == '/' && strncmp(colon - nlen, name, nlen) == 0)
            return true;
    }
    return false;
}

static int modlist_add(struct modlist *m, FILE *dep, const char *name, int depth, char *why,
                       size_t whylen)
{
    char line[4096];
    if (depth > 16)
        return err_set(why, whylen, -ELOOP, "modules.dep: dependency loop at %s", name);
    if (!modules_dep_line(dep, name, line, sizeof(line)))
        return err_set(why, whylen, -ENOENT,
                    "module %s is not in modules.dep: reinstall the Debian package "
                    "linux-image-amd64",
                    name);
    char *colon = strchr(line, ':');
    *colon = '\0';
    char self[sizeof(m->paths[0])];
    if (snprintf(self, sizeof(self), "%s", line) >= (int)sizeof(self))
        return err_set(why, whylen, -ENAMETOOLONG, "module path too long: %s", line);
    for (char *save = NULL, *t = strtok_r(colon + 1, " \n", &save); t;
         t = strtok_r(NULL, " \n", &save)) {
        const char *base = strrchr(t, '/') ? strrchr(t, '/') + 1 : t;
        char dname[160];
        snprintf(dname, sizeof(dname), "%s", base);
        /* strtok_r state is per line; the recursion rereads the file into its own buffer. */
        int rc = modlist_add(m, dep, dname, depth + 1, why, whylen);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < m->n; i++) {
        if (strcmp(m->paths[i], self) == 0)
            return 0;
    }
    if (m->n == (int)(sizeof(m->paths) / sizeof(m->paths[0])))
        return err_set(why, whylen, -E2BIG, "too many modules");
    snprintf(m->paths[m->n++], sizeof(m->paths[0]), "%s", self);
    return 0;
}

/* ---- cpio (newc) ----------------------------------------------------------------------- */

struct cpio {
    FILE *f;
    unsigned ino;
    int err;
};

static void cpio_pad(struct cpio *c)
{
    long pos = ftell(c->f);
    while (pos > 0 && pos % 4) {
        fputc(0, c->f);
        pos++;
    }
}

static void cpio_entry(struct cpio *c, const char *name, unsigned mode, unsigned rmaj,
                       unsigned rmin, const void *data, size_t size)
{
    fprintf(c->f, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ++c->ino, mode,
            0u, 0u, S_ISDIR(mode) ? 2u : 1u, 0u, size, 0u, 0u, rmaj, rmin, strlen(name) + 1, 0u);
    fwrite(name, 1, strlen(name) + 1, c->f);
    cpio_pad(c);
    if (size && fwrite(data, 1, size, c->f) != size)
        c->err = -EIO;
    cpio_pad(c);
}

static int read_file(const char *path, char **data, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        return rc;
    }
    *size = (size_t)st.st_size;
    *data = malloc(*size ? *size : 1);
    ssize_t n = *data ? read(fd, *data, *size) : -1;
    int rc = n == (ssize_t)*size ? 0 : -EIO;
    close(fd);
    if (rc < 0) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

static int cpio_file(struct cpio *c, const char *name, unsigned mode, const char *path)
{
    char *data = NULL;
    size_t size = 0;
    int rc = read_file(path, &data, &size);
    if (rc < 0)
        return rc;
    cpio_entry(c, name, S_IFREG | mode, 0, 0, data, size);
    free(data);
    return 0;
}

/* FNV-1a, enough to tell one set of inputs from another. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_stat(uint64_t h, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        h = fnv(h, &st.st_size, sizeof(st.st_size));
        h = fnv(h, &st.st_mtim, sizeof(st.st_mtim));
        h = fnv(h, &st.st_ino, sizeof(st.st_ino));
    }
    return fnv(h, path, strlen(path));
}

/* Removes the files in DIR named PREFIX... other than KEEP (older kernels or inputs). */
static void remove_stale(const char *dir, const char *prefix, const char *keep)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    const char *keep_base = strrchr(keep, '/') ? strrchr(keep, '/') + 1 : keep;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strcmp(e->d_name, keep_base) != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d)
        closedir(d);
}

int box_initramfs(const struct box_host *h, const char *cache_dir, char *out, size_t outlen,
                  char *why, size_t whylen)
{
    char moddir[256], path[PATH_MAX];
    why[0] = '\0';
    snprintf(moddir, sizeof(moddir), "/lib/modules/%s", h->kver);
    if (snprintf(path, sizeof(path), "%s/modules.dep", moddir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    FILE *dep = fopen(path, "re");
    if (!dep)
        return err_set(why, whylen, -errno, "cannot read %s: %s (reinstall linux-image-amd64)", path,
                    strerror(errno));
    struct modlist *m = calloc(1, sizeof(*m));
    int rc = m ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < sizeof(box_modules) / sizeof(box_modules[0]); i++)
        rc = modlist_add(m, dep, box_modules[i], 0, why, whylen);
    fclose(dep);
    if (rc < 0) {
        free(m);
        return rc;
    }

    /* The list the init script loads, in order, with parameters. */
    char list[16384];
    size_t ll = 0;
    uint64_t hash =
        fnv(0xcbf29ce484222325ull, vmws_box_init, (size_t)(vmws_box_init_end - vmws_box_init));
    hash = fnv_stat(hash, h->busybox);
    for (int i = 0; i < m->n; i++) {
        const char *base = strrchr(m->paths[i], '/') ? strrchr(m->paths[i], '/') + 1 : m->paths[i];
        ll += (size_t)snprintf(list + ll, sizeof(list) - ll, "/lib/modules/%s%s%s\n", base,
                               strcmp(base, "kvm-amd.ko") == 0 ? " " : "",
                               strcmp(base, "kvm-amd.ko") == 0 ? kvm_amd_params : "");
        snprintf(path, sizeof(path), "%s/%s", moddir, m->paths[i]);
        hash = fnv_stat(hash, path);
    }
    hash = fnv(hash, list, ll);

    if (snprintf(out, outlen, "%s/initramfs-%s-%016llx.cpio", cache_dir, h->kver,
                 (unsigned long long)hash) >= (int)outlen) {
        free(m);
        return err_set(why, whylen, -ENAMETOOLONG, "cache path too long");
    }
    if (access(out, R_OK) == 0) {
        free(m);
        return 0;
    }

    char tmp[PATH_MAX];
    int fd = fs_tmp_create(out, tmp, sizeof(tmp));
    if (fd < 0) {
        free(m);
        return err_set(why, whylen, fd, "cannot write %s: %s", tmp, strerror(-fd));
    }
    struct cpio c = {.f = fdopen(fd, "w")};
    if (!c.f) {
        close(fd);
        unlink(tmp);
        free(m);
        return err_set(why, whylen, -ENOMEM, "out of memory");
    }
    static const char *const dirs[] = {"bin", "dev",     "proc",  "sys",   "lib", "lib/modules",
                                       "box", "newroot", "lower", "upper", "etc"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        cpio_entry(&c, dirs[i], S_IFDIR | 0755, 0, 0, NULL, 0);
    /* The kernel opens /dev/console for init's stdio before anything is mounted. */
    cpio_entry(&c, "dev/console", S_IFCHR | 0600, 5, 1, NULL, 0);
    cpio_entry(&c, "init", S_IFREG | 0755, 0, 0, vmws_box_init,
               (size_t)(vmws_box_init_end - vmws_box_init));
    cpio_entry(&c, "box/modules", S_IFREG | 0644, 0, 0, list, ll);
    rc = cpio_file(&c, "bin/busybox", 0755, h->busybox);
    for (int i = 0; rc == 0 && i < m->n; i++) {
        const char *base = strrchr(m->paths[i], '/') ? strrchr(m->paths[i], '/') + 1 : m->paths[i];
        char name[256];
        snprintf(name, sizeof(name), "lib/modules/%s", base);
        snprintf(path, sizeof(path), "%s/%s", moddir, m->paths[i]);
        rc = cpio_file(&c, name, 0644, path);
        if (rc < 0)
            err_set(why, whylen, rc, "cannot read %s: %s", path, strerror(-rc));
    }
    cpio_entry(&c, "TRAILER!!!", 0, 0, 0, NULL, 0);
    free(m);
    if (rc == 0)
        rc = c.err;
    if (fflush(c.f) != 0 && rc == 0)
        rc = -errno;
    int fd2 = dup(fileno(c.f));
    fclose(c.f);
    if (fd2 < 0) {
        unlink(tmp);
        return err_set(why, whylen, -errno, "cannot write %s", tmp);
    }
    rc = fs_tmp_commit(fd2, tmp, out, rc);
    if (rc < 0 && !why[0])
        err_set(why, whylen, rc, "cannot write %s: %s", out, strerror(-rc));
    if (rc == 0)
        remove_stale(cache_dir, "initramfs-", out);
    return rc;
}

/* ---- the kernel, uncompressed -------------------------------------------------------------- */

/* The decompressor for a bzImage payload, by its magic bytes. */
static const char *const *decompressor(const uint8_t *p, size_t n)
{
    static const char *const xz[] = {"xz", "-dc", "--single-stream", NULL};
    static const char *const zstd[] = {"zstd", "-dcq", NULL};
    static const char *const gz[] = {"gzip", "-dc", NULL};
    static const char *const lz4[] = {"lz4", "-dc", NULL};
    if (n >= 6 && memcmp(p,
                         "\xfd"
                         "7zXZ\0",
                         6) == 0)
        return xz;
    if (n >= 4 && memcmp(p, "\x28\xb5\x2f\xfd", 4) == 0)
        return zstd;
    if (n >= 2 && memcmp(p, "\x1f\x8b", 2) == 0)
        return gz;
    if (n >= 4 && memcmp(p, "\x02\x21\x4c\x18", 4) == 0)
        return lz4;
    return NULL;
}

/* True if the ELF file at PATH carries Xen's PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), which
 * QEMU needs to boot an uncompressed kernel directly. */
static bool elf_has_pvh_note(const char *path)
{
    char *d = NULL;
    size_t n = 0;
    if (read_file(path, &d, &n) < 0)
        return false;
    bool found = false;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)d;
    if (n >= sizeof(*eh) && memcmp(eh->e_ident, ELFMAG, 4) == 0 && eh->e_phoff < n &&
        eh->e_phnum < 64 && eh->e_phoff + eh->e_phnum * sizeof(Elf64_Phdr) <= n) {
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(d + eh->e_phoff);
        for (unsigned i = 0; !found && i < eh->e_phnum; i++) {
            if (ph[i].p_type != PT_NOTE || ph[i].p_offset > n ||
                ph[i].p_filesz > n - ph[i].p_offset)
                continue;
            size_t o = ph[i].p_offset, end = o + ph[i].p_filesz;
            while (!found && o + sizeof(Elf64_Nhdr) <= end) {
                const Elf64_Nhdr *nh = (const Elf64_Nhdr *)(d + o);
                size_t next =
                    o + sizeof(*nh) + ((nh->n_namesz + 3) & ~3u) + ((nh->n_descsz + 3) & ~3u);
                found = nh->n_namesz == 4 && memcmp(d + o + sizeof(*nh), "Xen", 4) == 0 &&
                        nh->n_type == 18 /* XEN_ELFNOTE_PHYS32_ENTRY */;
                if (next <= o)
                    break;
                o = next;
            }
        }
    }
    free(d);
    return found;
}

int box_kernel_image(const struct box_host *h, const char *cache_dir, char *out, size_t outlen)
{
    char *img = NULL;
    size_t n = 0;
    snprintf(out, outlen, "%s", h->kernel);
    if (read_file(h->kernel, &img, &n) < 0)
        return -EIO;
    /* The setup header (Documentation/arch/x86/boot.rst): "HdrS" at 0x202, version at 0x206,
     * setup_sects at 0x1f1, payload_offset/payload_length at 0x248 (protocol 2.08+). */
    const uint8_t *b = (const uint8_t *)img;
    uint32_t off = 0, len = 0;
    if (n > 0x250 && memcmp(b + 0x202, "HdrS", 4) == 0 && (b[0x206] | b[0x207] << 8) >= 0x208) {
        memcpy(&off, b + 0x248, 4);
        memcpy(&len, b + 0x24c, 4);
        off += (uint32_t)((b[0x1f1] ? b[0x1f1] : 4) + 1) * 512;
    }
    /* The last 4 bytes of the payload are its uncompressed size, not compressed data. */
    const char *const *tool =
        len > 4 && off < n && len <= n - off ? decompressor(b + off, len) : NULL;
    char tmp[PATH_MAX];
    uint64_t hash = fnv_stat(0xcbf29ce484222325ull, h->kernel);
    if (!tool || snprintf(tmp, sizeof(tmp), "%s/vmlinux-%s-%016llx", cache_dir, h->kver,
                          (unsigned long long)hash) >= (int)sizeof(tmp)) {
        free(img);
        return -ENOTSUP;
    }
    if (access(tmp, R_OK) == 0) {
        free(img);
        snprintf(out, outlen, "%s", tmp);
        return 0;
    }
    char part[PATH_MAX + 8];
    snprintf(part, sizeof(part), "%s.part", tmp);
    int in[2];
    int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || pipe2(in, O_CLOEXEC) < 0) {
        if (fd >= 0)
            close(fd);
        free(img);
        return -errno;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(fd, 1);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execvp(tool[0], (char *const *)tool);
        _exit(127);
    }
    close(in[0]);
    close(fd);
    signal(SIGPIPE, SIG_IGN);
    bool wrote = pid > 0 && write(in[1], b + off, len - 4) == (ssize_t)(len - 4);
    close(in[1]);
    free(img);
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    if (!wrote || status != 0 || !elf_has_pvh_note(part) || rename(part, tmp) < 0) {
        unlink(part);
        return -ENOTSUP; /* the bzImage boots too, only slower */
    }
    remove_stale(cache_dir, "vmlinux-", tmp);
    snprintf(out, outlen, "%s", tmp);
    return 0;
}
