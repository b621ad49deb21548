/* virtio-pci modern transport (see virtio_pci.h). BAR 0 (64-bit memory, 16 KiB) holds the
 * common config at 0x0000, the ISR at 0x1000, the device config at 0x2000 and the queue
 * notify addresses at 0x3000 + 4 * queue. A notify write is caught by KVM_IOEVENTFD (or, if
 * that fails or the guest writes another width, by the MMIO handler, which signals the same
 * eventfd) and wakes the I/O thread. Two locks: `lock` guards the registers and the rings and is
 * only ever held briefly (a vCPU's BAR access, a status query, a pop or a push); `serve_lock`
 * makes one thread at a time the server of the queues and is held across a request, which runs
 * with `lock` released - so a request whose storage hangs holds up neither a vCPU nor the
 * control plane (issue 14, finding 10). A quiesce waits, within its bound, for the request in
 * flight; a reset or a state load while one is in flight drops its used entry. */
#include "core/virtio/virtio_pci.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "core/util/deadline.h"
#include "core/util/log.h"

#define BAR_SIZE 0x4000
#define OFF_COMMON 0x0000
#define OFF_ISR 0x1000
#define OFF_DEVICE 0x2000
#define OFF_NOTIFY 0x3000
#define NOTIFY_MULT 4
#define COMMON_LEN 0x38

/* Per-queue state the guest programs; saved as is. */
struct vq_regs {
    uint16_t size, enabled;
    uint16_t last_avail, used_idx;
    uint64_t desc, driver, device;
};

/* Saved as 'VIOP'. */
struct vp_regs {
    uint32_t version;
    uint8_t status, isr, broken, pad;
    uint32_t dfselect, gfselect;
    uint16_t queue_select, config_generation;
    uint32_t pad2;
    uint64_t driver_features;
    struct vq_regs q[VIRTIO_MAX_QUEUES];
};

struct vq {
    struct virtq ring; /* mapped while enabled and not broken */
    int kick_fd;
    uint64_t ioevent_addr; /* registered KVM_IOEVENTFD address, 0 = none */
};

struct virtio_pci {
    struct pci_device pci;
    struct machine *m;
    struct pci_bus *bus;
    const struct virtio_device_ops *ops;
    void *opaque;
    pthread_mutex_t lock;       /* short holds only: never across a request */
    pthread_mutex_t serve_lock; /* the queues' one server (I/O thread or serve_pending) */
    pthread_cond_t idle;        /* in_flight went false, or the I/O thread ended */
    bool in_flight;             /* a chain is with handle_chain, lock released */
    uint32_t generation;        /* bumped by a reset or a load: an in-flight chain is dropped */
    uint64_t chain_features;    /* the driver's features when the chain in flight was popped */
    struct vp_regs r;
    struct vq q[VIRTIO_MAX_QUEUES];
    uint64_t bar_base; /* 0 = not decoding */
    bool irq_level;
    int ctl_fd; /* wakes the I/O thread: stop, unquiesce, state loaded */
    pthread_t thread;
    bool thread_started, stopping, thread_done;
    unsigned quiesced; /* quiesce calls not yet undone: they nest */
    char broken_reason[200];
    uint64_t requests, kicks;
};

/* ---- interrupts and the broken state ---- */

static void update_irq_locked(struct virtio_pci *vp)
{
    bool intx_off = pci_cfg_byte(&vp->pci, 0x05) & 0x04;
    bool level = vp->r.isr && !intx_off;
    if (level != vp->irq_level) {
        vp->irq_level = level;
        pci_set_intx(vp->bus, &vp->pci, level);
    }
}

