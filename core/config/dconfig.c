/* The [display] section of vm.conf and how it becomes a display_config for the VMM: mode
 * (auto/sdl/vnc/sdl,vnc/none), size, VNC listen address and the VNC password file, which must
 * be private (mode 0600) because it holds the password in clear, as x11vnc's -passwdfile does. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config/dconfig.h"
#include "core/config/paths.h"
#include "core/config/vmconfig.h"

#define DEFAULT_WIDTH 1024
#define DEFAULT_HEIGHT 768

int display_check_size(unsigned width, unsigned height, char *err, size_t errlen)
{
    if (width < DISPLAY_MIN_WIDTH || width > DISPLAY_MAX_WIDTH || width % 8 ||
        height < DISPLAY_MIN_HEIGHT || height > DISPLAY_MAX_HEIGHT || height % 8 ||
        (uint64_t)width * height * (DISPLAY_BPP / 8) > DISPLAY_FB_MAX_BYTES) {
        snprintf(err, errlen,
                 "display size %ux%u is not supported (width %u..%u, height %u..%u, both "
                 "multiples of 8, at most %llu MiB at 32 bpp)",
                 width, height, DISPLAY_MIN_WIDTH, DISPLAY_MAX_WIDTH, DISPLAY_MIN_HEIGHT,
                 DISPLAY_MAX_HEIGHT, DISPLAY_FB_MAX_BYTES >> 20);
        return -EINVAL;
    }
    return 0;
}

void vmconfig_display_defaults(struct vm_display_config *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->mode, sizeof(d->mode), "auto");
    d->width = DEFAULT_WIDTH;
    d->height = DEFAULT_HEIGHT;
    snprintf(d->vnc_listen, sizeof(d->vnc_listen), "127.0.0.1");
}

int display_mode_parse(const char *mode, bool *sdl, bool *vnc, bool *sdl_optional)
{
    static const struct {
        const char *name;
        bool sdl, vnc, optional;
    } modes[] = {{"auto", true, true, true},     {"sdl", true, false, false},
                 {"vnc", false, true, false},    {"sdl,vnc", true, true, false},
                 {"vnc,sdl", true, true, false}, {"none", false, false, false}};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(mode, modes[i].name) == 0) {
            *sdl = modes[i].sdl;
            *vnc = modes[i].vnc;
            *sdl_optional = modes[i].optional;
            return 0;
        }
    return -EINVAL;
}

static bool parse_uint(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > 100000 || s[0] == '-')
        return false;
    *out = (unsigned)v;
    return true;
}

/* "ADDRESS" or "ADDRESS:PORT" (IPv4). */
int display_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    unsigned p = 0;
    if (n == 0 || n >= hostlen || (colon && (!parse_uint(colon + 1, &p) || p > 65535)))
        return -EINVAL;
    memcpy(host, s, n);
    host[n] = '\0';
    unsigned a, b, c, d;
    char tail;
    if (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 ||
        c > 255 || d > 255)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

int vmconfig_display_key(struct vm_display_config *d, const char *name, const char *value,
                         char *err, size_t errlen)
{
    bool a, b, c;
    char host[64];
    int port;
    if (strcmp(name, "mode") == 0) {
        if (display_mode_parse(value, &a, &b, &c) < 0 || strlen(value) >= sizeof(d->mode)) {
            snprintf(err, errlen,
                     "bad display mode '%s' (expected auto, sdl, vnc, sdl,vnc or none)", value);
            return 0;
        }
        snprintf(d->mode, sizeof(d->mode), "%s", value);
        return 1;
    }
    if (strcmp(name, "width") == 0 || strcmp(name, "height") == 0) {
        unsigned v;
        bool w = name[0] == 'w';
        unsigned lo = w ? DISPLAY_MIN_WIDTH : DISPLAY_MIN_HEIGHT;
        unsigned hi = w ? DISPLAY_MAX_WIDTH : DISPLAY_MAX_HEIGHT;
        if (!parse_uint(value, &v) || v < lo || v > hi || v % 8) {
            snprintf(err, errlen, "bad display %s '%s' (expected a multiple of 8 from %u to %u)",
                     name, value, w ? DISPLAY_MIN_WIDTH : DISPLAY_MIN_HEIGHT,
                     w ? DISPLAY_MAX_WIDTH : DISPLAY_MAX_HEIGHT);
            return 0;
        }
        if (w)
            d->width = v;
        else
            d->height = v;
        return 1;
    }
    if (strcmp(name, "vnc_listen") == 0) {
        if (strlen(value) >= sizeof(d->vnc_listen) ||
            (strcmp(value, "unix") != 0 &&
             display_parse_listen(value, host, sizeof(host), &port) < 0)) {
            snprintf(err, errlen,
                     "bad vnc_listen '%s' (expected an IPv4 address, optionally with :PORT, "
                     "e.g. 127.0.0.1 or 0.0.0.0:5901, or unix for a socket only you can open)",
                     value);
            return 0;
        }
        snprintf(d->vnc_listen, sizeof(d->vnc_listen), "%s", value);
        return 1;
    }
    if (strcmp(name, "vnc_password_file") == 0) {
        if (strlen(value) >= sizeof(d->vnc_password_file) || (value[0] && value[0] != '/')) {
            snprintf(err, errlen,
                     "bad vnc_password_file '%s' (expected an absolute path or nothing)", value);
            return 0;
        }
        snprintf(d->vnc_password_file, sizeof(d->vnc_password_file), "%s", value);
        return 1;
    }
    snprintf(err, errlen,
             "unknown key '%s' in [display] (expected mode, width, height, vnc_listen or "
             "vnc_password_file)",
             name);
    return 0;
}

