/* `vmws create | delete | list | status`: VMs as directories under $VMWS_HOME.
 * The one idea: a VM is its directory (vm.conf, NAME.vmem, logs), like a VMware VM folder;
 * these commands only create, read and remove that directory, and ask the VM's VMM over its
 * control socket when they need live state. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/cli.h"
#include "core/snapshot/disksnap.h"
#include "core/storage/disk.h"

/* `vmws create --disk SIZE` makes this qcow2 image in the VM's directory. */
#define CLI_DISK_IMAGE "disk.qcow2"

#define VM_MEMORY_MIN (16ULL << 20)
#define VM_MEMORY_MAX (1ULL << 40)

/* Resolves a user-given file to an absolute path and checks it is a readable file. */
static int check_input_file(const char *what, const char *arg, char *out, size_t len)
{
    char real[PATH_MAX];
    if (!realpath(arg, real))
        return cli_error("%s '%s': %s (give the path of a readable file)", what, arg,
                         strerror(errno));
    struct stat st;
    if (stat(real, &st) < 0 || !S_ISREG(st.st_mode))
        return cli_error("%s '%s' is not a regular file", what, arg);
    if (access(real, R_OK) < 0)
        return cli_error("%s '%s': %s", what, arg, strerror(errno));
    if (strlen(real) >= len || strlen(real) > 180)
        return cli_error("%s '%s': path too long for vm.conf (move the file to a shorter "
                         "path)",
                         what, arg);
    strcpy(out, real);
    return 0;
}

int cli_create_vm(const char *name, struct vm_config *cfg, uint64_t disk_bytes, bool quiet)
{
    if (disk_bytes) {
        snprintf(cfg->disk.path, sizeof(cfg->disk.path), "%s", CLI_DISK_IMAGE);
        snprintf(cfg->disk.format, sizeof(cfg->disk.format), "qcow2");
    }
    char home[PATH_MAX];
    int rc = paths_home(home, sizeof(home));
    if (rc < 0)
        return cli_error("cannot create the VM directory root %s: %s (set VMWS_HOME to a "
                         "writable directory)",
                         home, strerror(-rc));
    struct vm_paths p;
    rc = paths_for_vm(name, &p);
    if (rc < 0)
        return cli_error("cannot place VM '%s': %s (try a shorter VMWS_HOME or "
                         "VMWS_RUNTIME_DIR)",
                         name, strerror(-rc));
    if (mkdir(p.dir, 0700) < 0) {
        if (errno == EEXIST)
            return cli_error("VM '%s' already exists (in %s; see 'vmws list', or "
                             "'vmws delete %s' first)",
                             name, p.dir, name);
        return cli_error("cannot create %s: %s", p.dir, strerror(errno));
    }
    rc = vmconfig_save(p.config, cfg);
    if (rc < 0) {
        rmdir(p.dir);
        return cli_error("cannot write %s: %s", p.config, strerror(-rc));
    }
    /* VNC is never open by default: a random password, shown here and by `vmws status`. */
    char pw[9];
    rc = cli_vnc_password_generate(p.dir, pw);
    if (rc < 0)
        return cli_error("VM '%s' was created but its VNC password was not: %s (delete the VM "
                         "with 'vmws delete %s' and try again)",
                         name, strerror(-rc), name);
    if (!quiet) {
        char mem[32];
        format_size(mem, sizeof(mem), cfg->memory_bytes);
        printf("created %s (%s, %u vCPU%s, %s, %s memory) in %s\n", name, mem, cfg->cpus,
               cfg->cpus == 1 ? "" : "s", cfg->kernel[0] ? cfg->kernel : "built-in guest",
               mem_backend_name(cfg->backend), p.dir);
        printf("VNC password: %s (in vnc.passwd; 'vmws vnc-password %s' changes it, --clear "
               "removes it)\n",
               pw, name);
    }
    if (!disk_bytes)
        return 0;
    char image[PATH_MAX + 16];
    snprintf(image, sizeof(image), "%s/%s", p.dir, CLI_DISK_IMAGE);
    const char *base = cfg->disk.base[0] ? cfg->disk.base : NULL;
    rc = disk_create_qcow2(image, disk_bytes, base, base ? "qcow2" : NULL);
    if (rc < 0)
        return cli_error("VM '%s' was created but its disk image %s was not: %s (delete the VM "
                         "with 'vmws delete %s' and try again)",
                         name, image, strerror(-rc), name);
    if (!quiet) {
        char size[32];
        format_size(size, sizeof(size), disk_bytes);
        if (base)
            printf("disk %s: %s, a qcow2 overlay on %s (a linked clone: it holds only what the "
                   "guest writes; the base is shared and never written)\n",
                   CLI_DISK_IMAGE, size, base);
        else
            printf("disk %s: %s, qcow2 (sparse: it takes what the guest writes)\n", CLI_DISK_IMAGE,
                   size);
    }
    return 0;
}

