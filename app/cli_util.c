/* Helpers every vmws subcommand uses: error messages, option parsing, finding a VM, asking
 * its VMM for its state, the pidfile, and number formatting.
 * The one idea: the pidfile is flock()ed by the VMM for as long as it lives, so "is the lock
 * held" answers "is there a VMM" without trusting a possibly stale pid, and the pid is only
 * signalled after its command line confirms it is `vmws run NAME`. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/cli.h"

int cli_error(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("vmws: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "vmws %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'vmws %s --help')\n", cmd);
    return EXIT_USAGE;
}

int cli_getopt(int argc, char **argv, const struct option *longopts)
{
    opterr = 0;
    int idx = -1;
    int c = getopt_long(argc, argv, ":h", longopts, &idx);
    if (c == '?') {
        const char *bad = argv[optind - 1];
        if (optopt && optopt != '?')
            cli_usage_error(argv[0], "unknown option '-%c'", optopt);
        else
            cli_usage_error(argv[0], "unknown option '%s'", bad);
    } else if (c == ':') {
        cli_usage_error(argv[0], "option '%s' needs a value", argv[optind - 1]);
        c = '?';
    }
    return c;
}

int cli_positional(int argc, char **argv, int n, const char *what)
{
    int have = argc - optind;
    if (have < n)
        return cli_usage_error(argv[0], "missing %s", what);
    if (have > n)
        return cli_usage_error(argv[0], "unexpected argument '%s'", argv[optind + n]);
    return 0;
}

int cli_parse_common(int argc, char **argv, int npos, const char *what, bool *json)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"yes", no_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h') {
            cli_print_help(argv[0]);
            return -1;
        }
        if (c == 'j' && json)
            *json = true;
        else if (c != 'y')
            return c == 'j' ? cli_usage_error(argv[0], "--json is not an option of this command")
                            : EXIT_USAGE;
    }
    return cli_positional(argc, argv, npos, what);
}

json_t *cli_vm_ask(const struct vm_paths *p, const char *command)
{
    char err[512];
    struct ctl_client *c = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    json_t *r = c ? ctl_client_execute(c, command, NULL, 3000, err, sizeof(err)) : NULL;
    ctl_client_close(c);
    return r;
}

int cli_vm_open(const char *name, struct vm_paths *p, struct vm_config *cfg)
{
    if (!vm_name_valid(name))
        return cli_error("'%s' is not a valid VM name (use 1-63 letters, digits, '.', '_' or "
                         "'-', not starting with '.' or '-')",
                         name);
    int rc = paths_for_vm(name, p);
    if (rc < 0)
        return cli_error("cannot compute the paths of VM '%s': %s (check VMWS_HOME and "
                         "VMWS_RUNTIME_DIR)",
                         name, strerror(-rc));
    struct stat st;
    if (stat(p->dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_error("VM '%s' does not exist (see 'vmws list')", name);
    if (cfg) {
        char err[1024];
        vmconfig_defaults(cfg, name);
        if (vmconfig_load(p->config, cfg, err, sizeof(err)) < 0)
            return cli_error("%s\nvmws: fix the file (it is plain text) and try again", err);
    }
    return 0;
}

/* ---- VMM state ---------------------------------------------------------------------------- */

void cli_vm_query(const struct vm_paths *p, const struct vm_config *cfg, struct cli_vm_state *st)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->state, sizeof(st->state), "off");
    st->uptime_ms = -1;
    if (cfg) {
        st->cpus = cfg->cpus;
        st->memory = cfg->memory_bytes;
    }
    st->pid = pidfile_live_pid(p->pidfile);

    char err[512];
    struct ctl_client *c = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    if (!c) {
        if (st->pid > 0) {
            snprintf(st->state, sizeof(st->state), "starting"); /* VMM up, socket not yet */
        } else if (access(p->suspend_state, F_OK) == 0) {
            st->suspended = true;
            snprintf(st->state, sizeof(st->state), "suspended");
        }
        return;
    }
    st->running = true;
    snprintf(st->state, sizeof(st->state), "unknown");
    json_t *r = ctl_client_execute(c, "query-status", NULL, 3000, err, sizeof(err));
    ctl_client_close(c);
    if (!r)
        return;
    const char *s = json_string_value(json_object_get(r, "state"));
    if (s)
        snprintf(st->state, sizeof(st->state), "%s", s);
    json_t *v;
    if (json_is_integer(v = json_object_get(r, "pid")))
        st->pid = (pid_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(r, "cpus")))
        st->cpus = (unsigned)json_integer_value(v);
    if (json_is_integer(v = json_object_get(r, "memory")))
        st->memory = (uint64_t)json_integer_value(v);
    const char *detail = json_string_value(json_object_get(r, "detail"));
    if (detail)
        snprintf(st->detail, sizeof(st->detail), "%s", detail);
    if (json_is_integer(v = json_object_get(r, "uptime_ms")))
        st->uptime_ms = json_integer_value(v);
    json_decref(r);
}

