/* `vmws create NAME --os debian`: a VM that boots a real Debian 12 system from its own disk. The
 * builder linked into vmws (assets/os/debian.sh) makes a base system once per machine (cached
 * under ~/.cache/vmws/os, one folder per version of its recipe), which becomes a read-only
 * qcow2 base image; each VM's disk is an empty qcow2 overlay on it (a linked clone: vm.conf
 * names the base and its stamp, and the VMM refuses a base that changed). The VM's own host
 * name, a password for the user debian (random, printed once, stored only as a yescrypt hash)
 * and the user's SSH key reach it in a second initramfs archive appended to its copy of the
 * base's initramfs, applied once at its first boot; it boots the system's own kernel.
 * With a network it also gets a forward from a free port of the host's 127.0.0.1 to its SSH
 * server, which `vmws ssh NAME` uses. */
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/cli.h"
#include "core/storage/disk.h"
#include "core/util/fsutil.h"

extern const char vmws_os_debian[], vmws_os_debian_end[];

#define OS_APPEND "root=/dev/vda rw console=tty0 console=ttyS0"
#define OS_DEFAULT_DISK (8ULL << 30)
#define OS_MIN_DISK (2ULL << 30) /* the base system's file system (assets/os/debian.sh) */

/* ~/.cache/vmws/os (or $XDG_CACHE_HOME/vmws/os), made if missing. */
static int os_cache_dir(char *out, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n = xdg && xdg[0] ? snprintf(out, len, "%s/vmws/os", xdg)
                          : snprintf(out, len, "%s/.cache/vmws/os", home ? home : "/tmp");
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    char part[PATH_MAX];
    for (char *s = strchr(out + 1, '/');; s = strchr(s + 1, '/')) { /* mkdir -p */
        snprintf(part, sizeof(part), "%.*s", s ? (int)(s - out) : (int)strlen(out), out);
        if (mkdir(part, 0700) < 0 && errno != EEXIST)
            return -errno;
        if (!s)
            return 0;
    }
}

/* Runs the builder with ARGV (after "sh SCRIPT"), showing its "step:" lines as progress; the
 * last "base DIR" line it prints goes into BASE (if not NULL). Its errors reach stderr as is. */
static int run_builder(const char *script, const char *const *args, char *base, size_t baselen)
{
    char cmd[PATH_MAX * 4] = "";
    size_t n = (size_t)snprintf(cmd, sizeof(cmd), "sh '%s'", script);
    for (; *args && n < sizeof(cmd); args++) {
        if (strchr(*args, '\''))
            return -EINVAL;
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " '%s'", *args);
    }
    if (n >= sizeof(cmd))
        return -ENAMETOOLONG;
    FILE *f = popen(cmd, "r");
    if (!f)
        return -errno;
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "step: ", 6) == 0) {
            printf("  %s\n", line + 6);
            fflush(stdout);
        } else if (base && strncmp(line, "base ", 5) == 0) {
            snprintf(base, baselen, "%.4000s", line + 5);
        }
    }
    int st = pclose(f);
    return st == 0 ? 0 : -EIO;
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    int r = out < 0 ? -errno : 0;
    char buf[1 << 16];
    ssize_t got = 0;
    while (r == 0 && (got = read(in, buf, sizeof(buf))) > 0)
        for (ssize_t done = 0; r == 0 && done < got;) {
            ssize_t w = write(out, buf + done, (size_t)(got - done));
            r = w < 0 ? -errno : 0;
            done += w > 0 ? w : 0;
        }
    if (r == 0 && got < 0)
        r = -errno;
    close(in);
    if (out >= 0 && close(out) < 0 && r == 0)
        r = -errno;
    return r;
}

/* A TCP port of 127.0.0.1 free now (the kernel's pick); 0 if none. */
static uint16_t free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* The forward to the guest's TCP port 22, or NULL. */
static const struct vm_net_forward *ssh_forward(const struct vm_net_config *n)
{
    for (unsigned i = 0; n->enabled && i < n->nforwards; i++)
        if (!n->forwards[i].udp && n->forwards[i].guest_port == 22)
            return &n->forwards[i];
    return NULL;
}

/* The base system's shared disk: BASEDIR/base.qcow2, made once from the builder's root.img (a
 * qcow2 copy, so snapshots and merges see one format all the way down) and then left read-only:
 * VMs are overlays on it, and it is never written again. Its path goes into BASE. */
