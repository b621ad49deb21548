/* virtio-net (see virtio_net.h). Every frame carries the 12-byte virtio_net_hdr_v1 in front.
 * Receive: slirp's thread (or the I/O thread, when slirp answers a frame at once) queues the
 * frame and wakes the I/O thread, which puts it into the next receive buffer. Transmit: the I/O
 * thread checks the chain and the header, gathers the frame into one buffer and hands it to
 * slirp (the transport's lock is not held meanwhile). Locks: slirp's, then the receive queue's;
 * never the other way. */
#include "core/virtio/virtio_net.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/net/slirp_net.h"
#include "core/util/log.h"
#include "core/virtio/virtio_pci.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1
#define NET_HDR_LEN 12 /* flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, buffers */
#define ETH_HLEN 14
#define RX_QUEUE_MAX 256 /* frames waiting for a receive buffer */
#define Q_RX 0
#define Q_TX 1

struct rx_frame {
    struct rx_frame *next;
    size_t len;
    uint8_t data[];
};

struct virtio_net {
    struct virtio_pci *vp;
    struct machine *m;
    struct net_slirp *slirp;
    struct vm_net_config cfg;
    uint8_t config[12];      /* struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu */
    pthread_mutex_t rx_lock; /* guards the queue */
    struct rx_frame *rx_head, *rx_tail;
    unsigned rx_queued;
    uint64_t rx_bytes, rx_packets, rx_dropped, tx_bytes, tx_packets; /* atomics */
    uint8_t tx_frame[VIRTIO_NET_FRAME_MAX];                          /* the I/O thread's */
};

static void count(uint64_t *c, uint64_t n)
{
    __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

static void net_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
    struct virtio_net *n = opaque;
    for (unsigned i = 0; i < len; i++)
        data[i] = off + i < sizeof(n->config) ? n->config[off + i] : 0;
}

/* slirp has a frame for the guest (slirp's lock held; see slirp_net.h). */
static void net_receive(void *opaque, const uint8_t *frame, size_t len)
{
    struct virtio_net *n = opaque;
    struct rx_frame *f = len <= VIRTIO_NET_FRAME_MAX ? malloc(sizeof(*f) + len) : NULL;
    pthread_mutex_lock(&n->rx_lock);
    if (!f || n->rx_queued == RX_QUEUE_MAX) {
        pthread_mutex_unlock(&n->rx_lock);
        free(f);
        count(&n->rx_dropped, 1);
        return;
    }
    f->next = NULL;
    f->len = len;
    memcpy(f->data, frame, len);
    if (n->rx_tail)
        n->rx_tail->next = f;
    else
        n->rx_head = f;
    n->rx_tail = f;
    n->rx_queued++;
    pthread_mutex_unlock(&n->rx_lock);
    virtio_pci_wake(n->vp);
}

static struct rx_frame *rx_pop(struct virtio_net *n)
{
    pthread_mutex_lock(&n->rx_lock);
    struct rx_frame *f = n->rx_head;
    if (f) {
        n->rx_head = f->next;
        if (!n->rx_head)
            n->rx_tail = NULL;
        n->rx_queued--;
    }
    pthread_mutex_unlock(&n->rx_lock);
    return f;
}

static void rx_drop_all(struct virtio_net *n)
{
    struct rx_frame *f;
    while ((f = rx_pop(n)))
        free(f);
}

/* A receive buffer: device-writable only, room for the header. The next waiting frame that
 * fits goes in (one that does not is dropped: without MRG_RXBUF a driver gives buffers of a
 * whole frame, and slirp sends none larger than its 1500-byte MTU). */
static int net_rx_chain(struct virtio_net *n, struct virtq_chain *c, char *reason, size_t rlen)
{
    if (c->readable_len || c->writable_len < NET_HDR_LEN) {
        snprintf(reason, rlen,
                 "receive buffer at head %u has %llu device-readable bytes (none allowed) and "
                 "%llu writable (at least %d needed)",
                 c->head, (unsigned long long)c->readable_len, (unsigned long long)c->writable_len,
                 NET_HDR_LEN);
        return -1;
    }
    struct rx_frame *f;
    while ((f = rx_pop(n)) && f->len > c->writable_len - NET_HDR_LEN) {
        free(f);
        count(&n->rx_dropped, 1);
    }
    if (!f)
        return VIRTIO_CHAIN_LATER;
    uint8_t hdr[NET_HDR_LEN] = {0};
    hdr[10] = 1; /* num_buffers */
    virtq_chain_write(n->m->mem, c, 0, hdr, sizeof(hdr));
    virtq_chain_write(n->m->mem, c, NET_HDR_LEN, f->data, f->len);
    int written = (int)(NET_HDR_LEN + f->len);
    count(&n->rx_bytes, f->len);
    count(&n->rx_packets, 1);
    free(f);
    return written;
}

