/* Where a VM's files live: persistent files under $VMWS_HOME/NAME, sockets in a private
 * runtime directory. The one idea: the runtime directory holds the control sockets, so it
 * must be ours and 0700 - an existing one owned by someone else, or a symlink, is refused
 * rather than used. */
#include "core/config/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/config/vmconfig.h"

static int fmt(char *out, size_t len, const char *f, const char *a, const char *b)
{
    int n = snprintf(out, len, f, a, b);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int home_dir_path(char *out, size_t len)
{
    const char *h = getenv("VMWS_HOME");
    if (h && *h)
        return fmt(out, len, "%s%s", h, "");
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        if (!pw || !pw->pw_dir)
            return -ENOENT;
        home = pw->pw_dir;
    }
    return fmt(out, len, "%s%s", home, "/.local/share/vmws");
}

static int runtime_dir_path(char *out, size_t len)
{
    const char *r = getenv("VMWS_RUNTIME_DIR");
    if (r && *r)
        return fmt(out, len, "%s%s", r, "");
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && *x)
        return fmt(out, len, "%s%s", x, "/vmws");
    char uid[32];
    snprintf(uid, sizeof(uid), "%u", (unsigned)getuid());
    return fmt(out, len, "/tmp/vmws-%s%s", uid, "");
}

/* mkdir -p with MODE for every directory created. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(buf, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int paths_home(char *out, size_t len)
{
    int rc = home_dir_path(out, len);
    if (rc < 0)
        return rc;
    return mkdir_p(out, 0700);
}

int paths_runtime(char *out, size_t len)
{
    int rc = runtime_dir_path(out, len);
    if (rc < 0)
        return rc;
    rc = mkdir_p(out, 0700);
    if (rc < 0)
        return rc;
    struct stat st;
    if (lstat(out, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR; /* e.g. a symlink planted by someone else */
    if (st.st_uid != getuid())
        return -EPERM;
    if ((st.st_mode & 0077) && chmod(out, 0700) < 0)
        return -errno;
    return 0;
}

int paths_for_vm(const char *name, struct vm_paths *p)
{
    char home[PATH_MAX], run[PATH_MAX];
    if (!vm_name_valid(name))
        return -EINVAL;
    int rc = home_dir_path(home, sizeof(home));
    if (rc == 0)
        rc = runtime_dir_path(run, sizeof(run));
    if (rc < 0)
        return rc;
    memset(p, 0, sizeof(*p));
    rc = fmt(p->dir, sizeof(p->dir), "%s/%s", home, name);
    char file[VM_NAME_MAX + 8];
    snprintf(file, sizeof(file), "%s.vmem", name);
    if (rc == 0)
        rc = fmt(p->config, sizeof(p->config), "%s/%s", p->dir, "vm.conf");
    if (rc == 0)
        rc = fmt(p->vmem, sizeof(p->vmem), "%s/%s", p->dir, file);
    if (rc == 0)
        rc = fmt(p->serial_log, sizeof(p->serial_log), "%s/%s", p->dir, "serial.log");
    if (rc == 0)
        rc = fmt(p->vmm_log, sizeof(p->vmm_log), "%s/%s", p->dir, "vmm.log");
    if (rc == 0)
        rc = fmt(p->pidfile, sizeof(p->pidfile), "%s/%s", p->dir, "vmm.pid");
    if (rc == 0)
        rc = fmt(p->suspend_state, sizeof(p->suspend_state), "%s/%s", p->dir, "suspend.state");
    /* Socket paths must fit in sockaddr_un.sun_path. */
    size_t sun_len = sizeof(((struct sockaddr_un *)0)->sun_path);
    snprintf(file, sizeof(file), "%s.ctl", name);
    if (rc == 0)
        rc = fmt(p->ctl_sock, sun_len, "%s/%s", run, file);
    snprintf(file, sizeof(file), "%s.console", name);
    if (rc == 0)
        rc = fmt(p->console_sock, sun_len, "%s/%s", run, file);
    snprintf(file, sizeof(file), "%s.vnc", name);
    if (rc == 0)
        rc = fmt(p->vnc_sock, sun_len, "%s/%s", run, file);
    return rc;
}

/* ---- the pidfile ------------------------------------------------------------------------ */

static pid_t read_pid(int fd)
{
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long v = strtol(buf, NULL, 10);
    return v > 0 ? (pid_t)v : 0;
}

int pidfile_acquire(const char *path, pid_t *holder)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (holder)
            *holder = read_pid(fd);
        close(fd);
        return e == EWOULDBLOCK ? -EBUSY : -e;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

pid_t pidfile_live_pid(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
        pid = read_pid(fd); /* the lock is held: a VMM is alive */
    close(fd);
    return pid;
}