/* `vmws create --disk-from IMAGE`: the new VM's qcow2 disk starts as a copy of IMAGE (raw or
 * qcow2, e.g. a root file system made with `mke2fs -d`), at least --disk large. */
int cli_create_from_image(const char *name, struct vm_config *cfg, uint64_t disk_bytes,
                          const char *from, const char *what)
{
    char err[256];
    struct disk *src = disk_open(from, true, err, sizeof(err));
    if (!src)
        return cli_error("--disk-from '%s': %s", from, err);
    uint64_t size = (disk_size(src) + 511) / 512 * 512;
    if (disk_bytes < size)
        disk_bytes = size;
    int rc = cli_create_vm(name, cfg, disk_bytes, false);
    struct vm_paths p;
    char image[PATH_MAX + 16];
    struct disk *dst = NULL;
    if (rc == 0 && paths_for_vm(name, &p) == 0) {
        snprintf(image, sizeof(image), "%s/%s", p.dir, CLI_DISK_IMAGE);
        dst = disk_open(image, false, err, sizeof(err));
        rc = dst ? disk_copy(src, dst) : -EIO;
        if (dst && disk_close(dst) < 0 && rc == 0)
            rc = -EIO;
        if (rc < 0)
            rc = cli_error("VM '%s' was created but copying %s into its disk failed: %s (delete "
                           "the VM with 'vmws delete %s' and try again)",
                           name, from, dst ? strerror(-rc) : err, name);
        else
            printf("disk %s: a copy of %s\n", CLI_DISK_IMAGE, what ? what : from);
    }
    disk_close(src);
    return rc;
}