static int base_image(const char *dir, char *base, size_t len)
{
    char raw[PATH_MAX], tmp[PATH_MAX + 32], err[256];
    snprintf(base, len, "%s/base.qcow2", dir);
    snprintf(raw, sizeof(raw), "%s/root.img", dir);
    if (access(base, F_OK) == 0)
        return 0;
    printf("  making the shared base image %s (once per base)\n", base);
    fflush(stdout);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", base, (long)getpid());
    struct disk *src = disk_open_format(raw, "raw", true, 0, err, sizeof(err));
    if (!src)
        return cli_error("the Debian base system has no root.img to make its base image from: "
                         "%s (remove %s to build it again)",
                         err, dir);
    int r = disk_create_qcow2(tmp, disk_size(src), NULL, NULL);
    struct disk *dst = r == 0 ? disk_open_format(tmp, "qcow2", false, 0, err, sizeof(err)) : NULL;
    if (r == 0)
        r = dst ? disk_copy(src, dst) : -EIO;
    if (dst && disk_close(dst) < 0 && r == 0)
        r = -EIO;
    disk_close(src);
    /* link, not rename: a create beside this one that made it first keeps its base (its VM
     * holds that file's stamp already). */
    if (r == 0 && (chmod(tmp, 0444) < 0 || (link(tmp, base) < 0 && errno != EEXIST)))
        r = -errno;
    unlink(tmp);
    if (r < 0)
        return cli_error("cannot make the base image %s: %s", base, dst ? strerror(-r) : err);
    unlink(raw); /* the base image holds it all now */
    return 0;
}

int cli_create_os(const char *name, struct vm_config *cfg, uint64_t disk_bytes, const char *os,
                  const char *ssh_key)
{
    if (strcmp(os, "debian") != 0)
        return cli_usage_error("create", "unknown --os '%s' (expected debian)", os);
    if (cfg->kernel[0])
        return cli_usage_error("create", "--os boots the system's own kernel: drop --kernel");
    if (!disk_bytes)
        disk_bytes = OS_DEFAULT_DISK;
    if (disk_bytes < OS_MIN_DISK)
        return cli_usage_error("create", "--os debian needs --disk 2G or more");
    struct vm_net_forward ssh = {.host_port = free_tcp_port(), .guest_port = 22};
    char ferr[256];
    if (cfg->net.enabled && !ssh_forward(&cfg->net) &&
        (!ssh.host_port || vmconfig_net_forward_add(&cfg->net, &ssh, ferr, sizeof(ferr)) < 0))
        printf("note: no SSH forward (%s); add one with --forward tcp:PORT:22\n",
               ssh.host_port ? ferr : "no free port on 127.0.0.1");
    char key[PATH_MAX] = "";
    if (ssh_key && !realpath(ssh_key, key))
        return cli_error("--ssh-key '%s': %s", ssh_key, strerror(errno));
    struct vm_paths p;
    if (paths_for_vm(name, &p) < 0 || strlen(p.dir) > 180)
        return cli_error("VM '%s' cannot be placed in VMWS_HOME (use a shorter VMWS_HOME)", name);
    if (access(p.dir, F_OK) == 0)
        return cli_error("VM '%s' already exists (see 'vmws list', or 'vmws delete %s' first)",
                         name, name);
    char cache[PATH_MAX - 64];
    int r = os_cache_dir(cache, sizeof(cache));
    if (r < 0)
        return cli_error("cannot make the cache folder %s: %s", cache, strerror(-r));
    /* The builder, from inside vmws to a private file. */
    char script[PATH_MAX];
    snprintf(script, sizeof(script), "%s/debian.sh", cache);
    r = fs_write_atomic(script, vmws_os_debian, (size_t)(vmws_os_debian_end - vmws_os_debian));
    if (r < 0)
        return cli_error("cannot write %s: %s", script, strerror(-r));
    printf("creating %s: Debian 12\n", name);
    fflush(stdout);
    char base[PATH_MAX - 64] = "";
    const char *base_args[] = {"base", cache, NULL};
    if (run_builder(script, base_args, base, sizeof(base)) < 0 || !base[0])
        return cli_error("cannot build the Debian base system (see above)");
    /* The VM's disk: an empty overlay on the shared base image (a linked clone). */
    if (base_image(base, cfg->disk.base, sizeof(cfg->disk.base)))
        return 1;
    r = disk_stamp(cfg->disk.base, cfg->disk.base_stamp, sizeof(cfg->disk.base_stamp));
    if (r < 0)
        return cli_error("%s: %s", cfg->disk.base, strerror(-r));
    /* This VM's own settings, handed over in its initramfs (see assets/os/debian.sh). */
    char password[13], salt[CRYPT_GENSALT_OUTPUT_SIZE], hash[CRYPT_OUTPUT_SIZE];
    struct crypt_data cd = {0};
    if (cli_random_password(password, 12) < 0 ||
        !crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)))
        return cli_error("cannot make a password: %s", strerror(errno));
    const char *h = crypt_r(password, salt, &cd);
    if (!h || h[0] == '*')
        return cli_error("cannot hash the password: %s", strerror(errno));
    snprintf(hash, sizeof(hash), "%s", h);
    snprintf(cfg->kernel, sizeof(cfg->kernel), "%.4000s/vmlinuz", p.dir);
    snprintf(cfg->initrd, sizeof(cfg->initrd), "%.4000s/initrd.img", p.dir);
    snprintf(cfg->append, sizeof(cfg->append), "%s", OS_APPEND);
    if (cli_create_vm(name, cfg, disk_bytes, false))
        return 1;
    /* The hash goes to the builder in its environment (readable by this user only), not on its
     * command line (which every user's ps shows). */
    const char *vm_args[] = {"vm", base, cfg->initrd, name, key[0] ? key : NULL, NULL};
    r = setenv("VMWS_OS_PWHASH", hash, 1) < 0 ? -errno : run_builder(script, vm_args, NULL, 0);
    unsetenv("VMWS_OS_PWHASH");
    char from[PATH_MAX + 16];
    snprintf(from, sizeof(from), "%s/vmlinuz", base);
    if (r == 0)
        r = copy_file(from, cfg->kernel);
    if (r < 0)
        return cli_error("VM '%s' was created but its kernel or settings were not: %s (delete "
                         "it with 'vmws delete %s' and try again)",
                         name, r == -EIO ? "see above" : strerror(-r), name);
    printf("Debian 12 on %s: log in as debian, password %s (shown only now; 'passwd' changes "
           "it)%s\n",
           name, password, key[0] ? ", or with your SSH key" : "");
    const struct vm_net_forward *f = ssh_forward(&cfg->net);
    if (f)
        printf("ssh: 'vmws ssh %s' (127.0.0.1:%u -> its port 22)\n", name, f->host_port);
    return 0;
}

