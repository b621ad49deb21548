/* `vmws box`: the KVM box from the command line (app/box/box.h). `run` is a whole box for one
 * command; `start`/`exec`/`stop` keep one box for many (the test suite runs every KVM test in
 * one); `exec --auto` runs natively where this machine's /dev/kvm works and in the box where it
 * doesn't, and says which; `check` tells which of the two this machine does and why.
 * The one idea: options stop at the first word that is not one, so the command keeps its own. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "app/box/box.h"
#include "app/cli.h"

enum {
    OPT_DIR = 1000,
    OPT_SHARE,
    OPT_CPUS,
    OPT_MEMORY,
    OPT_IDLE,
    OPT_TIMEOUT,
    OPT_STDIN,
    OPT_TTY,
    OPT_START,
    OPT_AUTO,
    OPT_EXCLUSIVE,
    OPT_JSON,
};

static const struct option box_opts[] = {
    {"dir", required_argument, NULL, OPT_DIR},
    {"share", required_argument, NULL, OPT_SHARE},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"idle", required_argument, NULL, OPT_IDLE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"stdin", no_argument, NULL, OPT_STDIN},
    {"tty", no_argument, NULL, OPT_TTY},
    {"start", no_argument, NULL, OPT_START},
    {"auto", no_argument, NULL, OPT_AUTO},
    {"exclusive", no_argument, NULL, OPT_EXCLUSIVE},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {0},
};

struct box_args {
    struct box_config cfg;
    char cwd[PATH_MAX];
    int timeout_s;
    enum box_stdin in;
    bool start, autodetect, exclusive, json;
    char **cmd; /* what follows the options */
};

/* The box's mode from $VMWS_BOX: auto (default), always (even where KVM works), never. */
static const char *box_mode(void)
{
    const char *m = getenv("VMWS_BOX");
    return m && *m ? m : "auto";
}

static int parse_int(const char *sub, const char *what, const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi)
        return cli_usage_error("box", "%s: bad %s '%s' (expected %d..%d)", sub, what, s, lo, hi);
    *out = (int)v;
    return 0;
}

static int add_share(struct box_config *c, const char *dir)
{
    if (c->nshares == BOX_MAX_SHARES)
        return cli_usage_error("box", "at most %d shares", BOX_MAX_SHARES);
    char *real = realpath(dir, NULL);
    if (!real)
        return cli_error("box: cannot share %s: %s", dir, strerror(errno));
    for (int i = 0; i < c->nshares; i++) {
        if (strcmp(c->shares[i], real) == 0) {
            free(real);
            return 0;
        }
    }
    snprintf(c->shares[c->nshares++], sizeof(c->shares[0]), "%s", real);
    free(real);
    return 0;
}

static int parse(int argc, char **argv, struct box_args *a)
{
    memset(a, 0, sizeof(*a));
    if (!getcwd(a->cwd, sizeof(a->cwd)))
        return cli_error("box: cannot get the working directory: %s", strerror(errno));
    a->timeout_s = BOX_DEFAULT_TIMEOUT_S;
    int rc = box_default_dir(a->cfg.dir, sizeof(a->cfg.dir));
    if (rc < 0)
        return cli_error("box: no runtime directory for the box: %s", strerror(-rc));
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:hC:", box_opts, NULL)) != -1) {
        int v;
        switch (c) {
        case 'h':
            cli_print_help("box");
            return -1;
        case 'C':
            if (!realpath(optarg, a->cwd))
                return cli_error("box: cannot use %s: %s", optarg, strerror(errno));
            break;
        case OPT_DIR:
            snprintf(a->cfg.dir, sizeof(a->cfg.dir), "%s", optarg);
            break;
        case OPT_SHARE:
            if ((rc = add_share(&a->cfg, optarg)))
                return rc;
            break;
        case OPT_CPUS:
            if ((rc = parse_int(argv[0], "--cpus", optarg, 1, 64, &v)))
                return rc;
            a->cfg.cpus = (unsigned)v;
            break;
        case OPT_MEMORY:
            if (parse_size(optarg, &a->cfg.memory) < 0 || a->cfg.memory < (256ull << 20))
                return cli_usage_error("box", "bad --memory '%s' (e.g. 4G; at least 256M)", optarg);
            break;
        case OPT_IDLE:
            if ((rc = parse_int(argv[0], "--idle", optarg, 0, 86400 * 365, &a->cfg.idle_timeout_s)))
                return rc;
            break;
        case OPT_TIMEOUT:
            if ((rc = parse_int(argv[0], "--timeout", optarg, 1, 86400 * 365, &a->timeout_s)))
                return rc;
            break;
        case OPT_STDIN:
            a->in = BOX_STDIN_PIPE;
            break;
        case OPT_TTY:
            a->in = isatty(STDIN_FILENO) ? BOX_STDIN_TTY : BOX_STDIN_PIPE;
            break;
        case OPT_START:
            a->start = true;
            break;
        case OPT_AUTO:
            a->autodetect = true;
            break;
        case OPT_EXCLUSIVE:
            a->exclusive = true;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case ':':
            return cli_usage_error("box", "%s: option '%s' needs a value", argv[0],
                                   argv[optind - 1]);
        default:
            return cli_usage_error("box", "%s: unknown option '%s'", argv[0], argv[optind - 1]);
        }
    }
    if (optind < argc && strcmp(argv[optind - 1], "--") != 0 &&
        strcmp(argv[optind], "--") == 0)
        optind++;
    a->cmd = argv + optind;
    return 0;
}