static void mark_broken_locked(struct virtio_pci *vp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mark_broken_locked(struct virtio_pci *vp, const char *fmt, ...)
{
    if (vp->r.broken)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vp->broken_reason, sizeof(vp->broken_reason), fmt, ap);
    va_end(ap);
    vp->r.broken = 1;
    vp->r.status |= VIRTIO_STATUS_NEEDS_RESET;
    vp->r.config_generation++;
    vp->r.isr |= 2; /* configuration change */
    update_irq_locked(vp);
    vmm_log_repeating("%s: device needs reset: %s; it serves no requests until the guest resets it",
                      vp->ops->name, vp->broken_reason);
}

/* Maps queue Q's rings (virtqueue.c checks them); false (device marked broken) if bad. */
static bool vq_map_locked(struct virtio_pci *vp, unsigned q)
{
    struct vq_regs *qr = &vp->r.q[q];
    char reason[200];
    bool indirect = vp->r.driver_features >> VIRTIO_F_INDIRECT_DESC & 1;
    if (virtq_map(&vp->q[q].ring, vp->m->mem, qr->desc, qr->driver, qr->device, qr->size, indirect,
                  reason, sizeof(reason)) == 0)
        return true;
    mark_broken_locked(vp, "queue %u: %s", q, reason);
    return false;
}

/* ---- the I/O thread ---- */

/* Serves every chain queue Q has made available; true if any completed. Called with both
 * locks held; LOCK is released while the device handles each chain (its request may take as
 * long as its storage does), and the chain's result is pushed only if nothing reset the device
 * or loaded a state meanwhile (the rings it came from are gone then). */
static bool vq_serve_locked(struct virtio_pci *vp, unsigned q)
{
    struct vq_regs *qr = &vp->r.q[q];
    struct virtq *ring = &vp->q[q].ring;
    bool any = false;
    static __thread struct virtq_chain chain;
    while (!vp->r.broken && !vp->quiesced && !vp->stopping && qr->enabled && ring->desc &&
           (vp->r.status & VIRTIO_STATUS_DRIVER_OK)) {
        char reason[160];
        int r = virtq_pop(ring, vp->m->mem, qr->last_avail, &chain, reason, sizeof(reason));
        if (r == 0)
            break;
        int written = -1;
        if (r > 0) {
            uint32_t gen = vp->generation;
            vp->chain_features = vp->r.driver_features;
            vp->in_flight = true;
            pthread_mutex_unlock(&vp->lock);
            written = vp->ops->handle_chain(vp->opaque, q, &chain, reason, sizeof(reason));
            pthread_mutex_lock(&vp->lock);
            vp->in_flight = false;
            pthread_cond_broadcast(&vp->idle);
            /* Reset or loaded meanwhile: the chain is not ours. Stopping: the machine (its bus,
             * its interrupt lines) may be gone already (a destroy that gave up waiting). */
            if (gen != vp->generation || vp->stopping)
                break;
        }
        if (written == VIRTIO_CHAIN_LATER)
            break;
        if (written < 0 && written != VIRTIO_CHAIN_HELD) {
            mark_broken_locked(vp, "queue %u: malformed chain: %s", q, reason);
            break;
        }
        qr->last_avail++;
        __atomic_add_fetch(&vp->requests, 1, __ATOMIC_RELAXED);
        if (written != VIRTIO_CHAIN_HELD) {
            virtq_push(ring, vp->m->mem, &qr->used_idx, chain.head, (uint32_t)written);
            any = true;
        }
        pthread_mutex_unlock(&vp->lock); /* let a waiting vCPU in between two requests */
        pthread_mutex_lock(&vp->lock);
    }
    return any;
}

static void serve_all_locked(struct virtio_pci *vp)
{
    bool any = false;
    for (unsigned q = 0; q < vp->ops->num_queues; q++)
        any |= vq_serve_locked(vp, q);
    if (any && !vp->stopping) {
        vp->r.isr |= 1;
        update_irq_locked(vp);
    }
}

/* Serves the queues as their one server: serve_lock, then lock. */
static void serve_all(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->serve_lock);
    pthread_mutex_lock(&vp->lock);
    if (!vp->stopping)
        serve_all_locked(vp);
    pthread_mutex_unlock(&vp->lock);
    pthread_mutex_unlock(&vp->serve_lock);
}