struct ctl_client *cli_vm_connect(const char *name, const struct vm_paths *p)
{
    char err[512];
    struct ctl_client *c = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    if (!c) {
        if (pidfile_live_pid(p->pidfile) > 0)
            cli_error("VM '%s' is starting or not answering on %s (%s; see %s)", name, p->ctl_sock,
                      err, p->vmm_log);
        else
            cli_error("VM '%s' is not running (start it with 'vmws start %s')", name, name);
    }
    return c;
}

/* ---- pidfile and processes ---------------------------------------------------------------- */

static bool pid_gone(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." - comm may contain spaces */
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

bool pid_wait_gone(pid_t pid, int timeout_ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (pid_gone(pid))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= timeout_ms)
            return false;
        usleep(20000);
    }
}

bool pid_is_vmm(pid_t pid, const char *name)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    /* argv[1] == "run" and argv[2] == NAME */
    const char *a1 = buf + strlen(buf) + 1;
    if (a1 >= buf + n || strcmp(a1, "run") != 0)
        return false;
    const char *a2 = a1 + strlen(a1) + 1;
    return a2 < buf + n && strcmp(a2, name) == 0;
}

int cli_kill_vm(const char *name, const struct vm_paths *p)
{
    pid_t pid = pidfile_live_pid(p->pidfile);
    if (pid <= 0) { /* no pidfile: perhaps the VMM still answers and says who it is */
        struct cli_vm_state st;
        cli_vm_query(p, NULL, &st);
        if (st.running)
            pid = st.pid;
    }
    int rc = 1;
    if (pid > 0) {
        if (!pid_is_vmm(pid, name))
            return -ESRCH; /* the lock holder is not `vmws run NAME`: do not shoot it */
        if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
            return -errno;
        if (!pid_wait_gone(pid, 5000))
            return -ETIMEDOUT;
        rc = 0;
    }
    /* Whatever the VMM left behind is stale now. A socket still answering belongs to a VMM
     * we could not identify: leave it alone. */
    char err[256];
    struct ctl_client *c = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    if (c) {
        ctl_client_close(c);
        return rc == 0 ? 0 : -EBUSY;
    }
    unlink(p->ctl_sock);
    unlink(p->console_sock);
    if (pidfile_live_pid(p->pidfile) == 0)
        unlink(p->pidfile);
    return rc;
}

/* ---- formatting --------------------------------------------------------------------------- */

void format_size(char *out, size_t len, uint64_t b)
{
    static const char units[] = "BKMGTP";
    int u = 0;
    uint64_t whole = b;
    while (whole >= 1024 && u < 5 && whole % 1024 == 0) {
        whole /= 1024;
        u++;
    }
    if (whole < 10240 || u == 5) {
        snprintf(out, len, "%" PRIu64 "%c", whole, units[u]);
        return;
    }
    double v = (double)b;
    u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(out, len, "%.1f%c", v, units[u]);
}

void format_duration(char *out, size_t len, int64_t ms)
{
    if (ms < 0) {
        snprintf(out, len, "-");
        return;
    }
    int64_t s = ms / 1000;
    if (s < 60)
        snprintf(out, len, "%" PRId64 ".%01" PRId64 "s", s, (ms % 1000) / 100);
    else if (s < 3600)
        snprintf(out, len, "%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, len, "%" PRId64 "h %02" PRId64 "m %02" PRId64 "s", s / 3600, (s / 60) % 60,
                 s % 60);
    else
        snprintf(out, len, "%" PRId64 "d %02" PRId64 "h %02" PRId64 "m", s / 86400, (s / 3600) % 24,
                 (s / 60) % 60);
}

void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s) {
        puts(s);
        free(s);
    }
}