int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"memory", required_argument, NULL, 'm'},
        {"cpus", required_argument, NULL, 'c'},
        {"memory-backend", required_argument, NULL, 'b'},
        {"kernel", required_argument, NULL, 'k'},
        {"initrd", required_argument, NULL, 'i'},
        {"append", required_argument, NULL, 'a'},
        {"disk", required_argument, NULL, 'd'},
        {"disk-from", required_argument, NULL, 'D'},
        {"os", required_argument, NULL, 'o'},
        {"ssh-key", required_argument, NULL, 's'},
        {"net", required_argument, NULL, 'n'},
        {"forward", required_argument, NULL, 'f'},
        {"reservation", required_argument, NULL, 'R'},
        {"limit", required_argument, NULL, 'L'},
        {"shares", required_argument, NULL, 'S'},
        {"dynamic-memory", no_argument, NULL, 'Y'},
        {"memory-min", required_argument, NULL, '1'},
        {"memory-max", required_argument, NULL, '2'},
        {"memory-buffer", required_argument, NULL, '3'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *memory = NULL, *cpus = NULL, *backend = NULL, *kernel = NULL, *initrd = NULL,
               *append = NULL, *disk = NULL, *disk_from = NULL, *os = NULL, *ssh_key = NULL,
               *net = NULL;
    const char *forwards[VM_NET_FORWARDS_MAX + 1];
    unsigned nforwards = 0;
    /* [memory] keys as vm.conf spells them, checked by the same parser. */
    const char *mem_keys[8], *mem_values[8];
    unsigned nmem = 0;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        switch (c) {
        case 'h':
            return cli_print_help(argv[0]);
        case 'm':
            memory = optarg;
            break;
        case 'c':
            cpus = optarg;
            break;
        case 'b':
            backend = optarg;
            break;
        case 'k':
            kernel = optarg;
            break;
        case 'i':
            initrd = optarg;
            break;
        case 'a':
            append = optarg;
            break;
        case 'd':
            disk = optarg;
            break;
        case 'D':
            disk_from = optarg;
            break;
        case 'o':
            os = optarg;
            break;
        case 's':
            ssh_key = optarg;
            break;
        case 'n':
            net = optarg;
            break;
        case 'f':
            if (nforwards == VM_NET_FORWARDS_MAX)
                return cli_usage_error(argv[0], "too many --forward (at most %d)",
                                       VM_NET_FORWARDS_MAX);
            forwards[nforwards++] = optarg;
            break;
        case 'R':
        case 'L':
        case 'S':
        case 'Y':
        case '1':
        case '2':
        case '3':
            mem_keys[nmem] = c == 'R'   ? "reservation"
                             : c == 'L' ? "limit"
                             : c == 'S' ? "shares"
                             : c == 'Y' ? "dynamic"
                             : c == '1' ? "min"
                             : c == '2' ? "max"
                                        : "buffer";
            mem_values[nmem++] = c == 'Y' ? "yes" : optarg;
            if (nmem == 8)
                return cli_usage_error(argv[0], "too many memory options");
            break;
        default:
            return EXIT_USAGE;
        }
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    if (rc)
        return rc;
    const char *name = argv[optind];
    if (!vm_name_valid(name))
        return cli_usage_error(argv[0],
                               "'%s' is not a valid VM name (use 1-63 letters, digits, '.', "
                               "'_' or '-', not starting with '.' or '-')",
                               name);
    struct vm_config cfg;
    vmconfig_defaults(&cfg, name);
    if (strcmp(name, CLI_DEFAULT_VM) == 0)
        cfg.cpus = 2;
    if (memory) {
        uint64_t v;
        if (parse_size(memory, &v) < 0)
            return cli_usage_error(argv[0], "bad --memory '%s' (expected a size like 512M or 2G)",
                                   memory);
        if (v < VM_MEMORY_MIN || v > VM_MEMORY_MAX || v % (2ULL << 20))
            return cli_usage_error(
                argv[0], "bad --memory '%s' (expected 16M to 1T, a multiple of 2M)", memory);
        cfg.memory_bytes = v;
    }
    for (unsigned i = 0; i < nmem; i++) {
        char err[256];
        if (!vmconfig_memory_key(&cfg.memory, mem_keys[i], mem_values[i], err, sizeof(err)))
            return cli_usage_error(argv[0], "%s", err);
    }
    char merr[256];
    if (vmconfig_memory_check(&cfg.memory, cfg.memory_bytes, merr, sizeof(merr)) < 0)
        return cli_usage_error(argv[0], "%s", merr);
    if (cpus) {
        char *end;
        long v = strtol(cpus, &end, 10);
        if (*end || end == cpus || v < 1 || v > VM_CPUS_MAX)
            return cli_usage_error(argv[0], "bad --cpus '%s' (expected 1 to %d)", cpus,
                                   VM_CPUS_MAX);
        cfg.cpus = (unsigned)v;
    }
    if (backend && mem_backend_parse(backend, &cfg.backend) < 0)
        return cli_usage_error(argv[0],
                               "bad --memory-backend '%s' (expected file, shm, anon or "
                               "hugetlbfs)",
                               backend);
    if ((initrd || append) && !kernel)
        return cli_usage_error(argv[0], "%s needs --kernel (the built-in guest takes neither)",
                               initrd ? "--initrd" : "--append");
    if (kernel && check_input_file("kernel", kernel, cfg.kernel, sizeof(cfg.kernel)))
        return 1;
    if (initrd && check_input_file("initrd", initrd, cfg.initrd, sizeof(cfg.initrd)))
        return 1;
    if (append) {
        if (strlen(append) >= sizeof(cfg.append) || strchr(append, '\n'))
            return cli_usage_error(argv[0], "bad --append (at most %zu characters, one line)",
                                   sizeof(cfg.append) - 1);
        strcpy(cfg.append, append);
    }
    if (net && strcmp(net, "user") && strcmp(net, "none"))
        return cli_usage_error(argv[0], "bad --net '%s' (expected user or none)", net);
    cfg.net.enabled = !net || strcmp(net, "none");
    if (!cfg.net.enabled && nforwards)
        return cli_usage_error(argv[0], "--forward needs a network (not --net %s)", net);
    for (unsigned i = 0; i < nforwards; i++) {
        char err[256];
        struct vm_net_forward f;
        if (vmconfig_net_forward_parse(forwards[i], &f, err, sizeof(err)) < 0 ||
            vmconfig_net_forward_add(&cfg.net, &f, err, sizeof(err)) < 0)
            return cli_usage_error(argv[0], "--forward: %s", err);
    }
    uint64_t disk_bytes = 0;
    if (disk) {
        if (parse_size(disk, &disk_bytes) < 0 || disk_bytes < (1ULL << 20) ||
            disk_bytes > (1ULL << 41) || disk_bytes % 512)
            return cli_usage_error(argv[0],
                                   "bad --disk '%s' (expected a size from 1M to 2T, a multiple "
                                   "of 512 bytes, like 64M or 8G)",
                                   disk);
    }
    if (ssh_key && !os)
        return cli_usage_error(argv[0], "--ssh-key goes with --os");
    if (os && disk_from)
        return cli_usage_error(argv[0], "--os and --disk-from both make the disk: pick one");
    if (os)
        return cli_create_os(name, &cfg, disk_bytes, os, ssh_key);
    if (disk_from)
        return cli_create_from_image(name, &cfg, disk_bytes, disk_from, NULL);
    return cli_create_vm(name, &cfg, disk_bytes, false);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (rc < 0) {
        cli_error("cannot remove %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_delete(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool force = false;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        switch (c) {
        case 'h':
            return cli_print_help(argv[0]);
        case 'f':
            force = true;
            break;
        default:
            return EXIT_USAGE;
        }
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    if (rc)
        return rc;
    const char *name = argv[optind];
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    struct cli_vm_state st;
    cli_vm_query(&p, NULL, &st);
    if (st.running || st.pid > 0) {
        if (!force)
            return cli_error("VM '%s' is running (stop it with 'vmws stop %s', or delete it "
                             "anyway with 'vmws delete --force %s')",
                             name, name, name);
        rc = cli_kill_vm(name, &p);
        if (rc < 0)
            return cli_error("cannot kill VM '%s' (pid %ld): %s; nothing was deleted", name,
                             (long)st.pid, strerror(-rc));
    }
    if (nftw(p.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0)
        return cli_error("VM '%s' was only partly deleted (see above; remove %s by hand)", name,
                         p.dir);
    unlink(p.ctl_sock);
    unlink(p.console_sock);
    printf("deleted %s\n", name);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cmd_list(int argc, char **argv)
{
    bool json = false;
    int rc = cli_parse_common(argc, argv, 0, "", &json);
    if (rc)
        return rc < 0 ? 0 : rc;
    char home[PATH_MAX];
    rc = paths_home(home, sizeof(home));
    if (rc < 0)
        return cli_error("cannot open the VM directory root %s: %s", home, strerror(-rc));
    DIR *d = opendir(home);
    if (!d)
        return cli_error("cannot list %s: %s", home, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!vm_name_valid(e->d_name))
            continue;
        char conf[PATH_MAX + 300];
        struct stat st;
        snprintf(conf, sizeof(conf), "%s/%s/vm.conf", home, e->d_name);
        if (stat(conf, &st) < 0)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn)
            break;
        names = nn;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n > 1) /* qsort(NULL, 0) is undefined */
        qsort(names, n, sizeof(*names), name_cmp);

    json_t *arr = json_array();
    if (!json && n)
        printf("%-20s %-10s %4s %7s  %s\n", "NAME", "STATE", "CPUS", "MEMORY", "PID");
    for (size_t i = 0; i < n; i++) {
        struct vm_paths p;
        struct vm_config cfg;
        char err[1024] = "";
        struct cli_vm_state st;
        if (paths_for_vm(names[i], &p) < 0)
            continue;
        vmconfig_defaults(&cfg, names[i]);
        bool broken = vmconfig_load(p.config, &cfg, err, sizeof(err)) < 0;
        cli_vm_query(&p, broken ? NULL : &cfg, &st);
        if (broken && !st.running)
            snprintf(st.state, sizeof(st.state), "bad-config");
        if (json) {
            json_t *o = json_pack("{s:s,s:s,s:i,s:I}", "name", names[i], "state", st.state, "cpus",
                                  (int)st.cpus, "memory", (json_int_t)st.memory);
            json_object_set_new(o, "pid", st.pid > 0 ? json_integer(st.pid) : json_null());
            if (broken)
                json_object_set_new(o, "error", json_string(err));
            json_array_append_new(arr, o);
        } else {
            char mem[32] = "-", cpus[16] = "-", pid[24] = "-";
            if (!broken || st.running) {
                format_size(mem, sizeof(mem), st.memory);
                snprintf(cpus, sizeof(cpus), "%u", st.cpus);
            }
            if (st.pid > 0)
                snprintf(pid, sizeof(pid), "%ld", (long)st.pid);
            printf("%-20s %-10s %4s %7s  %s\n", names[i], st.state, cpus, mem, pid);
            if (broken)
                fprintf(stderr, "vmws: %s\n", err);
        }
        free(names[i]);
    }
    free(names);
    if (json)
        print_json(arr);
    else if (n == 0)
        printf("no VMs yet in %s (create one with 'vmws create NAME', or just run 'vmws')\n", home);
    json_decref(arr);
    return 0;
}

/* The VM's disk: as its VMM reports it (query-disk) if it runs, else the image it would open
 * (the snapshot tree's overlay once a snapshot exists, see core/snapshot/disksnap.h) and its size.
 */
static json_t *disk_query(const struct vm_paths *p, const struct vm_config *cfg, bool running)
{
    char err[512], path[PATH_MAX];
    json_t *r = running ? cli_vm_ask(p, "query-disk") : NULL;
    if (r)
        return r;
    struct snap_tree t;
    if (snap_tree_load(&t, p->dir, cfg->disk.path, err, sizeof(err)) <
        0) /* status says what the tree lacks */
        return json_pack("{s:s, s:s}", "path", cfg->disk.path, "error", err);
    disksnap_path(&t, disksnap_active(&t, cfg->disk.path), path, sizeof(path));
    snap_tree_free(&t);
    struct stat st;
    bool there = stat(path, &st) == 0;
    return json_pack("{s:s, s:o}", "path", path, "allocated_bytes",
                     there ? json_integer((json_int_t)st.st_blocks * 512) : json_null());
}

/* What the disk costs, honestly: the active image's virtual size, the VM's own images (its disk
 * and its snapshots' overlays, as allocated) and, for a linked clone, the shared base under them
 * with its allocated size and whether it is still the one the VM was made on. Into O. */
static void disk_sizes(const struct vm_paths *p, const struct vm_config *cfg, json_t *o)
{
    char path[2 * PATH_MAX], err[512];
    uint64_t virt = 0, own = 0;
    struct stat st;
    const char *active = json_string_value(json_object_get(o, "path"));
    if (active && disk_virtual_size(active, &virt) == 0)
        json_object_set_new(o, "virtual_bytes", json_integer((json_int_t)virt));
    if (cfg->disk.path[0] == '/')
        snprintf(path, sizeof(path), "%s", cfg->disk.path);
    else
        snprintf(path, sizeof(path), "%s/%s", p->dir, cfg->disk.path);
    if (stat(path, &st) == 0) /* gone once a snapshot's delete streamed it away */
        own += (uint64_t)st.st_blocks * 512;
    snprintf(path, sizeof(path), "%s/snapshots", p->dir);
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        char img[3 * PATH_MAX];
        snprintf(img, sizeof(img), "%s/%s", path, e->d_name);
        if (n > 6 && strcmp(e->d_name + n - 6, ".qcow2") == 0 && stat(img, &st) == 0)
            own += (uint64_t)st.st_blocks * 512;
    }
    if (d)
        closedir(d);
    json_object_set_new(o, "own_bytes", json_integer((json_int_t)own));
    if (!cfg->disk.base[0])
        return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", cfg->disk.base);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    int r = disk_base_check(cfg->disk.base, cfg->disk.base_stamp, err, sizeof(err));
    json_t *b = json_pack("{s:s, s:s, s:s}", "path", cfg->disk.base, "name", name, "state",
                          r == 0         ? "ok"
                          : r == -ESTALE ? "changed"
                                         : "missing");
    if (r == 0 && stat(cfg->disk.base, &st) == 0)
        json_object_set_new(b, "allocated_bytes", json_integer((json_int_t)st.st_blocks * 512));
    if (r < 0)
        json_object_set_new(b, "error", json_string(err));
    json_object_set_new(o, "base", b);
}