void virtio_pci_serve_pending(struct virtio_pci *vp)
{
    serve_all(vp);
}

static void *io_thread(void *arg)
{
    struct virtio_pci *vp = arg;
    pthread_setname_np(pthread_self(), "vmws-virtio");
    struct pollfd pfd[VIRTIO_MAX_QUEUES + 1];
    unsigned n = vp->ops->num_queues;
    for (unsigned q = 0; q < n; q++)
        pfd[q] = (struct pollfd){.fd = vp->q[q].kick_fd, .events = POLLIN};
    pfd[n] = (struct pollfd){.fd = vp->ctl_fd, .events = POLLIN};
    for (;;) {
        if (poll(pfd, n + 1, -1) < 0 && errno != EINTR)
            break;
        uint64_t v;
        for (unsigned i = 0; i <= n; i++)
            if (pfd[i].revents & POLLIN && read(pfd[i].fd, &v, sizeof(v)) == sizeof(v) && i < n)
                __atomic_add_fetch(&vp->kicks, 1, __ATOMIC_RELAXED);
        serve_all(vp);
        pthread_mutex_lock(&vp->lock);
        bool stop = vp->stopping;
        pthread_mutex_unlock(&vp->lock);
        if (stop)
            break;
    }
    pthread_mutex_lock(&vp->lock);
    vp->thread_done = true; /* virtio_pci_destroy waits for this, within a bound */
    pthread_cond_broadcast(&vp->idle);
    pthread_mutex_unlock(&vp->lock);
    return NULL;
}

static void wake_thread(struct virtio_pci *vp)
{
    uint64_t one = 1;
    ssize_t w = write(vp->ctl_fd, &one, sizeof(one));
    (void)w;
}

void virtio_pci_wake(struct virtio_pci *vp)
{
    wake_thread(vp);
}

/* ---- registers ---- */

static void reset_locked(struct virtio_pci *vp)
{
    vp->generation++; /* a chain in flight completes into the old rings' buffers, unused */
    memset(&vp->r, 0, sizeof(vp->r));
    vp->r.version = 1;
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        vp->r.q[q].size = q < vp->ops->num_queues ? VIRTQ_MAX_SIZE : 0;
        virtq_unmap(&vp->q[q].ring);
    }
    vp->broken_reason[0] = '\0';
    update_irq_locked(vp);
    if (vp->ops->reset)
        vp->ops->reset(vp->opaque);
}

static uint64_t device_features(const struct virtio_pci *vp)
{
    return vp->ops->features | 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_INDIRECT_DESC;
}

static void status_write_locked(struct virtio_pci *vp, uint8_t v)
{
    if (v == 0) {
        reset_locked(vp);
        return;
    }
    if ((v & VIRTIO_STATUS_FEATURES_OK) && !(vp->r.status & VIRTIO_STATUS_FEATURES_OK)) {
        uint64_t f = vp->r.driver_features;
        if ((f & ~device_features(vp)) || !(f & 1ull << VIRTIO_F_VERSION_1))
            v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK; /* refused: the driver sees it unset */
    }
    vp->r.status = (uint8_t)(v | (vp->r.status & VIRTIO_STATUS_NEEDS_RESET));
    if (v & VIRTIO_STATUS_DRIVER_OK)
        wake_thread(vp);
}

