/* virtio-console with one multiport port (see virtio_console.h). The handshake, as Linux's
 * virtio_console driver runs it: the driver sends DEVICE_READY; the device answers DEVICE_ADD for
 * port 0; the driver sends PORT_READY for it; the device answers PORT_NAME (the name after the
 * 8-byte header) and PORT_OPEN 1 (the host end is connected). The driver then sends PORT_OPEN 1
 * or 0 as programs in the guest open and close the port. Control messages for the guest wait in
 * a short queue until the driver gives a receive buffer; port bytes likewise. Locks: the
 * transport's, then the device's own; never the other way. */
#include "core/virtio/virtio_console.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util/bytes.h"
#include "core/util/log.h"
#include "core/virtio/virtio_pci.h"

#define VIRTIO_CONSOLE_F_MULTIPORT 1
#define Q_PORT_RX 0
#define Q_PORT_TX 1
#define Q_CTL_RX 2
#define Q_CTL_TX 3
#define CTL_HDR 8 /* struct virtio_console_control: le32 id, le16 event, le16 value */
#define CTL_MAX 8 /* control messages waiting for the guest */

enum {
    EV_DEVICE_READY = 0,
    EV_DEVICE_ADD = 1,
    EV_DEVICE_REMOVE = 2,
    EV_PORT_READY = 3,
    EV_CONSOLE_PORT = 4,
    EV_RESIZE = 5,
    EV_PORT_OPEN = 6,
    EV_PORT_NAME = 7,
};

struct con_msg {
    uint32_t len;
    uint8_t b[CTL_HDR + VIRTIO_CONSOLE_NAME_MAX];
};

/* Saved as 'VCON'. */
struct con_saved {
    uint32_t version;
    uint8_t guest_open, pad[3];
    uint32_t nctl;
    struct con_msg ctl[CTL_MAX];
};

struct virtio_console {
    struct virtio_pci *vp;
    struct machine *m;
    const struct virtio_console_host *host;
    void *opaque;
    char name[VIRTIO_CONSOLE_NAME_MAX];
    uint8_t config[12]; /* cols, rows, max_nr_ports, emerg_wr */
    /* Under lock (chains are served without the transport lock, while a vCPU's reset holds it):
     * the handshake's state and the host's bytes for the guest. */
    pthread_mutex_t lock;
    struct con_saved s;
    bool open; /* a copy of s.guest_open */
    size_t out_len;
    uint8_t out[VIRTIO_CONSOLE_OUT_MAX];
    uint64_t rx_bytes, tx_bytes;
};

static void con_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
    struct virtio_console *vc = opaque;
    for (unsigned i = 0; i < len; i++)
        data[i] = off + i < sizeof(vc->config) ? vc->config[off + i] : 0;
}

static void ctl_queue_locked(struct virtio_console *vc, uint16_t event, uint16_t value,
                             const char *extra)
{
    if (vc->s.nctl == CTL_MAX) {
        vmm_log_repeating("virtio-console: %d control messages wait for the guest; dropping one",
                          CTL_MAX);
        return;
    }
    struct con_msg *msg = &vc->s.ctl[vc->s.nctl++];
    memset(msg, 0, sizeof(*msg));
    le_put32(msg->b, 0, 0); /* port 0 */
    le_put16(msg->b + 4, 0, event);
    le_put16(msg->b + 6, 0, value);
    size_t n = extra ? strlen(extra) : 0;
    if (n)
        memcpy(msg->b + CTL_HDR, extra, n);
    msg->len = (uint32_t)(CTL_HDR + n);
    virtio_pci_wake(vc->vp); /* the control receive queue may have been served already */
}

static void set_open(struct virtio_console *vc, bool open)
{
    pthread_mutex_lock(&vc->lock);
    bool was = vc->s.guest_open;
    vc->s.guest_open = open;
    vc->open = open;
    if (!open)
        vc->out_len = 0; /* the driver drops bytes for a port nobody has open */
    pthread_mutex_unlock(&vc->lock);
    if (was != open && vc->host->open)
        vc->host->open(vc->opaque, open);
}

/* A control message from the driver: exactly one 8-byte header, device-readable. */
static int ctl_tx_chain(struct virtio_console *vc, struct virtq_chain *c, char *reason, size_t rlen)
{
    uint8_t h[CTL_HDR];
    if (c->writable_len || c->readable_len != CTL_HDR || virtq_chain_read(c, 0, h, CTL_HDR) < 0) {
        snprintf(reason, rlen,
                 "control message at head %u has %llu readable bytes (%d expected) and %llu "
                 "device-writable (none allowed)",
                 c->head, (unsigned long long)c->readable_len, CTL_HDR,
                 (unsigned long long)c->writable_len);
        return -1;
    }
    uint32_t id = le_get32(h, 0);
    uint16_t event = le_get16(h + 4, 0), value = le_get16(h + 6, 0);
    switch (event) {
    case EV_DEVICE_READY:
        if (value == 1) {
            pthread_mutex_lock(&vc->lock);
            ctl_queue_locked(vc, EV_DEVICE_ADD, 0, NULL);
            pthread_mutex_unlock(&vc->lock);
        } else
            vmm_log_repeating("virtio-console: the guest's driver failed to set up the device");
        return 0;
    case EV_PORT_READY:
    case EV_PORT_OPEN:
        if (id != 0) {
            snprintf(reason, rlen, "control event %u names port %u; the device has only port 0",
                     event, id);
            return -1;
        }
        if (event == EV_PORT_OPEN) {
            set_open(vc, value != 0);
        } else if (value == 1) {
            pthread_mutex_lock(&vc->lock);
            ctl_queue_locked(vc, EV_PORT_NAME, 1, vc->name);
            ctl_queue_locked(vc, EV_PORT_OPEN, 1, NULL); /* the host end is connected */
            pthread_mutex_unlock(&vc->lock);
        }
        return 0;
    default:
        snprintf(reason, rlen, "control event %u (id %u, value %u) is not one a driver sends",
                 event, id, value);
        return -1;
    }
}

