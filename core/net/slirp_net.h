/* User-mode NAT for one VM's network card through libslirp: the guest's Ethernet frames go in
 * with net_slirp_send(), frames for the guest come out through the RECEIVE callback. The one
 * idea: libslirp is not thread-safe, so one mutex guards it, and its sockets and timers are
 * served by a poll loop on this module's own thread; the callback runs with that mutex held
 * (on that thread, or on the sender's inside net_slirp_send) and must not call back in. */
#ifndef VMWS_SLIRP_NET_H
#define VMWS_SLIRP_NET_H

#include <stddef.h>
#include <stdint.h>

#include "core/config/vmconfig.h"

/* Where the guest is and what slirp answers as, QEMU's defaults. */
#define NET_SLIRP_NETWORK "10.0.2.0"
#define NET_SLIRP_GATEWAY "10.0.2.2"
#define NET_SLIRP_DNS "10.0.2.3"
#define NET_SLIRP_GUEST "10.0.2.15"

typedef void (*net_receive_fn)(void *opaque, const uint8_t *frame, size_t len);

struct net_slirp;
/* Starts the NAT with CFG's forwards (host 127.0.0.1:PORT -> guest 10.0.2.15:PORT). NULL with
 * ERR (a host port already in use names the port). */
struct net_slirp *net_slirp_create(const struct vm_net_config *cfg, net_receive_fn receive,
                                   void *opaque, char *err, size_t errlen);
/* Stops its thread and closes every socket. */
void net_slirp_destroy(struct net_slirp *s);
/* One frame from the guest (any thread). */
void net_slirp_send(struct net_slirp *s, const uint8_t *frame, size_t len);

#endif