static json_t *disk_status(const struct vm_paths *p, const struct vm_config *cfg, bool running)
{
    json_t *d = disk_query(p, cfg, running);
    if (d)
        disk_sizes(p, cfg, d);
    return d;
}

/* The VM's network: as its VMM reports it (query-net, with the byte counters) if it runs, else
 * what vm.conf says. NULL if it has none. */
static json_t *net_query(const struct vm_paths *p, const struct vm_config *cfg, bool running)
{
    if (!cfg->net.enabled)
        return NULL;
    json_t *r = running ? cli_vm_ask(p, "query-net") : NULL;
    if (r)
        return r;
    char mac[24], fw[24];
    vmconfig_net_mac_format(cfg->net.mac, mac, sizeof(mac));
    json_t *forwards = json_array();
    for (unsigned i = 0; i < cfg->net.nforwards; i++) {
        vmconfig_net_forward_format(&cfg->net.forwards[i], fw, sizeof(fw));
        json_array_append_new(forwards, json_string(fw));
    }
    return json_pack("{s:s, s:o}", "mac", mac, "forwards", forwards);
}

static void net_print(json_t *n)
{
    if (!n) {
        printf("net:             none\n");
        return;
    }
    printf("net:             virtio-net, MAC %s, user-mode NAT (guest 10.0.2.15, host 10.0.2.2)\n",
           json_string_value(json_object_get(n, "mac")));
    json_t *fw;
    size_t i;
    json_array_foreach(json_object_get(n, "forwards"), i, fw)
    {
        unsigned host = 0, guest = 0;
        char proto[4] = "";
        sscanf(json_string_value(fw), "%3[a-z]:%u:%u", proto, &host, &guest);
        printf("forward:         %s 127.0.0.1:%u -> guest port %u\n", proto, host, guest);
    }
    if (json_is_integer(json_object_get(n, "rx_bytes")))
        printf("net traffic:     rx %lld bytes, tx %lld bytes, %lld dropped\n",
               (long long)json_integer_value(json_object_get(n, "rx_bytes")),
               (long long)json_integer_value(json_object_get(n, "tx_bytes")),
               (long long)json_integer_value(json_object_get(n, "rx_dropped")));
    if (json_is_true(json_object_get(n, "needs_reset")))
        printf("net broken:      %s\n", json_string_value(json_object_get(n, "broken")));
}

