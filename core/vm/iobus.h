/* Port I/O and MMIO dispatch: devices register address ranges with a handler; a vCPU exit is
 * routed to the one range that holds its address. Accesses nobody claims are logged once per
 * port (or MMIO page) and ignored: reads return all ones, writes are dropped. Never fatal. */
#ifndef VMWS_IOBUS_H
#define VMWS_IOBUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* OFFSET is the access's place in the registered range, taken under the bus lock (a range
 * that moves meanwhile cannot skew it); the access lies wholly inside the range. DATA holds LEN
 * (1, 2, 4 or 8) bytes, little endian. */
typedef void (*io_handler_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
                              bool is_write);

struct io_range {
    uint64_t base, len;
    io_handler_fn fn;
    void *opaque;
};

#define IOBUS_MAX_RANGES 64
#define IOBUS_MAX_LOGGED 64

struct iobus {
    const char *name; /* "port" or "mmio" */
    pthread_rwlock_t lock;
    struct io_range ranges[IOBUS_MAX_RANGES];
    int nranges;
    uint64_t logged[IOBUS_MAX_LOGGED]; /* unclaimed addresses already reported */
    int nlogged;
};

void iobus_init(struct iobus *bus, const char *name);
/* Returns 0, -EEXIST if it overlaps a registered range, -ENOSPC if full. */
int iobus_register(struct iobus *bus, uint64_t base, uint64_t len, io_handler_fn fn, void *opaque);
/* An access that starts in a range but runs past its end is unclaimed, as one nobody decodes.
 * Moves or removes (len 0) the range registered with OPAQUE at OLD_BASE (PCI BAR updates). */
int iobus_move(struct iobus *bus, uint64_t old_base, void *opaque, uint64_t new_base, uint64_t len);
void iobus_access(struct iobus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);
void iobus_destroy(struct iobus *bus);

/* Little-endian helpers for handlers. */
static inline uint64_t io_data_get(const uint8_t *data, uint32_t len)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < len && i < 8; i++)
        v |= (uint64_t)data[i] << (8 * i);
    return v;
}

static inline void io_data_put(uint8_t *data, uint32_t len, uint64_t v)
{
    for (uint32_t i = 0; i < len && i < 8; i++)
        data[i] = (uint8_t)(v >> (8 * i));
}

#endif