static uint64_t common_read_locked(struct virtio_pci *vp, unsigned off)
{
    struct vq_regs *qr =
        vp->r.queue_select < vp->ops->num_queues ? &vp->r.q[vp->r.queue_select] : NULL;
    switch (off) {
    case 0x00:
        return vp->r.dfselect;
    case 0x04:
        return vp->r.dfselect < 2 ? (uint32_t)(device_features(vp) >> 32 * vp->r.dfselect) : 0;
    case 0x08:
        return vp->r.gfselect;
    case 0x0c:
        return vp->r.gfselect < 2 ? (uint32_t)(vp->r.driver_features >> 32 * vp->r.gfselect) : 0;
    case 0x10:
        return 0xffff; /* msix_config: no MSI-X */
    case 0x12:
        return vp->ops->num_queues;
    case 0x14:
        return vp->r.status;
    case 0x15:
        return vp->r.config_generation & 0xff;
    case 0x16:
        return vp->r.queue_select;
    case 0x18:
        return qr ? qr->size : 0;
    case 0x1a:
        return 0xffff; /* queue_msix_vector */
    case 0x1c:
        return qr ? qr->enabled : 0;
    case 0x1e:
        return vp->r.queue_select; /* queue_notify_off */
    case 0x20:
    case 0x24: /* a 64-bit field read whole or as two dwords */
        return qr ? qr->desc >> (off & 4 ? 32 : 0) : 0;
    case 0x28:
    case 0x2c:
        return qr ? qr->driver >> (off & 4 ? 32 : 0) : 0;
    case 0x30:
    case 0x34:
        return qr ? qr->device >> (off & 4 ? 32 : 0) : 0;
    default:
        return 0;
    }
}

static void common_write_locked(struct virtio_pci *vp, unsigned off, uint64_t v, unsigned len)
{
    struct vq_regs *qr =
        vp->r.queue_select < vp->ops->num_queues ? &vp->r.q[vp->r.queue_select] : NULL;
    bool queue_live = qr && qr->enabled;
    uint64_t *addr = NULL;
    switch (off) {
    case 0x00:
        vp->r.dfselect = (uint32_t)v;
        return;
    case 0x08:
        vp->r.gfselect = (uint32_t)v;
        return;
    case 0x0c:
        if (vp->r.gfselect < 2 && !(vp->r.status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned sh = 32 * vp->r.gfselect;
            vp->r.driver_features =
                (vp->r.driver_features & ~(0xffffffffull << sh)) | (v & 0xffffffffull) << sh;
        }
        return;
    case 0x14:
        status_write_locked(vp, (uint8_t)v);
        return;
    case 0x16:
        vp->r.queue_select = (uint16_t)v;
        return;
    case 0x18:
        if (qr && !queue_live) /* a power of two up to what we offer; checked at enable */
            qr->size = v > VIRTQ_MAX_SIZE ? VIRTQ_MAX_SIZE : (uint16_t)v;
        return;
    case 0x1c:
        if (qr && v == 1 && !queue_live) {
            qr->enabled = 1;
            qr->last_avail = qr->used_idx = 0;
            if (vq_map_locked(vp, vp->r.queue_select))
                wake_thread(vp);
        }
        return;
    case 0x20:
    case 0x24:
        addr = qr ? &qr->desc : NULL;
        break;
    case 0x28:
    case 0x2c:
        addr = qr ? &qr->driver : NULL;
        break;
    case 0x30:
    case 0x34:
        addr = qr ? &qr->device : NULL;
        break;
    default:
        return; /* read-only or unknown */
    }
    if (!addr || queue_live)
        return;
    if (len == 8) {
        *addr = v;
    } else {
        unsigned sh = off & 4 ? 32 : 0;
        *addr = (*addr & ~(0xffffffffull << sh)) | (v & 0xffffffffull) << sh;
    }
}

/* One access at OFF in BAR 0: from the MMIO handler or through the PCI_CFG window. */
static void bar_access_locked(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len,
                              bool is_write)
{
    uint64_t v = is_write ? io_data_get(data, len) : 0;
    if (off < OFF_COMMON + COMMON_LEN) {
        if (is_write)
            common_write_locked(vp, (unsigned)off, v, len);
        else
            v = common_read_locked(vp, (unsigned)off);
    } else if (off == OFF_ISR && !is_write) {
        v = vp->r.isr; /* read to clear: deasserts INTx */
        vp->r.isr = 0;
        update_irq_locked(vp);
    } else if (off >= OFF_DEVICE && off + len <= OFF_DEVICE + vp->ops->config_len) {
        if (!is_write)
            vp->ops->config_read(vp->opaque, (unsigned)(off - OFF_DEVICE), data, len);
        else if (vp->ops->config_write)
            vp->ops->config_write(vp->opaque, (unsigned)(off - OFF_DEVICE), data, len);
        return;
    } else if (off >= OFF_NOTIFY && off < OFF_NOTIFY + NOTIFY_MULT * vp->ops->num_queues) {
        if (is_write) { /* a width the ioeventfd did not match, or no ioeventfd */
            uint64_t one = 1;
            ssize_t w = write(vp->q[(off - OFF_NOTIFY) / NOTIFY_MULT].kick_fd, &one, 8);
            (void)w;
        }
    }
    if (!is_write)
        io_data_put(data, len, v);
}

static void bar_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct virtio_pci *vp = opaque;
    pthread_mutex_lock(&vp->lock);
    bar_access_locked(vp, offset, data, len, is_write);
    pthread_mutex_unlock(&vp->lock);
}

