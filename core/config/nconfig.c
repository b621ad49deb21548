/* [net] in vm.conf: whether the VM has a network card, its MAC, and the host ports forwarded
 * into the guest. Parsed by core/config/vmconfig.c, which hands this file the keys of the [net]
 * section; `forward` is the one key that may repeat (one line per forward). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config/vmconfig.h"

void vmconfig_net_defaults(struct vm_net_config *n, const char *name)
{
    memset(n, 0, sizeof(*n));
    n->enabled = true;
    uint32_t h = 2166136261u; /* FNV-1a: the same name always gets the same MAC */
    for (const char *p = name ? name : ""; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    uint8_t mac[6] = {0x52, 0x54, 0x00, (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h};
    memcpy(n->mac, mac, 6);
}

void vmconfig_net_mac_format(const uint8_t mac[6], char *buf, size_t len)
{
    snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

void vmconfig_net_forward_format(const struct vm_net_forward *f, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%u:%u", f->udp ? "udp" : "tcp", f->host_port, f->guest_port);
}

static int parse_port(const char *s, size_t n, uint16_t *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int vmconfig_net_forward_parse(const char *s, struct vm_net_forward *f, char *err, size_t errlen)
{
    struct vm_net_forward r = {0};
    const char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    bool proto_ok =
        c1 && ((c1 - s == 3 && !strncmp(s, "tcp", 3)) || (c1 - s == 3 && !strncmp(s, "udp", 3)));
    if (!proto_ok || !c2 || parse_port(c1 + 1, (size_t)(c2 - c1 - 1), &r.host_port) < 0 ||
        parse_port(c2 + 1, strlen(c2 + 1), &r.guest_port) < 0) {
        snprintf(err, errlen,
                 "bad forward '%s' (expected tcp:HOSTPORT:GUESTPORT or udp:HOSTPORT:GUESTPORT, "
                 "ports 1-65535, like tcp:8080:80)",
                 s);
        return -EINVAL;
    }
    r.udp = s[0] == 'u';
    *f = r;
    return 0;
}

int vmconfig_net_forward_add(struct vm_net_config *n, const struct vm_net_forward *f, char *err,
                             size_t errlen)
{
    char s[24];
    vmconfig_net_forward_format(f, s, sizeof(s));
    for (unsigned i = 0; i < n->nforwards; i++) {
        if (n->forwards[i].udp == f->udp && n->forwards[i].host_port == f->host_port) {
            snprintf(err, errlen,
                     "forward '%s': host %s port %u is already forwarded (expected "
                     "each host port once)",
                     s, f->udp ? "udp" : "tcp", f->host_port);
            return -EINVAL;
        }
    }
    if (n->nforwards == VM_NET_FORWARDS_MAX) {
        snprintf(err, errlen, "forward '%s': too many forwards (expected at most %d)", s,
                 VM_NET_FORWARDS_MAX);
        return -EINVAL;
    }
    n->forwards[n->nforwards++] = *f;
    return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned b[6];
    char end;
    if (strlen(s) != 17 ||
        sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &end) != 6)
        return -1;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
    /* A card's own address: unicast (bit 0 of the first byte clear), not all zeros. */
    return (mac[0] & 1) || !(b[0] | b[1] | b[2] | b[3] | b[4] | b[5]) ? -1 : 0;
}

int vmconfig_net_key(struct vm_net_config *n, const char *name, const char *value, char *err,
                     size_t errlen)
{
    if (!strcmp(name, "enabled")) {
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on") ||
            !strcmp(value, "1"))
            n->enabled = true;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off") ||
                 !strcmp(value, "0"))
            n->enabled = false;
        else {
            snprintf(err, errlen, "bad net enabled '%s' (expected yes or no)", value);
            return 0;
        }
        return 1;
    }
    if (!strcmp(name, "mac")) {
        if (parse_mac(value, n->mac) < 0) {
            snprintf(err, errlen,
                     "bad net mac '%s' (expected six hex bytes like 52:54:00:12:34:56, the first "
                     "one even: a unicast address)",
                     value);
            return 0;
        }
        n->mac_set = true;
        return 1;
    }
    if (!strcmp(name, "forward")) {
        struct vm_net_forward f;
        return vmconfig_net_forward_parse(value, &f, err, errlen) == 0 &&
               vmconfig_net_forward_add(n, &f, err, errlen) == 0;
    }
    snprintf(err, errlen, "unknown key '%s' in [net] (expected enabled, mac or forward)", name);
    return 0;
}

void vmconfig_net_write(FILE *f, const struct vm_net_config *n)
{
    char s[24];
    fprintf(f, "[net]\n");
    fprintf(f, "enabled = %s\n", n->enabled ? "yes" : "no");
    vmconfig_net_mac_format(n->mac, s, sizeof(s));
    fprintf(f, "mac = %s\n", s);
    for (unsigned i = 0; i < n->nforwards; i++) {
        vmconfig_net_forward_format(&n->forwards[i], s, sizeof(s));
        fprintf(f, "forward = %s\n", s);
    }
}