/* A buffer for a control message to the driver: device-writable only. */
static int ctl_rx_chain(struct virtio_console *vc, struct virtq_chain *c, char *reason, size_t rlen)
{
    if (c->readable_len) {
        snprintf(reason, rlen, "control receive buffer at head %u has %llu device-readable bytes",
                 c->head, (unsigned long long)c->readable_len);
        return -1;
    }
    pthread_mutex_lock(&vc->lock);
    int written = VIRTIO_CHAIN_LATER;
    struct con_msg *msg = &vc->s.ctl[0];
    if (vc->s.nctl && c->writable_len < msg->len) {
        snprintf(reason, rlen, "control receive buffer at head %u holds %llu bytes (%u needed)",
                 c->head, (unsigned long long)c->writable_len, msg->len);
        written = -1;
    } else if (vc->s.nctl) {
        virtq_chain_write(vc->m->mem, c, 0, msg->b, msg->len);
        written = (int)msg->len;
        memmove(&vc->s.ctl[0], &vc->s.ctl[1], --vc->s.nctl * sizeof(vc->s.ctl[0]));
    }
    pthread_mutex_unlock(&vc->lock);
    return written;
}

static int port_rx_chain(struct virtio_console *vc, struct virtq_chain *c, char *reason,
                         size_t rlen)
{
    if (c->readable_len || !c->writable_len) {
        snprintf(reason, rlen,
                 "port receive buffer at head %u has %llu device-readable bytes and %llu writable",
                 c->head, (unsigned long long)c->readable_len, (unsigned long long)c->writable_len);
        return -1;
    }
    pthread_mutex_lock(&vc->lock);
    size_t n = vc->out_len < c->writable_len ? vc->out_len : (size_t)c->writable_len;
    if (n) {
        virtq_chain_write(vc->m->mem, c, 0, vc->out, n);
        memmove(vc->out, vc->out + n, vc->out_len - n);
        vc->out_len -= n;
        vc->rx_bytes += n;
    }
    pthread_mutex_unlock(&vc->lock);
    return n ? (int)n : VIRTIO_CHAIN_LATER;
}

static int port_tx_chain(struct virtio_console *vc, struct virtq_chain *c, char *reason,
                         size_t rlen)
{
    if (c->writable_len) {
        snprintf(reason, rlen, "port transmit chain at head %u has %llu device-writable bytes",
                 c->head, (unsigned long long)c->writable_len);
        return -1;
    }
    for (unsigned i = 0; i < c->nreadable; i++)
        if (vc->host->data)
            vc->host->data(vc->opaque, c->seg[i].host, c->seg[i].len);
    pthread_mutex_lock(&vc->lock);
    vc->tx_bytes += c->readable_len;
    pthread_mutex_unlock(&vc->lock);
    return 0;
}

static int con_handle_chain(void *opaque, unsigned queue, struct virtq_chain *c, char *reason,
                            size_t rlen)
{
    struct virtio_console *vc = opaque;
    switch (queue) {
    case Q_PORT_RX:
        return port_rx_chain(vc, c, reason, rlen);
    case Q_PORT_TX:
        return port_tx_chain(vc, c, reason, rlen);
    case Q_CTL_RX:
        return ctl_rx_chain(vc, c, reason, rlen);
    default:
        return ctl_tx_chain(vc, c, reason, rlen);
    }
}

/* The driver reset the device (or the device broke and the guest reset it): the handshake
 * starts over and the port is closed. */
static void con_reset(void *opaque)
{
    struct virtio_console *vc = opaque;
    pthread_mutex_lock(&vc->lock);
    vc->s.nctl = 0;
    pthread_mutex_unlock(&vc->lock);
    set_open(vc, false);
}

static const struct virtio_device_ops con_ops = {
    .device_id = 3,
    .class_code = 0x078000, /* communication, other */
    .features = 1ull << VIRTIO_CONSOLE_F_MULTIPORT,
    .num_queues = 4,
    .config_len = 12,
    .name = "virtio-console",
    .config_read = con_config_read,
    .handle_chain = con_handle_chain,
    .reset = con_reset,
};