/* "4.0G virtual, 12.3M own + base debian-12-v2 (771M, shared, read-only)" */
static void disk_sizes_print(json_t *d)
{
    json_t *v = json_object_get(d, "virtual_bytes"), *b = json_object_get(d, "base");
    if (!json_is_integer(v))
        return;
    char virt[32], own[32], base[32];
    format_size(virt, sizeof(virt), (uint64_t)json_integer_value(v));
    format_size(own, sizeof(own), (uint64_t)json_integer_value(json_object_get(d, "own_bytes")));
    printf("disk size:       %s virtual, %s own", virt, own);
    if (b && json_is_integer(json_object_get(b, "allocated_bytes"))) {
        format_size(base, sizeof(base),
                    (uint64_t)json_integer_value(json_object_get(b, "allocated_bytes")));
        printf(" + base %s (%s, shared, read-only)", json_string_value(json_object_get(b, "name")),
               base);
    } else if (b) {
        printf(" + base %s: %s", json_string_value(json_object_get(b, "name")),
               json_string_value(json_object_get(b, "error")));
    }
    printf("\n");
}

static void disk_print(json_t *d)
{
    disk_sizes_print(d);
    if (json_is_string(json_object_get(d, "error"))) {
        printf("disk:            %s (%s)\n", json_string_value(json_object_get(d, "path")),
               json_string_value(json_object_get(d, "error")));
        return;
    }
    if (!json_is_integer(json_object_get(d, "status"))) {
        json_t *a = json_object_get(d, "allocated_bytes");
        printf("disk:            %s, %s%.1f MiB allocated\n",
               json_string_value(json_object_get(d, "path")), json_is_integer(a) ? "" : "MISSING, ",
               (double)json_integer_value(a) / (1 << 20));
        return;
    }
    int status = (int)json_integer_value(json_object_get(d, "status"));
    printf("disk:            %s, %llu MiB, virtio-blk status 0x%02x%s\n",
           json_string_value(json_object_get(d, "path")),
           (unsigned long long)json_integer_value(json_object_get(d, "capacity")) >> 20, status,
           json_is_true(json_object_get(d, "needs_reset")) ? " NEEDS_RESET" : "");
    if (json_is_string(json_object_get(d, "broken")))
        printf("disk broken:     %s\n", json_string_value(json_object_get(d, "broken")));
}