static int need_command(const char *sub, const struct box_args *a)
{
    return a->cmd[0] ? 0 : cli_usage_error("box", "%s: missing the command to run", sub);
}

static int no_command(const char *sub, const struct box_args *a)
{
    return a->cmd[0] ? cli_usage_error("box", "%s: unexpected argument '%s'", sub, a->cmd[0]) : 0;
}

static int box_run(struct box_args *a)
{
    if (need_command("run", a))
        return EXIT_USAGE;
    /* A private box in a fresh state directory, tied to this process. */
    char tmpl[PATH_MAX + 16];
    snprintf(tmpl, sizeof(tmpl), "%s.run-XXXXXX", a->cfg.dir);
    if (strlen(tmpl) >= sizeof(a->cfg.dir) || !mkdtemp(tmpl))
        return cli_error("box: cannot create %s: %s", tmpl, strerror(errno));
    snprintf(a->cfg.dir, sizeof(a->cfg.dir), "%s", tmpl);
    a->cfg.tied = true;
    if (!box_shares_cover(&a->cfg, a->cwd) && add_share(&a->cfg, a->cwd))
        return BOX_EXIT_FAILED;
    int rc = box_start(&a->cfg) == 0
                 ? box_exec(a->cfg.dir, a->cmd, a->cwd, a->in, a->timeout_s)
                 : BOX_EXIT_FAILED;
    box_stop(a->cfg.dir, 10);
    if (rc != BOX_EXIT_FAILED) { /* keep the files of a box that failed */
        DIR *d = opendir(a->cfg.dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] != '.')
                unlinkat(dirfd(d), e->d_name, 0);
        }
        if (d)
            closedir(d);
        rmdir(a->cfg.dir);
    } else {
        fprintf(stderr, "vmws box: its files are in %s\n", a->cfg.dir);
    }
    return rc;
}

static int box_exec_cmd(struct box_args *a)
{
    if (need_command("exec", a))
        return EXIT_USAGE;
    if (a->autodetect) {
        char why[256];
        const char *mode = box_mode();
        if (strcmp(mode, "always") != 0 && (strcmp(mode, "never") == 0 ||
                                            box_kvm_native(why, sizeof(why)))) {
            fprintf(stderr, "vmws box: KVM: native (/dev/kvm on this machine)\n");
            fflush(stderr);
            execvp(a->cmd[0], a->cmd);
            return cli_error("box: cannot run %s: %s", a->cmd[0], strerror(errno));
        }
        fprintf(stderr, "vmws box: KVM: in the KVM box (%s)\n",
                strcmp(mode, "always") == 0 ? "VMWS_BOX=always" : why);
        a->start = true;
    }
    if (a->start) {
        if (!box_shares_cover(&a->cfg, a->cwd) && add_share(&a->cfg, a->cwd))
            return BOX_EXIT_FAILED;
        if (box_start(&a->cfg) < 0)
            return BOX_EXIT_FAILED;
    }
    /* --exclusive: one such command at a time in this box (the lock goes with us). */
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof(lock), "%s/exclusive.lock", a->cfg.dir);
    int fd = a->exclusive ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (a->exclusive && (fd < 0 || flock(fd, LOCK_EX) < 0))
        return cli_error("box: cannot lock %s: %s", lock, strerror(errno));
    return box_exec(a->cfg.dir, a->cmd, a->cwd, a->in, a->timeout_s);
}

