/* [balloon] in vm.conf: whether the VM has its virtio-balloon (at 00:08.0; present unless
 * `enabled = no`; a state saved before it had one loads with the device reset) and
 * whether the device offers free page reporting to the guest's driver. Parsed by
 * core/config/vmconfig.c, which hands this file the keys of the [balloon] section. */
#include <stdio.h>
#include <string.h>

#include "core/config/vmconfig.h"

void vmconfig_balloon_defaults(struct vm_balloon_config *b)
{
    b->enabled = true;
    b->free_page_reporting = true;
}

int vmconfig_balloon_key(struct vm_balloon_config *b, const char *name, const char *value,
                         char *err, size_t errlen)
{
    bool *key = !strcmp(name, "enabled")               ? &b->enabled
                : !strcmp(name, "free_page_reporting") ? &b->free_page_reporting
                                                       : NULL;
    if (!key) {
        snprintf(err, errlen,
                 "unknown key '%s' in [balloon] (expected enabled or free_page_reporting)", name);
        return 0;
    }
    if (vmconfig_parse_bool(value, key) < 0) {
        snprintf(err, errlen, "bad balloon %s '%s' (expected yes or no)", name, value);
        return 0;
    }
    return 1;
}

void vmconfig_balloon_write(FILE *f, const struct vm_balloon_config *b)
{
    fprintf(f, "[balloon]\n");
    fprintf(f, "enabled = %s\n", b->enabled ? "yes" : "no");
    fprintf(f, "free_page_reporting = %s\n", b->free_page_reporting ? "yes" : "no");
}
