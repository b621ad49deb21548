/* Split virtqueues (virtio 1.x, 2.7): the host's view of one queue's three rings in guest RAM,
 * and the one place a guest's descriptor chains are checked before any device touches them.
 * A device sees a chain only as host segments that are entirely guest RAM, device-readable
 * ones first; everything the guest could get wrong comes back as a reason string instead. */
#ifndef VMWS_VIRTQUEUE_H
#define VMWS_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vm/guestmem.h"

#define VIRTQ_MAX_SIZE 128 /* queue size offered; also the bound on a chain's descriptors */

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* VIRTIO_F_INDIRECT_DESC (2.7.5.3): a descriptor may point at a table of descriptors. */
#define VIRTIO_F_INDIRECT_DESC 28

/* Host pointers to a mapped queue's rings; desc NULL = not mapped. */
struct virtq {
    uint16_t size;
    bool indirect;       /* the driver accepted VIRTIO_F_INDIRECT_DESC */
    uint64_t device_gpa; /* the used ring, for dirty marking */
    struct virtq_desc *desc;
    uint16_t *avail; /* flags, idx, ring[size] */
    uint16_t *used;  /* flags, idx, then {u32 id, u32 len}[size] */
};

/* One validated descriptor chain. */
struct virtq_seg {
    uint8_t *host;
    uint64_t gpa;
    uint32_t len;
    bool writable;
};
struct virtq_chain {
    uint16_t head;
    unsigned nseg, nreadable;
    uint64_t readable_len, writable_len;
    struct virtq_seg seg[VIRTQ_MAX_SIZE];
};

/* Maps the rings at DESC, DRIVER and DEVICE for SIZE entries: 0, or -1 with REASON if the size
 * is not a power of two up to VIRTQ_MAX_SIZE or a ring is misaligned or not all RAM. INDIRECT:
 * the driver accepted indirect descriptors. */
int virtq_map(struct virtq *q, struct guest_mem *mem, uint64_t desc, uint64_t driver,
              uint64_t device, uint16_t size, bool indirect, char *reason, size_t rlen);
void virtq_unmap(struct virtq *q);
/* The chain the driver made available at LAST_AVAIL: 1 with C filled, 0 if there is none yet,
 * -1 with REASON if the available index or the chain is malformed. Does not advance. */
int virtq_pop(struct virtq *q, struct guest_mem *mem, uint16_t last_avail, struct virtq_chain *c,
              char *reason, size_t rlen);
/* Returns chain HEAD with LEN bytes written to the used ring at *USED_IDX (then advanced) and
 * marks the ring dirty. */
void virtq_push(struct virtq *q, struct guest_mem *mem, uint16_t *used_idx, uint16_t head,
                uint32_t len);

/* Copies LEN bytes at offset OFF of the chain's readable (or writable) part; -EINVAL if the
 * part is shorter. Writes mark the guest pages dirty. */
int virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len);
int virtq_chain_write(struct guest_mem *mem, const struct virtq_chain *c, uint64_t off,
                      const void *src, size_t len);

#endif