static int box_status_cmd(const struct box_args *a)
{
    struct box_status st;
    int rc = box_status_read(a->cfg.dir, &st);
    if (a->json) {
        json_t *j = st.running && rc == 0
                        ? json_pack("{sbsssisisisisIsI}", "running", true, "dir", a->cfg.dir,
                                    "supervisor", (int)st.supervisor, "qemu", (int)st.qemu, "port",
                                    st.port, "cpus", (int)st.cpus, "memory",
                                    (json_int_t)st.memory, "started", (json_int_t)st.started)
                        : json_pack("{sbssss}", "running", st.running, "dir", a->cfg.dir,
                                    "ended", st.ended);
        print_json(j);
        json_decref(j);
        return st.running ? 0 : 1;
    }
    if (!st.running) {
        printf("no box runs in %s%s%s\n", a->cfg.dir, st.ended[0] ? "; the last one ended: " : "",
               st.ended);
        return 1;
    }
    if (rc < 0) {
        printf("a box is starting in %s\n", a->cfg.dir);
        return 0;
    }
    char up[64], mem[32];
    format_duration(up, sizeof(up), (int64_t)(time(NULL) - st.started) * 1000);
    format_size(mem, sizeof(mem), st.memory);
    printf("box in %s: running for %s, %u CPUs, %s, agent on 127.0.0.1:%d, QEMU pid %d\n",
           a->cfg.dir, up, st.cpus, mem, st.port, (int)st.qemu);
    return 0;
}

static int box_check(void)
{
    char why[1024];
    bool native = box_kvm_native(why, sizeof(why));
    printf("native KVM: %s%s\n", native ? "yes" : "no: ", native ? "" : why);
    struct box_host h;
    if (box_host_find(&h, why, sizeof(why)) < 0) {
        printf("KVM box:    not possible here: %s\n", why);
    } else {
        printf("KVM box:    possible (%s, kernel %s, %s)\n", h.qemu, h.kver, h.busybox);
    }
    const char *mode = box_mode();
    printf("VMWS_BOX=%s: KVM work runs %s\n", mode,
           strcmp(mode, "never") == 0 ? "natively"
           : strcmp(mode, "always") == 0 || !native ? "in the KVM box"
                                                     : "natively");
    return 0;
}

int cmd_box(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("box", "missing a subcommand (run, start, exec, stop, status, check)");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
        return cli_print_help("box");
    if (strcmp(sub, "agent") == 0)
        return box_agent_main(argc - 1, argv + 1);
    struct box_args a;
    int rc = parse(argc - 1, argv + 1, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (strcmp(sub, "run") == 0)
        return box_run(&a);
    if (strcmp(sub, "exec") == 0)
        return box_exec_cmd(&a);
    if (strcmp(sub, "start") == 0) {
        if (no_command(sub, &a))
            return EXIT_USAGE;
        return box_start(&a.cfg) == 0 ? 0 : BOX_EXIT_FAILED;
    }
    if (strcmp(sub, "stop") == 0) {
        if (no_command(sub, &a))
            return EXIT_USAGE;
        rc = box_stop(a.cfg.dir, 20);
        if (rc == -ESRCH)
            return cli_error("box: no box runs in %s", a.cfg.dir);
        return rc < 0 ? cli_error("box: cannot stop the box in %s: %s", a.cfg.dir, strerror(-rc))
                      : 0;
    }
    if (strcmp(sub, "status") == 0)
        return no_command(sub, &a) ? EXIT_USAGE : box_status_cmd(&a);
    if (strcmp(sub, "check") == 0)
        return no_command(sub, &a) ? EXIT_USAGE : box_check();
    return cli_usage_error("box", "unknown subcommand '%s'", sub);
}
