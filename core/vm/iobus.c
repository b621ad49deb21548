/* Address-range dispatch for port I/O and MMIO exits (see iobus.h). A handful of ranges, so a
 * linear scan under a read lock is both simplest and fast enough; registration is rare. */
#include "core/vm/iobus.h"

#include <errno.h>
#include <string.h>

#include "core/util/log.h"

void iobus_init(struct iobus *bus, const char *name)
{
    memset(bus, 0, sizeof(*bus));
    bus->name = name;
    pthread_rwlock_init(&bus->lock, NULL);
}

void iobus_destroy(struct iobus *bus)
{
    pthread_rwlock_destroy(&bus->lock);
}

static bool overlaps(const struct io_range *r, uint64_t base, uint64_t len)
{
    return base < r->base + r->len && r->base < base + len;
}

static int insert_locked(struct iobus *bus, uint64_t base, uint64_t len, io_handler_fn fn,
                         void *opaque)
{
    if (len == 0 || base + len < base)
        return -EINVAL;
    for (int i = 0; i < bus->nranges; i++)
        if (overlaps(&bus->ranges[i], base, len))
            return -EEXIST;
    if (bus->nranges == IOBUS_MAX_RANGES)
        return -ENOSPC;
    bus->ranges[bus->nranges++] = (struct io_range){base, len, fn, opaque};
    return 0;
}

int iobus_register(struct iobus *bus, uint64_t base, uint64_t len, io_handler_fn fn, void *opaque)
{
    pthread_rwlock_wrlock(&bus->lock);
    int r = insert_locked(bus, base, len, fn, opaque);
    pthread_rwlock_unlock(&bus->lock);
    return r;
}

int iobus_move(struct iobus *bus, uint64_t old_base, void *opaque, uint64_t new_base, uint64_t len)
{
    int r = -ENOENT;
    pthread_rwlock_wrlock(&bus->lock);
    for (int i = 0; i < bus->nranges; i++) {
        struct io_range *rg = &bus->ranges[i];
        if (rg->base != old_base || rg->opaque != opaque)
            continue;
        io_handler_fn fn = rg->fn;
        *rg = bus->ranges[--bus->nranges];
        r = len ? insert_locked(bus, new_base, len, fn, opaque) : 0;
        break;
    }
    pthread_rwlock_unlock(&bus->lock);
    return r;
}

static void log_unclaimed(struct iobus *bus, uint64_t addr, uint32_t len, bool is_write)
{
    uint64_t key = strcmp(bus->name, "mmio") == 0 ? addr & ~0xfffULL : addr;
    pthread_rwlock_wrlock(&bus->lock);
    for (int i = 0; i < bus->nlogged; i++) {
        if (bus->logged[i] == key) {
            pthread_rwlock_unlock(&bus->lock);
            return;
        }
    }
    bool report = bus->nlogged < IOBUS_MAX_LOGGED;
    if (report)
        bus->logged[bus->nlogged++] = key;
    pthread_rwlock_unlock(&bus->lock);
    if (report)
        vmm_log("guest %s %u byte%s %s unclaimed %s address 0x%llx: ignored (reported once)",
                is_write ? "wrote" : "read", len, len == 1 ? "" : "s", is_write ? "to" : "from",
                bus->name, (unsigned long long)addr);
}

void iobus_access(struct iobus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
    pthread_rwlock_rdlock(&bus->lock);
    for (int i = 0; i < bus->nranges; i++) {
        struct io_range *r = &bus->ranges[i];
        if (addr >= r->base && addr - r->base < r->len) {
            uint64_t offset = addr - r->base;
            if (len > r->len - offset)
                break;
            io_handler_fn fn = r->fn;
            void *opaque = r->opaque;
            pthread_rwlock_unlock(&bus->lock);
            fn(opaque, offset, data, len, is_write);
            return;
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    if (!is_write)
        memset(data, 0xff, len);
    log_unclaimed(bus, addr, len, is_write);
}