/* A frame to send: device-readable only, a header asking for nothing we did not offer (no
 * checksum or segmentation offload), then one Ethernet frame of 14 to 65550 bytes. */
static int net_tx_chain(struct virtio_net *n, struct virtq_chain *c, char *reason, size_t rlen)
{
    uint8_t hdr[NET_HDR_LEN];
    uint64_t len = c->readable_len >= NET_HDR_LEN ? c->readable_len - NET_HDR_LEN : 0;
    if (c->writable_len || virtq_chain_read(c, 0, hdr, sizeof(hdr)) < 0) {
        snprintf(reason, rlen,
                 "transmit chain at head %u has %llu readable bytes (a %d-byte header needed) "
                 "and %llu device-writable (none allowed)",
                 c->head, (unsigned long long)c->readable_len, NET_HDR_LEN,
                 (unsigned long long)c->writable_len);
        return -1;
    }
    if (hdr[0] || hdr[1]) {
        snprintf(reason, rlen,
                 "transmit header at head %u asks for flags 0x%02x, gso_type %u: no checksum or "
                 "segmentation offload was negotiated",
                 c->head, hdr[0], hdr[1]);
        return -1;
    }
    if (len < ETH_HLEN || len > VIRTIO_NET_FRAME_MAX) {
        snprintf(reason, rlen, "transmit frame at head %u is %llu bytes (expected %d to %d)",
                 c->head, (unsigned long long)len, ETH_HLEN, VIRTIO_NET_FRAME_MAX);
        return -1;
    }
    virtq_chain_read(c, NET_HDR_LEN, n->tx_frame, (size_t)len);
    net_slirp_send(n->slirp, n->tx_frame, (size_t)len);
    count(&n->tx_bytes, len);
    count(&n->tx_packets, 1);
    return 0;
}

static int net_handle_chain(void *opaque, unsigned queue, struct virtq_chain *c, char *reason,
                            size_t rlen)
{
    struct virtio_net *n = opaque;
    return queue == Q_RX ? net_rx_chain(n, c, reason, rlen) : net_tx_chain(n, c, reason, rlen);
}

static const struct virtio_device_ops net_ops = {
    .device_id = 1,
    .class_code = 0x020000, /* network, Ethernet */
    .features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS,
    .num_queues = 2,
    .config_len = 12,
    .name = "virtio-net",
    .config_read = net_config_read,
    .handle_chain = net_handle_chain,
};

struct virtio_net *virtio_net_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const struct vm_net_config *cfg, char *err, size_t errlen)
{
    struct virtio_net *n = calloc(1, sizeof(*n));
    if (!n) {
        snprintf(err, errlen, "out of memory creating virtio-net");
        return NULL;
    }
    n->m = m;
    n->cfg = *cfg;
    pthread_mutex_init(&n->rx_lock, NULL);
    memcpy(n->config, cfg->mac, 6);
    n->config[6] = VIRTIO_NET_S_LINK_UP;
    n->config[8] = 1; /* max_virtqueue_pairs (read only with MQ; 1 is the truth) */
    /* The card first: slirp may have a frame for it as soon as it runs. */
    n->vp = virtio_pci_create(m, bus, slot, &net_ops, n);
    if (!n->vp) {
        snprintf(err, errlen, "cannot create the virtio-net device at PCI slot %u", slot);
        virtio_net_destroy(n);
        return NULL;
    }
    n->slirp = net_slirp_create(cfg, net_receive, n, err, errlen);
    if (!n->slirp) {
        virtio_net_destroy(n);
        return NULL;
    }
    char mac[24];
    vmconfig_net_mac_format(cfg->mac, mac, sizeof(mac));
    vmm_log("virtio-net: MAC %s, user-mode NAT (guest %s, gateway %s = the host's 127.0.0.1), "
            "%u forward(s), PCI slot %u",
            mac, NET_SLIRP_GUEST, NET_SLIRP_GATEWAY, cfg->nforwards, slot);
    return n;
}