/* `vmws ssh NAME [--user USER] [-- ARGS...]`: ssh to the VM through its forward to port 22, as
 * USER (default debian, the --os debian user); the host key is remembered under vmws-NAME, so a
 * VM made again on the same port is not mistaken for another host. */
int cmd_ssh(int argc, char **argv)
{
    const char *user = "debian";
    int i = 1;
    if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
        cli_print_help(argv[0]);
        return 0;
    }
    const char *name = i < argc && argv[i][0] != '-' ? argv[i++] : NULL;
    if (!name)
        return cli_usage_error(argv[0], "missing the VM's NAME");
    if (i + 1 < argc && !strcmp(argv[i], "--user"))
        user = argv[i + 1], i += 2;
    if (i < argc && !strcmp(argv[i], "--"))
        i++;
    else if (i < argc)
        return cli_usage_error(argv[0], "unexpected '%s' (ssh's own arguments go after --)",
                               argv[i]);
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    const struct vm_net_forward *f = ssh_forward(&cfg.net);
    if (!f)
        return cli_error("VM '%s' has no forward to its port 22 (add 'forward = tcp:PORT:22' to "
                         "[net] in its vm.conf, or create it with --forward tcp:PORT:22)",
                         name);
    char port[8], alias[300], dest[300];
    snprintf(port, sizeof(port), "%u", f->host_port);
    snprintf(alias, sizeof(alias), "HostKeyAlias=vmws-%s", name);
    snprintf(dest, sizeof(dest), "%s@127.0.0.1", user);
    char **args = calloc((size_t)(argc - i) + 10, sizeof(*args));
    if (!args)
        return cli_error("out of memory");
    int n = 0;
    const char *fixed[] = {"ssh", "-p", port, "-o", alias, "-o", "StrictHostKeyChecking=accept-new",
                           dest};
    for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
        args[n++] = (char *)fixed[k];
    while (i < argc)
        args[n++] = argv[i++];
    execvp("ssh", args);
    int e = errno;
    free(args);
    return cli_error("cannot run ssh: %s (is openssh-client installed?)", strerror(e));
}
