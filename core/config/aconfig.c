/* [audio] in vm.conf: whether the VM has sound devices, and the volume and mute it starts with
 * (`vmws volume NAME ...` changes the running VM and writes them back here). Parsed by
 * core/config/vmconfig.c, which hands this file the keys of the [audio] section. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config/vmconfig.h"

void vmconfig_audio_defaults(struct vm_audio_config *a)
{
    a->enabled = true;
    a->volume = 100;
    a->muted = false;
}

int vmconfig_parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "on") || !strcmp(s, "1"))
        *out = true;
    else if (!strcmp(s, "no") || !strcmp(s, "false") || !strcmp(s, "off") || !strcmp(s, "0"))
        *out = false;
    else
        return -1;
    return 0;
}

int vmconfig_audio_key(struct vm_audio_config *a, const char *name, const char *value, char *err,
                       size_t errlen)
{
    if (!strcmp(name, "enabled") || !strcmp(name, "mute")) {
        bool v;
        if (vmconfig_parse_bool(value, &v) < 0) {
            snprintf(err, errlen, "bad audio %s '%s' (expected yes or no)", name, value);
            return 0;
        }
        if (name[0] == 'e')
            a->enabled = v;
        else
            a->muted = v;
        return 1;
    }
    if (!strcmp(name, "volume")) {
        char *end;
        long v = strtol(value, &end, 10);
        if (!*value || *end || v < 0 || v > 100) {
            snprintf(err, errlen, "bad audio volume '%s' (expected 0 to 100)", value);
            return 0;
        }
        a->volume = (unsigned)v;
        return 1;
    }
    snprintf(err, errlen, "unknown key '%s' in [audio] (expected enabled, volume or mute)", name);
    return 0;
}

void vmconfig_audio_write(FILE *f, const struct vm_audio_config *a)
{
    fprintf(f, "[audio]\n");
    fprintf(f, "enabled = %s\n", a->enabled ? "yes" : "no");
    fprintf(f, "volume = %u\n", a->volume);
    fprintf(f, "mute = %s\n", a->muted ? "yes" : "no");
}
