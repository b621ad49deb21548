/* What the command line says about a VM's screen: `vmws start` prints where VNC listens and
 * `vmws status` shows it, both from the VMM's query-display. */
#include <stdio.h>
#include <string.h>

#include "app/cli.h"

json_t *cli_display_query(const struct vm_paths *p)
{
    char err[512];
    struct ctl_client *c = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    if (!c)
        return NULL;
    json_t *r = ctl_client_execute(c, "query-display", NULL, 3000, err, sizeof(err));
    ctl_client_close(c);
    return r;
}

void cli_display_print(const struct vm_paths *p, const char *prefix)
{
    json_t *r = cli_display_query(p);
    if (!r)
        return;
    json_t *vnc = json_object_get(r, "vnc");
    printf("%sdisplay:         %dx%d, SDL window %s\n", prefix,
           (int)json_integer_value(json_object_get(r, "width")),
           (int)json_integer_value(json_object_get(r, "height")),
           json_is_true(json_object_get(r, "sdl")) ? "open" : "not open");
    if (vnc)
        printf("%svnc:             %s:%d (display :%d)%s\n", prefix,
               json_string_value(json_object_get(vnc, "host")),
               (int)json_integer_value(json_object_get(vnc, "port")),
               (int)json_integer_value(json_object_get(vnc, "port")) - 5900,
               json_is_true(json_object_get(vnc, "password")) ? ", password required" : "");
    json_decref(r);
}