int cmd_status(int argc, char **argv)
{
    bool json = false;
    int rc = cli_parse_common(argc, argv, 1, "the VM's NAME", &json);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *name = argv[optind];
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    struct cli_vm_state st;
    cli_vm_query(&p, &cfg, &st);
    const char *kernel = cfg.kernel[0] ? cfg.kernel : "builtin";
    if (json) {
        json_t *o =
            json_pack("{s:s,s:s,s:i,s:I,s:s,s:s,s:s,s:s,s:s}", "name", name, "state", st.state,
                      "cpus", (int)st.cpus, "memory", (json_int_t)st.memory, "backend",
                      mem_backend_name(cfg.backend), "kernel", kernel, "directory", p.dir,
                      "control_socket", p.ctl_sock, "console_socket", p.console_sock);
        json_object_set_new(o, "pid", st.pid > 0 ? json_integer(st.pid) : json_null());
        if (st.detail[0])
            json_object_set_new(o, "detail", json_string(st.detail));
        json_object_set_new(o, "uptime_ms",
                            st.uptime_ms >= 0 ? json_integer(st.uptime_ms) : json_null());
        json_t *disp = st.running ? cli_display_query(&p) : NULL;
        json_object_set_new(o, "display", disp ? disp : json_null());
        if (cfg.disk.path[0])
            json_object_set_new(o, "disk", disk_status(&p, &cfg, st.running));
        json_t *net = net_query(&p, &cfg, st.running);
        json_object_set_new(o, "net", net ? net : json_null());
        json_t *qs = st.running ? cli_vm_ask(&p, "query-status") : NULL;
        json_t *agent = json_object_get(qs, "agent");
        json_object_set(o, "agent", agent ? agent : json_null());
        json_decref(qs);
        json_object_set_new(o, "memory_management", cli_mem_management(&p, &cfg));
        print_json(o);
        json_decref(o);
        return 0;
    }
    char mem[32], up[48];
    format_size(mem, sizeof(mem), st.memory);
    format_duration(up, sizeof(up), st.uptime_ms);
    printf("name:            %s\n", name);
    printf("state:           %s\n", st.state);
    if (st.detail[0])
        printf("detail:          %s\n", st.detail);
    if (st.pid > 0)
        printf("pid:             %ld\n", (long)st.pid);
    else
        printf("pid:             -\n");
    printf("cpus:            %u\n", st.cpus);
    printf("memory:          %s (%llu bytes)\n", mem, (unsigned long long)st.memory);
    printf("backend:         %s\n", mem_backend_name(cfg.backend));
    printf("kernel:          %s\n", cfg.kernel[0] ? cfg.kernel : "built-in guest");
    printf("directory:       %s\n", p.dir);
    printf("console socket:  %s\n", p.console_sock);
    printf("uptime:          %s\n", up);
    if (st.running)
        cli_display_print(&p, "");
    if (cfg.disk.path[0]) {
        json_t *disk = disk_status(&p, &cfg, st.running);
        disk_print(disk);
        json_decref(disk);
    }
    json_t *net = net_query(&p, &cfg, st.running);
    net_print(net);
    json_decref(net);
    if (st.running) {
        json_t *qs = cli_vm_ask(&p, "query-status");
        json_t *a = json_object_get(qs, "agent");
        const char *os = json_string_value(json_object_get(a, "os"));
        printf("guest agent:     %s\n", !a ? "unknown"
                                        : !json_is_true(json_object_get(a, "connected"))
                                            ? "none"
                                            : "connected");
        printf("guest OS:        %s\n", os ? os : "unknown (no guest agent has told it)");
        json_decref(qs);
    }
    json_t *mg = cli_mem_management(&p, &cfg);
    cli_mem_management_print(mg);
    json_decref(mg);
    return 0;
}
