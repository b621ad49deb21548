/* From a VM's configuration ([display] in vm.conf, app/vmconfig.h) to the display's settings;
 * see dconfig.c. */
#ifndef VMWS_DISPLAY_DCONFIG_H
#define VMWS_DISPLAY_DCONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "display/display.h"

struct vm_config;

/* "auto" | "sdl" | "vnc" | "sdl,vnc" | "none". Returns 0 or -EINVAL. */
int display_mode_parse(const char *mode, bool *sdl, bool *vnc, bool *sdl_optional);
/* "A.B.C.D" or "A.B.C.D:PORT" -> HOST, PORT (0 if none). Returns 0 or -EINVAL. */
int display_parse_listen(const char *s, char *host, size_t hostlen, int *port);
/* Fills OUT for CFG (VM directory VM_DIR, which may hold vnc.passwd). OUT->vm_name points into
 * CFG. Returns 0 or -errno with ERR (bad mode, size, listen address, or a password file that
 * others can read or that does not hold a 1-8 character password). */
int display_config_from_vm(const struct vm_config *cfg, const char *vm_dir,
                           struct display_config *out, char *err, size_t errlen);

#endif