void vmconfig_display_write(FILE *f, const struct vm_display_config *d)
{
    fprintf(f, "[display]\n");
    fprintf(f, "mode = %s\n", d->mode);
    fprintf(f, "width = %u\n", d->width);
    fprintf(f, "height = %u\n", d->height);
    fprintf(f, "vnc_listen = %s\n", d->vnc_listen);
    fprintf(f, "vnc_password_file = %s\n", d->vnc_password_file);
}

/* Reads the VNC password: the first line of a file only its owner may read. */
static int read_password(const char *path, bool must_exist, char *out, size_t outlen, char *err,
                         size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT && !must_exist)
            return 0;
        snprintf(err, errlen, "cannot open the VNC password file %s: %s", path, strerror(errno));
        return -errno;
    }
    struct stat st;
    char buf[64];
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & 077))
        n = read(fd, buf, sizeof(buf) - 1);
    else if (fstat(fd, &st) == 0) {
        close(fd);
        snprintf(err, errlen,
                 "the VNC password file %s can be read by others (mode %03o); run 'chmod 600 %s'",
                 path, (unsigned)(st.st_mode & 0777), path);
        return -EPERM;
    }
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read the VNC password file %s", path);
        return -EIO;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0' || strlen(buf) > 8 || strlen(buf) >= outlen) {
        snprintf(err, errlen,
                 "the VNC password in %s must be 1 to 8 characters on its first line (VNC "
                 "authentication uses only 8)",
                 path);
        return -EINVAL;
    }
    snprintf(out, outlen, "%s", buf);
    return 0;
}

int display_config_from_vm(const struct vm_config *cfg, const char *vm_dir,
                           struct display_config *out, char *err, size_t errlen)
{
    const struct vm_display_config *d = &cfg->display;
    memset(out, 0, sizeof(*out));
    out->vm_name = cfg->name;
    out->width = d->width;
    out->height = d->height;
    if (display_mode_parse(d->mode, &out->sdl, &out->vnc, &out->sdl_optional) < 0) {
        snprintf(err, errlen, "bad display mode '%s' (expected auto, sdl, vnc, sdl,vnc or none)",
                 d->mode);
        return -EINVAL;
    }
    if (out->sdl_optional && !getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY"))
        out->sdl = false;
    if (display_check_size(d->width, d->height, err, errlen) < 0)
        return -EINVAL;
    struct vm_paths p;
    if (strcmp(d->vnc_listen, "unix") == 0) { /* the runtime dir's NAME.vnc, mode 0600 */
        if (paths_for_vm(cfg->name, &p) < 0 || strlen(p.vnc_sock) >= sizeof(out->vnc_socket)) {
            snprintf(err, errlen, "no room for the VNC socket of %s in the runtime dir", cfg->name);
            return -ENAMETOOLONG;
        }
        snprintf(out->vnc_socket, sizeof(out->vnc_socket), "%s", p.vnc_sock);
    } else if (display_parse_listen(d->vnc_listen, out->vnc_host, sizeof(out->vnc_host),
                                    &out->vnc_port) < 0) {
        snprintf(err, errlen, "bad vnc_listen '%s'", d->vnc_listen);
        return -EINVAL;
    }
    if (!out->vnc)
        return 0;
    char path[PATH_MAX + 32];
    bool explicit_file = d->vnc_password_file[0] != '\0';
    if (explicit_file)
        snprintf(path, sizeof(path), "%s", d->vnc_password_file);
    else
        snprintf(path, sizeof(path), "%s/vnc.passwd", vm_dir);
    int r = read_password(path, explicit_file, out->vnc_password, sizeof(out->vnc_password), err,
                          errlen);
    if (r == 0 && out->vnc_password[0] && strlen(path) < sizeof(out->vnc_password_file))
        memcpy(out->vnc_password_file, path, strlen(path) + 1);
    return r;
}

void display_read_password(const char *path, char *out, size_t outlen)
{
    char err[256];
    if (read_password(path, true, out, outlen, err, sizeof(err)) < 0)
        out[0] = '\0';
}