void virtio_net_destroy(struct virtio_net *n)
{
    if (!n)
        return;
    /* Each side calls into the other from its own thread: first no more frames into slirp
     * (the card quiet), then no more frames from it (its thread joined), then the card. */
    char err[256];
    if (n->vp && virtio_pci_quiesce(n->vp, 5000, err, sizeof(err)) < 0)
        vmm_log("%s", err);
    net_slirp_destroy(n->slirp);
    if (virtio_pci_destroy(n->vp) < 0)
        return; /* a request still running uses N: left to the process's exit (logged) */
    rx_drop_all(n);
    pthread_mutex_destroy(&n->rx_lock);
    free(n);
}

int virtio_net_quiesce(struct virtio_net *n, unsigned timeout_ms, char *err, size_t errlen)
{
    return virtio_pci_quiesce(n->vp, timeout_ms, err, errlen);
}

void virtio_net_resume(struct virtio_net *n)
{
    virtio_pci_unquiesce(n->vp);
}

json_t *virtio_net_status_json(struct virtio_net *n)
{
    bool needs_reset;
    char why[200], mac[24], fw[24];
    uint8_t status = virtio_pci_status(n->vp, &needs_reset, why, sizeof(why));
    vmconfig_net_mac_format(n->cfg.mac, mac, sizeof(mac));
    json_t *forwards = json_array();
    for (unsigned i = 0; i < n->cfg.nforwards; i++) {
        vmconfig_net_forward_format(&n->cfg.forwards[i], fw, sizeof(fw));
        json_array_append_new(forwards, json_string(fw));
    }
    json_t *j =
        json_pack("{s:s, s:o, s:s, s:s, s:i, s:b, s:I, s:I, s:I, s:I, s:I}", "mac", mac, "forwards",
                  forwards, "guest", NET_SLIRP_GUEST, "gateway", NET_SLIRP_GATEWAY, "status",
                  (int)status, "needs_reset", needs_reset, "rx_bytes",
                  (json_int_t)__atomic_load_n(&n->rx_bytes, __ATOMIC_RELAXED), "tx_bytes",
                  (json_int_t)__atomic_load_n(&n->tx_bytes, __ATOMIC_RELAXED), "rx_packets",
                  (json_int_t)__atomic_load_n(&n->rx_packets, __ATOMIC_RELAXED), "tx_packets",
                  (json_int_t)__atomic_load_n(&n->tx_packets, __ATOMIC_RELAXED), "rx_dropped",
                  (json_int_t)__atomic_load_n(&n->rx_dropped, __ATOMIC_RELAXED));
    if (j && needs_reset)
        json_object_set_new(j, "broken", json_string(why));
    return j;
}

struct net_saved {
    uint32_t version;
    uint8_t mac[6], pad[2];
};

int virtio_net_save(struct virtio_net *n, struct state_writer *w)
{
    struct net_saved s = {.version = 1};
    memcpy(s.mac, n->cfg.mac, 6);
    state_put(w, STATE_TAG('V', 'N', 'E', 'T'), 0, &s, sizeof(s));
    return virtio_pci_save(n->vp, w, 1);
}

/* The MAC may differ (vm.conf edited while suspended): the guest keeps the one it read, and
 * slirp learns it from the guest's frames, so the record's is only checked for shape. A state
 * saved before the VM had a card (by an older vmws, or with [net] off) has no record: the guest
 * never saw the card, which is then reset, as at power-on. */
int virtio_net_load(struct virtio_net *n, const struct state_reader *r)
{
    struct net_saved s;
    rx_drop_all(n); /* frames for the guest as it was before the load */
    if (!state_get(r, STATE_TAG('V', 'N', 'E', 'T'), 0)) {
        virtio_pci_reset(n->vp);
        return 0;
    }
    if (state_get_exact(r, STATE_TAG('V', 'N', 'E', 'T'), 0, &s, sizeof(s)) < 0 || s.version != 1)
        return -EINVAL;
    return virtio_pci_load(n->vp, r, 1);
}
