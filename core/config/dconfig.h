/* The display's settings (the framebuffer's size, which viewers, VNC's address and password),
 * and how they come from a VM's configuration ([display] in vm.conf, core/config/vmconfig.h);
 * see dconfig.c. */
#ifndef VMWS_DISPLAY_DCONFIG_H
#define VMWS_DISPLAY_DCONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DISPLAY_FB_MAX_BYTES (32ULL << 20)
#define DISPLAY_MIN_WIDTH 320
#define DISPLAY_MIN_HEIGHT 200
#define DISPLAY_MAX_WIDTH 4096
#define DISPLAY_MAX_HEIGHT 2160
#define DISPLAY_BPP 32

struct display_config {
    const char *vm_name;
    unsigned width, height;
    bool sdl, vnc;
    bool sdl_optional; /* SDL by default (a display exists): failing to open it is a note */
    char vnc_host[64]; /* listen address, e.g. "127.0.0.1" */
    int vnc_port;      /* 0 = the first free of 5900..5999 */
    /* vnc_listen = unix: a Unix socket (mode 0600) in the runtime dir instead of TCP; "" = TCP */
    char vnc_socket[108];
    char vnc_password[16]; /* "" = no authentication (VNC passwords are at most 8 bytes) */
    char vnc_password_file[PATH_MAX]; /* where it came from (shown by status and dashboard) */
};

/* Checks width/height (multiples of 8 within the limits above, fitting DISPLAY_FB_MAX_BYTES).
 * Returns 0 or -EINVAL with ERR saying why. */
int display_check_size(unsigned width, unsigned height, char *err, size_t errlen);

struct vm_config;

/* "auto" | "sdl" | "vnc" | "sdl,vnc" | "none". Returns 0 or -EINVAL. */
int display_mode_parse(const char *mode, bool *sdl, bool *vnc, bool *sdl_optional);
/* "A.B.C.D" or "A.B.C.D:PORT" -> HOST, PORT (0 if none). Returns 0 or -EINVAL. ("unix", which
 * vnc_listen also takes, is not an address: see display_config_from_vm.) */
int display_parse_listen(const char *s, char *host, size_t hostlen, int *port);
/* Fills OUT for CFG (VM directory VM_DIR, which may hold vnc.passwd). OUT->vm_name points into
 * CFG. Returns 0 or -errno with ERR (bad mode, size, listen address, or a password file that
 * others can read or that does not hold a 1-8 character password). */
int display_config_from_vm(const struct vm_config *cfg, const char *vm_dir,
                           struct display_config *out, char *err, size_t errlen);
/* The VNC password in PATH (a running VMM's "password_file"), for showing it: "" if it cannot
 * be read or is not a valid one. */
void display_read_password(const char *path, char *out, size_t outlen);

#endif