/* ---- PCI: capabilities, BAR moves, ioeventfds ---- */

static void ioeventfd_set(struct virtio_pci *vp, unsigned q, uint64_t addr)
{
    struct vq *v = &vp->q[q];
    if (v->ioevent_addr) {
        struct kvm_ioeventfd io = {.addr = v->ioevent_addr,
                                   .len = 2,
                                   .fd = v->kick_fd,
                                   .flags = KVM_IOEVENTFD_FLAG_DEASSIGN};
        ioctl(vp->m->vm_fd, KVM_IOEVENTFD, &io);
        v->ioevent_addr = 0;
    }
    if (!addr)
        return;
    struct kvm_ioeventfd io = {.addr = addr, .len = 2, .fd = v->kick_fd};
    if (ioctl(vp->m->vm_fd, KVM_IOEVENTFD, &io) == 0)
        v->ioevent_addr = addr;
    else
        vmm_log("%s: KVM_IOEVENTFD at 0x%llx: %s; notifies take the MMIO exit path", vp->ops->name,
                (unsigned long long)addr, strerror(errno));
}

static void bar_changed(struct pci_device *d, int bar, uint64_t old_addr, uint64_t new_addr,
                        int enabled)
{
    struct virtio_pci *vp = d->opaque;
    if (bar != 0)
        return;
    pthread_mutex_lock(&vp->lock);
    uint64_t base = enabled ? new_addr : 0;
    int r = 0;
    if (old_addr && vp->bar_base == old_addr)
        r = iobus_move(&vp->m->mmio, old_addr, vp, base, base ? BAR_SIZE : 0);
    else if (base)
        r = iobus_register(&vp->m->mmio, base, BAR_SIZE, bar_io, vp);
    vp->bar_base = r == 0 ? base : 0;
    for (unsigned q = 0; q < vp->ops->num_queues; q++)
        ioeventfd_set(vp, q, vp->bar_base ? vp->bar_base + OFF_NOTIFY + NOTIFY_MULT * q : 0);
    pthread_mutex_unlock(&vp->lock);
    if (r < 0)
        vmm_log_repeating("%s: cannot decode BAR 0 at 0x%llx: %s", vp->ops->name,
                          (unsigned long long)base, strerror(-r));
}

/* VIRTIO_PCI_CAP_PCI_CFG (virtio 1.x 4.1.4.9), BAR 0 through config space: the driver writes
 * cap.bar, cap.offset and cap.length into the capability (plain writable config bytes), and
 * each read or write of pci_cfg_data (the dword after it) becomes that access in the BAR,
 * served like an MMIO one. The three fields are the guest's: a BAR other than 0, a length
 * other than 1, 2 or 4, or an offset not a multiple of it or past the BAR, and the access is
 * ignored (a read sees zeroes). Called by the PCI bus, its lock held. */
