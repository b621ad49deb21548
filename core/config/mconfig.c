/* [memory] in vm.conf: what the host guarantees and allows a VM (seed 001: reservation, limit,
 * shares; enforced through the VMM's cgroup v2, see core/vm/memcg.h) and how dynamic memory
 * (seed 003: min, max, buffer; core/vm/mempolicy.h) may move its balloon. Sizes may be 0 = not
 * set; how the keys relate to each other and to the VM's RAM is checked once the whole file
 * is read (vmconfig_memory_check), so their order in the file does not matter. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config/vmconfig.h"

void vmconfig_memory_defaults(struct vm_memory_config *m)
{
    memset(m, 0, sizeof(*m));
    m->shares = VM_SHARES_DEFAULT;
    m->buffer_percent = 20;
}

int vmconfig_memory_key(struct vm_memory_config *m, const char *name, const char *value, char *err,
                        size_t errlen)
{
    uint64_t *size = !strcmp(name, "reservation") ? &m->reservation
                     : !strcmp(name, "limit")     ? &m->limit
                     : !strcmp(name, "min")       ? &m->min
                     : !strcmp(name, "max")       ? &m->max
                                                  : NULL;
    if (size) {
        if (parse_size(value, size) < 0) {
            snprintf(err, errlen, "bad memory %s '%s' (expected a size like 512M or 1G, or 0)",
                     name, value);
            return 0;
        }
        return 1;
    }
    if (!strcmp(name, "shares") || !strcmp(name, "buffer")) {
        char *end;
        unsigned long long v = strtoull(value, &end, 10);
        bool shares = name[0] == 's';
        if (shares && (end == value || *end || v < 1 || v > 1000000)) {
            snprintf(err, errlen, "bad memory shares '%s' (expected 1 to 1000000; default %u)",
                     value, VM_SHARES_DEFAULT);
            return 0;
        }
        if (!shares && (end == value || (*end && strcmp(end, "%")) || v > 100)) {
            snprintf(err, errlen, "bad memory buffer '%s' (expected a percentage, 0 to 100%%)",
                     value);
            return 0;
        }
        *(shares ? &m->shares : &m->buffer_percent) = (unsigned)v;
        return 1;
    }
    if (!strcmp(name, "dynamic")) {
        if (vmconfig_parse_bool(value, &m->dynamic) < 0) {
            snprintf(err, errlen, "bad memory dynamic '%s' (expected yes or no)", value);
            return 0;
        }
        return 1;
    }
    snprintf(err, errlen,
             "unknown key '%s' in [memory] (expected reservation, limit, shares, dynamic, min, "
             "max or buffer)",
             name);
    return 0;
}

int vmconfig_memory_check(const struct vm_memory_config *m, uint64_t ram, char *err, size_t errlen)
{
    const uint64_t mib = 1ULL << 20;
    if (m->reservation > ram)
        snprintf(err, errlen,
                 "[memory] reservation %" PRIu64 " MiB is more than the VM's %" PRIu64
                 " MiB of RAM",
                 m->reservation / mib, ram / mib);
    else if (m->limit && m->limit < 16 * mib)
        snprintf(err, errlen, "[memory] limit %" PRIu64 " MiB is below 16 MiB (0 = no limit)",
                 m->limit / mib);
    else if (m->limit && m->reservation > m->limit)
        snprintf(err, errlen,
                 "[memory] reservation %" PRIu64 " MiB is above the limit %" PRIu64 " MiB",
                 m->reservation / mib, m->limit / mib);
    else if (m->max > ram)
        snprintf(err, errlen,
                 "[memory] max %" PRIu64 " MiB is more than the VM's %" PRIu64 " MiB of RAM",
                 m->max / mib, ram / mib);
    else if (m->max && m->min > m->max)
        snprintf(err, errlen, "[memory] min %" PRIu64 " MiB is above max %" PRIu64 " MiB",
                 m->min / mib, m->max / mib);
    else if (m->min > ram)
        snprintf(err, errlen,
                 "[memory] min %" PRIu64 " MiB is more than the VM's %" PRIu64 " MiB of RAM",
                 m->min / mib, ram / mib);
    else
        return 0;
    return -1;
}

/* "512M" when whole MiB, else bytes. */
static void write_size(FILE *f, const char *key, uint64_t v)
{
    if (v % (1ULL << 20) == 0)
        fprintf(f, "%s = %" PRIu64 "M\n", key, v >> 20);
    else
        fprintf(f, "%s = %" PRIu64 "\n", key, v);
}

void vmconfig_memory_write(FILE *f, const struct vm_memory_config *m)
{
    fprintf(f, "[memory]\n");
    write_size(f, "reservation", m->reservation);
    write_size(f, "limit", m->limit);
    fprintf(f, "shares = %u\n", m->shares);
    fprintf(f, "dynamic = %s\n", m->dynamic ? "yes" : "no");
    write_size(f, "min", m->min);
    write_size(f, "max", m->max);
    fprintf(f, "buffer = %u%%\n", m->buffer_percent);
}
