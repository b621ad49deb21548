/* Split virtqueues (see virtqueue.h). The checks a malformed chain fails, in order: the
 * available index more than a queue ahead, a descriptor index outside its table, more than
 * VIRTQ_MAX_SIZE descriptors in all (a loop), an indirect descriptor the driver did not
 * negotiate, one with NEXT too, one inside an indirect table, or one whose table is empty, not
 * whole descriptors, longer than VIRTQ_MAX_SIZE or not guest RAM; a buffer not entirely guest
 * RAM; a device-readable buffer after a device-writable one. */
#include "core/virtio/virtqueue.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4

int virtq_map(struct virtq *q, struct guest_mem *mem, uint64_t desc, uint64_t driver,
              uint64_t device, uint16_t size, bool indirect, char *reason, size_t rlen)
{
    uint64_t n = size;
    virtq_unmap(q);
    struct virtq_desc *d = guest_mem_ptr(mem, desc, 16 * n);
    uint16_t *avail = guest_mem_ptr(mem, driver, 6 + 2 * n);
    uint16_t *used = guest_mem_ptr(mem, device, 6 + 8 * n);
    bool aligned = !(desc & 15) && !(driver & 1) && !(device & 3);
    if (!d || !avail || !used || !aligned || !n || (n & (n - 1)) || n > VIRTQ_MAX_SIZE) {
        snprintf(reason, rlen,
                 "rings (desc 0x%llx, driver 0x%llx, device 0x%llx, size %u) are not aligned "
                 "RAM of a power-of-two size",
                 (unsigned long long)desc, (unsigned long long)driver, (unsigned long long)device,
                 size);
        return -1;
    }
    *q = (struct virtq){size, indirect, device, d, avail, used};
    return 0;
}

void virtq_unmap(struct virtq *q)
{
    memset(q, 0, sizeof(*q));
}

int virtq_pop(struct virtq *q, struct guest_mem *mem, uint16_t last_avail, struct virtq_chain *c,
              char *reason, size_t rlen)
{
    uint16_t avail_idx = __atomic_load_n(&q->avail[1], __ATOMIC_ACQUIRE);
    if (avail_idx == last_avail)
        return 0;
    if ((uint16_t)(avail_idx - last_avail) > q->size) {
        snprintf(reason, rlen, "available index %u is %u ahead of %u (size %u)", avail_idx,
                 (uint16_t)(avail_idx - last_avail), last_avail, q->size);
        return -1;
    }
    uint16_t head = q->avail[2 + last_avail % q->size];
    memset(c, 0, offsetof(struct virtq_chain, seg));
    c->head = head;
    const uint8_t *table = (const uint8_t *)q->desc; /* the ring's table, or an indirect one */
    uint32_t tsize = q->size;
    bool in_indirect = false;
    for (uint32_t i = head;;) {
        if (i >= tsize) {
            snprintf(reason, rlen, "descriptor index %u outside the %stable of %u", i,
                     in_indirect ? "indirect " : "", tsize);
            return -1;
        }
        if (c->nseg == VIRTQ_MAX_SIZE) {
            snprintf(reason, rlen, "chain at head %u longer than the queue (a loop?)", head);
            return -1;
        }
        struct virtq_desc d;
        memcpy(&d, table + 16 * i, sizeof(d));
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            const char *bad = !q->indirect                    ? "the feature was not negotiated"
                              : in_indirect                   ? "inside an indirect table"
                              : (d.flags & VIRTQ_DESC_F_NEXT) ? "with NEXT set too"
                              : (!d.len || d.len % 16 || d.len / 16 > VIRTQ_MAX_SIZE)
                                  ? "table is not 1-128 whole descriptors"
                                  : NULL;
            const uint8_t *t = bad ? NULL : guest_mem_ptr(mem, d.addr, d.len);
            if (!t) {
                snprintf(reason, rlen, "indirect descriptor %u (%u bytes at 0x%llx): %s", i, d.len,
                         (unsigned long long)d.addr, bad ? bad : "table is not guest RAM");
                return -1;
            }
            table = t;
            tsize = d.len / 16;
            in_indirect = true;
            i = 0;
            continue;
        }
        bool w = d.flags & VIRTQ_DESC_F_WRITE;
        uint8_t *host = guest_mem_ptr(mem, d.addr, d.len);
        if (!host) {
            snprintf(reason, rlen, "descriptor %u: buffer 0x%llx+%u is not guest RAM", i,
                     (unsigned long long)d.addr, d.len);
            return -1;
        }
        if (!w && c->writable_len) {
            snprintf(reason, rlen, "descriptor %u: device-readable after device-writable", i);
            return -1;
        }
        c->seg[c->nseg++] = (struct virtq_seg){host, d.addr, d.len, w};
        if (w) {
            c->writable_len += d.len;
        } else {
            c->readable_len += d.len;
            c->nreadable++;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 1;
        i = d.next;
    }
}

void virtq_push(struct virtq *q, struct guest_mem *mem, uint16_t *used_idx, uint16_t head,
                uint32_t len)
{
    uint32_t *elem = (uint32_t *)(q->used + 2) + 2 * (*used_idx % q->size);
    elem[0] = head;
    elem[1] = len;
    (*used_idx)++;
    __atomic_store_n(&q->used[1], *used_idx, __ATOMIC_RELEASE);
    guest_mem_mark_dirty(mem, q->device_gpa, 6 + 8ull * q->size);
}

static int chain_copy(struct guest_mem *mem, const struct virtq_chain *c, bool writable,
                      uint64_t off, uint8_t *buf, size_t len)
{
    uint64_t part = writable ? c->writable_len : c->readable_len;
    if (off > part || len > part - off)
        return -EINVAL;
    unsigned first = writable ? c->nreadable : 0, end = writable ? c->nseg : c->nreadable;
    for (unsigned s = first; s < end && len; s++) {
        const struct virtq_seg *sg = &c->seg[s];
        if (off >= sg->len) {
            off -= sg->len;
            continue;
        }
        size_t n = sg->len - off < len ? sg->len - off : len;
        if (writable) {
            memcpy(sg->host + off, buf, n);
            guest_mem_mark_dirty(mem, sg->gpa + off, n);
        } else {
            memcpy(buf, sg->host + off, n);
        }
        buf += n;
        len -= n;
        off = 0;
    }
    return 0;
}

int virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len)
{
    return chain_copy(NULL, c, false, off, dst, len);
}

int virtq_chain_write(struct guest_mem *mem, const struct virtq_chain *c, uint64_t off,
                      const void *src, size_t len)
{
    return chain_copy(mem, c, true, off, (uint8_t *)src, len);
}