#define CFG_CAP 0x84
#define CFG_CAP_LEN 20
#define CFG_CAP_DATA (CFG_CAP + 16)

static bool cfg_window_access(struct pci_device *d, unsigned off, uint8_t *data, uint32_t len,
                              bool is_write)
{
    if (off < CFG_CAP_DATA || off + len > CFG_CAP_DATA + 4)
        return false; /* not (all) in pci_cfg_data: the standard handling */
    struct virtio_pci *vp = d->opaque;
    uint8_t *window = &d->cfg[CFG_CAP_DATA];
    uint32_t bar_off, bar_len;
    memcpy(&bar_off, &d->cfg[CFG_CAP + 8], 4);
    memcpy(&bar_len, &d->cfg[CFG_CAP + 12], 4);
    bool valid = d->cfg[CFG_CAP + 4] == 0 && (bar_len == 1 || bar_len == 2 || bar_len == 4) &&
                 bar_off % bar_len == 0 && bar_off < BAR_SIZE;
    if (is_write)
        memcpy(window + (off - CFG_CAP_DATA), data, len);
    else
        memset(window, 0, 4);
    if (valid) {
        pthread_mutex_lock(&vp->lock);
        bar_access_locked(vp, bar_off, window, bar_len, is_write);
        pthread_mutex_unlock(&vp->lock);
    }
    if (!is_write)
        memcpy(data, window + (off - CFG_CAP_DATA), len);
    return true;
}

/* Writes one virtio_pci_cap at OFF (LEN bytes) and returns the offset after it. */
static unsigned put_cap(uint8_t *cfg, unsigned off, unsigned len, uint8_t type, uint32_t bar_off,
                        uint32_t bar_len, bool last)
{
    cfg[off] = 0x09; /* vendor specific */
    cfg[off + 1] = last ? 0 : (uint8_t)(off + len);
    cfg[off + 2] = (uint8_t)len;
    cfg[off + 3] = type;
    cfg[off + 4] = 0; /* BAR 0 */
    memcpy(&cfg[off + 8], &bar_off, 4);
    memcpy(&cfg[off + 12], &bar_len, 4);
    return off + len;
}