struct virtio_console *virtio_console_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                             const char *name, const struct virtio_console_host *h,
                                             void *opaque)
{
    struct virtio_console *vc = calloc(1, sizeof(*vc));
    if (!vc || strlen(name) >= VIRTIO_CONSOLE_NAME_MAX) {
        vmm_log("virtio-console: out of memory, or port name '%s' too long", name);
        free(vc);
        return NULL;
    }
    vc->m = m;
    vc->host = h;
    vc->opaque = opaque;
    vc->s.version = 1;
    snprintf(vc->name, sizeof(vc->name), "%s", name);
    pthread_mutex_init(&vc->lock, NULL);
    le_put32(vc->config + 4, 0, 1); /* max_nr_ports */
    vc->vp = virtio_pci_create(m, bus, slot, &con_ops, vc);
    if (!vc->vp) {
        pthread_mutex_destroy(&vc->lock);
        free(vc);
        return NULL;
    }
    vmm_log("virtio-console: port '%s' at PCI slot %u", name, slot);
    return vc;
}

void virtio_console_destroy(struct virtio_console *vc)
{
    if (!vc)
        return;
    virtio_pci_destroy(vc->vp);
    set_open(vc, false);
    pthread_mutex_destroy(&vc->lock);
    free(vc);
}

int virtio_console_write(struct virtio_console *vc, const void *buf, size_t len)
{
    pthread_mutex_lock(&vc->lock);
    int r = !vc->open ? -ENOTCONN : len > sizeof(vc->out) - vc->out_len ? -EAGAIN : 0;
    if (r == 0) {
        memcpy(vc->out + vc->out_len, buf, len);
        vc->out_len += len;
    }
    pthread_mutex_unlock(&vc->lock);
    if (r == 0)
        virtio_pci_wake(vc->vp);
    return r;
}

void virtio_console_flush(struct virtio_console *vc)
{
    pthread_mutex_lock(&vc->lock);
    vc->out_len = 0;
    pthread_mutex_unlock(&vc->lock);
}

bool virtio_console_guest_open(struct virtio_console *vc)
{
    pthread_mutex_lock(&vc->lock);
    bool open = vc->open;
    pthread_mutex_unlock(&vc->lock);
    return open;
}

int virtio_console_quiesce(struct virtio_console *vc, unsigned timeout_ms, char *err, size_t errlen)
{
    return virtio_pci_quiesce(vc->vp, timeout_ms, err, errlen);
}

void virtio_console_resume(struct virtio_console *vc)
{
    virtio_pci_unquiesce(vc->vp);
}

json_t *virtio_console_status_json(struct virtio_console *vc)
{
    bool needs_reset;
    char why[200];
    uint8_t status = virtio_pci_status(vc->vp, &needs_reset, why, sizeof(why));
    pthread_mutex_lock(&vc->lock);
    json_t *j = json_pack("{s:s, s:i, s:b, s:b, s:I, s:I}", "name", vc->name, "status", (int)status,
                          "needs_reset", needs_reset, "guest_open", vc->open, "rx_bytes",
                          (json_int_t)vc->rx_bytes, "tx_bytes", (json_int_t)vc->tx_bytes);
    pthread_mutex_unlock(&vc->lock);
    if (j && needs_reset)
        json_object_set_new(j, "broken", json_string(why));
    return j;
}

#define TRANSPORT_INSTANCE VIRTIO_CONSOLE_PCI_SLOT /* its 'VIOP' record */

/* Called with the device quiesced (its I/O thread serves nothing). */
int virtio_console_save(struct virtio_console *vc, struct state_writer *w)
{
    pthread_mutex_lock(&vc->lock);
    state_put(w, STATE_TAG('V', 'C', 'O', 'N'), 0, &vc->s, sizeof(vc->s));
    pthread_mutex_unlock(&vc->lock);
    return virtio_pci_save(vc->vp, w, TRANSPORT_INSTANCE);
}

int virtio_console_load(struct virtio_console *vc, const struct state_reader *r)
{
    struct con_saved s;
    virtio_console_flush(vc);
    if (!state_get(r, STATE_TAG('V', 'C', 'O', 'N'), 0)) {
        virtio_pci_reset(vc->vp);
        return 0;
    }
    if (state_get_exact(r, STATE_TAG('V', 'C', 'O', 'N'), 0, &s, sizeof(s)) < 0 || s.version != 1 ||
        s.nctl > CTL_MAX)
        return -EINVAL;
    for (unsigned i = 0; i < s.nctl; i++)
        if (s.ctl[i].len < CTL_HDR || s.ctl[i].len > sizeof(s.ctl[i].b))
            return -EINVAL;
    int rc = virtio_pci_load(vc->vp, r, TRANSPORT_INSTANCE);
    if (rc == 0) {
        pthread_mutex_lock(&vc->lock);
        vc->s.nctl = s.nctl;
        memcpy(vc->s.ctl, s.ctl, sizeof(s.ctl));
        pthread_mutex_unlock(&vc->lock);
        set_open(vc, s.guest_open != 0);
    }
    return rc;
}