struct virtio_pci *virtio_pci_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const struct virtio_device_ops *ops, void *opaque)
{
    struct virtio_pci *vp = calloc(1, sizeof(*vp));
    if (!vp || ops->num_queues > VIRTIO_MAX_QUEUES) {
        free(vp);
        return NULL;
    }
    vp->m = m;
    vp->bus = bus;
    vp->ops = ops;
    vp->opaque = opaque;
    vp->ctl_fd = -1;
    pthread_mutex_init(&vp->lock, NULL);
    pthread_mutex_init(&vp->serve_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&vp->idle, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        vp->q[q].kick_fd = -1;
    reset_locked(vp);
    struct pci_device *d = &vp->pci;
    pci_device_init(d, 0x1af4, (uint16_t)(0x1040 + ops->device_id), ops->class_code, 1);
    d->cfg[0x2c] = 0xf4; /* subsystem 1af4:1100 */
    d->cfg[0x2d] = 0x1a;
    d->cfg[0x2e] = 0x00;
    d->cfg[0x2f] = 0x11;
    d->cfg[0x06] = 0x10; /* status: capabilities list */
    d->cfg[0x34] = 0x40;
    d->cfg[0x3d] = 1; /* INTA# */
    unsigned off = put_cap(d->cfg, 0x40, 16, 1, OFF_COMMON, COMMON_LEN, false);
    unsigned notify = off;
    off = put_cap(d->cfg, off, 20, 2, OFF_NOTIFY, NOTIFY_MULT * VIRTIO_MAX_QUEUES, false);
    uint32_t mult = NOTIFY_MULT;
    memcpy(&d->cfg[notify + 16], &mult, 4);
    off = put_cap(d->cfg, off, 16, 3, OFF_ISR, 4, false);
    off = put_cap(d->cfg, off, 16, 4, OFF_DEVICE, ops->config_len, false);
    put_cap(d->cfg, off, CFG_CAP_LEN, 5, 0, 0, true); /* at CFG_CAP: bar, offset, length 0 */
    memset(&d->wmask[CFG_CAP + 4], 0xff, 1);
    memset(&d->wmask[CFG_CAP + 8], 0xff, 8);
    d->cfg_access = cfg_window_access;
    d->bar_size[0] = BAR_SIZE;
    d->bar_changed = bar_changed;
    d->opaque = vp;
    bool ok = (vp->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0;
    for (unsigned q = 0; q < ops->num_queues && ok; q++)
        ok = (vp->q[q].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0;
    if (!ok || pci_register(bus, d, slot) < 0) {
        vmm_log("%s: cannot create the device at PCI slot %u", ops->name, slot);
        virtio_pci_destroy(vp);
        return NULL;
    }
    if (pthread_create(&vp->thread, NULL, io_thread, vp) != 0) {
        vmm_log("%s: cannot start its I/O thread", ops->name);
        virtio_pci_destroy(vp);
        return NULL;
    }
    vp->thread_started = true;
    return vp;
}

int virtio_pci_destroy(struct virtio_pci *vp)
{
    if (!vp)
        return 0;
    if (vp->thread_started) {
        pthread_mutex_lock(&vp->lock);
        vp->stopping = true;
        struct timespec deadline = deadline_in_ms(VIRTIO_PCI_STOP_TIMEOUT_MS);
        wake_thread(vp);
        while (!vp->thread_done &&
               pthread_cond_timedwait(&vp->idle, &vp->lock, &deadline) != ETIMEDOUT)
            ;
        bool done = vp->thread_done;
        pthread_mutex_unlock(&vp->lock);
        if (!done) { /* stuck in a request: leave it (and all it uses) to the process's exit */
            vmm_log("%s: a request is still in flight after %u s (is its storage hanging?); "
                    "the device is left behind unfreed",
                    vp->ops->name, VIRTIO_PCI_STOP_TIMEOUT_MS / 1000);
            return -EBUSY;
        }
        pthread_join(vp->thread, NULL);
    }
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        if (vp->q[q].ioevent_addr)
            ioeventfd_set(vp, q, 0);
        if (vp->q[q].kick_fd >= 0)
            close(vp->q[q].kick_fd);
    }
    if (vp->ctl_fd >= 0)
        close(vp->ctl_fd);
    pthread_mutex_destroy(&vp->lock);
    pthread_mutex_destroy(&vp->serve_lock);
    pthread_cond_destroy(&vp->idle);
    free(vp);
    return 0;
}

int virtio_pci_quiesce(struct virtio_pci *vp, unsigned timeout_ms, char *err, size_t errlen)
{
    struct timespec deadline = deadline_in_ms(timeout_ms);
    /* quiesced keeps the server from starting another chain; the one in flight, if any, is
     * waited for (its request runs without the lock, so the wait is on in_flight). */
    pthread_mutex_lock(&vp->lock);
    vp->quiesced++;
    while (vp->in_flight && pthread_cond_timedwait(&vp->idle, &vp->lock, &deadline) != ETIMEDOUT)
        ;
    bool busy = vp->in_flight;
    if (busy)
        vp->quiesced--;
    pthread_mutex_unlock(&vp->lock);
    if (busy) {
        snprintf(err, errlen,
                 "%s: a request is still in flight after %u ms (is its backend - the disk "
                 "image's storage, the network - hanging?); not saving a state that would lose it",
                 vp->ops->name, timeout_ms);
        return -ETIMEDOUT;
    }
    return 0;
}

void virtio_pci_unquiesce(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
    bool wake = vp->quiesced && --vp->quiesced == 0;
    pthread_mutex_unlock(&vp->lock);
    if (wake)
        wake_thread(vp); /* chains made available meanwhile */
}

void virtio_pci_reset(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
    reset_locked(vp);
    pthread_mutex_unlock(&vp->lock);
}

void virtio_pci_complete_held(struct virtio_pci *vp, unsigned queue, uint16_t head, uint32_t len)
{
    pthread_mutex_lock(&vp->lock);
    struct virtq *ring = queue < vp->ops->num_queues ? &vp->q[queue].ring : NULL;
    if (ring && ring->desc && !vp->r.broken && (vp->r.status & VIRTIO_STATUS_DRIVER_OK) &&
        head < ring->size) {
        virtq_push(ring, vp->m->mem, &vp->r.q[queue].used_idx, head, len);
        vp->r.isr |= 1;
        update_irq_locked(vp);
    }
    pthread_mutex_unlock(&vp->lock);
}

void virtio_pci_config_changed(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
    vp->r.config_generation++;
    if (vp->r.status & VIRTIO_STATUS_DRIVER_OK) {
        vp->r.isr |= 2;
        update_irq_locked(vp);
    }
    pthread_mutex_unlock(&vp->lock);
}

uint64_t virtio_pci_chain_features(const struct virtio_pci *vp)
{
    return vp->chain_features;
}

bool virtio_pci_driver_ok(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
    bool ok = (vp->r.status & VIRTIO_STATUS_DRIVER_OK) && !vp->r.broken;
    pthread_mutex_unlock(&vp->lock);
    return ok;
}

uint8_t virtio_pci_status(struct virtio_pci *vp, bool *needs_reset, char *why, size_t whylen)
{
    pthread_mutex_lock(&vp->lock);
    uint8_t s = vp->r.status;
    *needs_reset = vp->r.broken;
    snprintf(why, whylen, "%s", vp->broken_reason);
    pthread_mutex_unlock(&vp->lock);
    return s;
}

void virtio_pci_counters(struct virtio_pci *vp, uint64_t *requests, uint64_t *kicks)
{
    *requests = __atomic_load_n(&vp->requests, __ATOMIC_RELAXED);
    *kicks = __atomic_load_n(&vp->kicks, __ATOMIC_RELAXED);
}

int virtio_pci_save(struct virtio_pci *vp, struct state_writer *w, uint32_t instance)
{
    pthread_mutex_lock(&vp->lock);
    state_put(w, STATE_TAG('V', 'I', 'O', 'P'), instance, &vp->r, sizeof(vp->r));
    pthread_mutex_unlock(&vp->lock);
    return w->error;
}

int virtio_pci_load(struct virtio_pci *vp, const struct state_reader *rd, uint32_t instance)
{
    struct vp_regs regs;
    int r = state_get_exact(rd, STATE_TAG('V', 'I', 'O', 'P'), instance, &regs, sizeof(regs));
    if (r < 0)
        return r;
    if (regs.version != 1)
        return -EINVAL;
    pthread_mutex_lock(&vp->lock);
    vp->generation++; /* quiesced callers have none in flight; if one is, it is dropped */
    vp->r = regs;
    vp->r.broken = 0;
    for (unsigned q = 0; q < vp->ops->num_queues; q++) {
        virtq_unmap(&vp->q[q].ring);
        if (vp->r.q[q].enabled)
            vq_map_locked(vp, q); /* the same checks as at enable; marks broken if bad */
    }
    if (regs.broken && !vp->r.broken)
        mark_broken_locked(vp, "restored as broken");
    /* Drive the line to its restored level whatever we last told KVM. */
    vp->irq_level = vp->r.isr && !(pci_cfg_byte(&vp->pci, 0x05) & 0x04);
    pci_set_intx(vp->bus, &vp->pci, vp->irq_level);
    pthread_mutex_unlock(&vp->lock);
    wake_thread(vp);
    return 0;
}
