/* PCI configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) for bus 0, with a host
 * bridge at 00:00.0. Devices bring a 256-byte config space and a write mask; BARs are sized the
 * standard way (write all ones, read back the size mask) and their owners are told when the
 * guest moves them or turns decoding on or off. Absent functions read as all ones. Config
 * writes, and the bar_changed calls they cause, are serialised by bar_lock: two vCPUs moving a
 * BAR at once reach its owner in the order their writes took effect (issue 14, finding 11). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/devices/devices.h"

#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_BAR0 0x10
#define PCI_BAR_MEM64 0x4

/* Where "firmware" places BARs and which legacy IRQs INTx pins use (there is no BIOS on the
 * 64-bit boot path, so the VMM assigns resources the way SeaBIOS would). */
#define PCI_IO_WINDOW 0xc000u
#define PCI_IO_WINDOW_END 0x10000u
#define PCI_MMIO_WINDOW 0xe0000000ull
#define PCI_MMIO_WINDOW_END 0xfec00000ull
static const uint8_t pci_intx_irqs[2] = {10, 11};

struct pci_bus {
    struct machine *m;
    /* Taken before lock by every config write, held across the bar_changed calls it makes
     * (which run without lock: an owner takes its own lock and the I/O bus's there). Without
     * it, a second write could move a BAR between the first's update and its call, and the
     * owner would see old_addr values that no longer match its registration, leaving a stale
     * range on the bus. */
    pthread_mutex_t bar_lock;
    pthread_mutex_t lock;
    uint32_t address; /* last value written to 0xCF8 */
    uint64_t io_next, mmio_next;
    struct pci_device *slots[PCI_MAX_SLOTS];
    struct pci_device host_bridge;
    /* INTx: the functions driving their line high (bit per slot); a leaf lock, so a device may
     * set its line with its own lock or the bus lock held. */
    pthread_mutex_t intx_lock;
    uint32_t intx_high;
};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void pci_device_init(struct pci_device *d, uint16_t vendor, uint16_t device, uint32_t class_code,
                     uint8_t revision)
{
    memset(d->cfg, 0, sizeof(d->cfg));
    memset(d->wmask, 0, sizeof(d->wmask));
    d->cfg_access = NULL;
    put16(&d->cfg[0x00], vendor);
    put16(&d->cfg[0x02], device);
    d->cfg[0x08] = revision;
    d->cfg[0x09] = (uint8_t)class_code;
    d->cfg[0x0a] = (uint8_t)(class_code >> 8);
    d->cfg[0x0b] = (uint8_t)(class_code >> 16);
    d->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | 0x04 /* bus master */;
    d->wmask[PCI_COMMAND + 1] = 0x04; /* INTx disable */
    d->wmask[0x0c] = 0xff;            /* cache line size */
    d->wmask[0x0d] = 0xff;            /* latency timer */
    d->wmask[0x3c] = 0xff;            /* interrupt line */
}

static int bar_index(unsigned off)
{
    return off >= PCI_BAR0 && off < PCI_BAR0 + 24 ? (int)(off - PCI_BAR0) / 4 : -1;
}

static bool bar_is_upper_half(const struct pci_device *d, int bar)
{
    return bar > 0 && d->bar_size[bar] == 0 && !d->bar_is_io[bar - 1] && d->bar_size[bar - 1] &&
           (d->cfg[PCI_BAR0 + 4 * (bar - 1)] & PCI_BAR_MEM64);
}

static uint64_t bar_addr_raw(const struct pci_device *d, int bar)
{
    uint32_t lo = get32(&d->cfg[PCI_BAR0 + 4 * bar]);
    if (d->bar_is_io[bar])
        return lo & ~0x3u;
    uint64_t a = lo & ~0xfu;
    if (lo & PCI_BAR_MEM64 && bar < 5)
        a |= (uint64_t)get32(&d->cfg[PCI_BAR0 + 4 * (bar + 1)]) << 32;
    return a;
}

static bool bar_decoding(const struct pci_device *d, int bar)
{
    uint8_t cmd = d->cfg[PCI_COMMAND];
    return d->bar_is_io[bar] ? (cmd & PCI_COMMAND_IO) : (cmd & PCI_COMMAND_MEMORY);
}

uint64_t pci_bar_address(struct pci_bus *bus, struct pci_device *d, int bar)
{
    pthread_mutex_lock(&bus->lock);
    uint64_t a =
        bar >= 0 && bar < 6 && d->bar_size[bar] && bar_decoding(d, bar) ? bar_addr_raw(d, bar) : 0;
    pthread_mutex_unlock(&bus->lock);
    return a;
}

/* Bytes a device may read without the bus lock (pci_cfg_byte) are stored whole. */
static void cfg_store(struct pci_device *d, unsigned off, uint8_t v)
{
    __atomic_store_n(&d->cfg[off], v, __ATOMIC_RELAXED);
}

/* Writes one config byte, honouring the write mask and BAR size alignment. */
static void cfg_write_byte(struct pci_device *d, unsigned off, uint8_t v)
{
    int bar = bar_index(off);
    if (bar >= 0) {
        int owner = bar_is_upper_half(d, bar) ? bar - 1 : bar;
        if (!d->bar_size[owner])
            return;
        uint64_t mask = ~(d->bar_size[owner] - 1);
        unsigned shift = 8 * ((off - PCI_BAR0) % 4) + (owner != bar ? 32 : 0);
        uint8_t writable = (uint8_t)(mask >> shift);
        if (shift == 0) /* flag bits stay */
            writable &= d->bar_is_io[owner] ? 0xfc : 0xf0;
        cfg_store(d, off, (uint8_t)((d->cfg[off] & ~writable) | (v & writable)));
        return;
    }
    if (off == PCI_COMMAND + 2 || off == PCI_COMMAND + 3) { /* status: write 1 to clear */
        cfg_store(d, off, (uint8_t)(d->cfg[off] & ~(v & 0xf9)));
        return;
    }
    cfg_store(d, off, (uint8_t)((d->cfg[off] & ~d->wmask[off]) | (v & d->wmask[off])));
}

/* OFFSET: the access's byte in the 0xCFC-0xCFF data window. */
static void cfg_access(struct pci_bus *bus, unsigned offset, uint8_t *data, uint32_t len,
                       bool is_write)
{
    uint32_t a = bus->address;
    unsigned busno = (a >> 16) & 0xff, slot = (a >> 11) & 0x1f, fn = (a >> 8) & 7;
    unsigned off = (a & 0xfc) + offset;
    struct pci_device *d = (a & 0x80000000u) && busno == 0 && fn == 0 ? bus->slots[slot] : NULL;
    if (!d || off + len > 256) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    if (d->cfg_access && d->cfg_access(d, off, data, len, is_write))
        return;
    if (!is_write) {
        memcpy(data, &d->cfg[off], len);
        return;
    }
    uint64_t old[6];
    bool was_on[6];
    for (int b = 0; b < 6; b++) {
        old[b] = bar_addr_raw(d, b);
        was_on[b] = bar_decoding(d, b);
    }
    for (uint32_t i = 0; i < len; i++)
        cfg_write_byte(d, off + i, data[i]);
    if (!d->bar_changed)
        return;
    for (int b = 0; b < 6; b++) {
        if (!d->bar_size[b])
            continue;
        uint64_t now = bar_addr_raw(d, b);
        bool on = bar_decoding(d, b);
        if (now != old[b] || on != was_on[b]) {
            pthread_mutex_unlock(&bus->lock);
            d->bar_changed(d, b, was_on[b] ? old[b] : 0, on ? now : 0, on);
            pthread_mutex_lock(&bus->lock);
        }
    }
}

/* 0xCF8-0xCFB: the type-1 address register, a dword; a byte at 0xCF9 is the chipset's reset
 * control register instead (as on the PIIX), whose RST_CPU bit resets the machine. */
static void address_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pci_bus *bus = opaque;
    if (offset == 1 && len == 1) {
        if (!is_write)
            data[0] = 0;
        else if (data[0] & 0x04)
            machine_request_stop(bus->m, STOP_RESET, "guest reset through port 0xCF9");
        return;
    }
    pthread_mutex_lock(&bus->lock);
    if (len == 4 && offset == 0 && is_write)
        bus->address = (uint32_t)io_data_get(data, 4) & 0x80fffffcu;
    else if (len == 4 && offset == 0)
        io_data_put(data, 4, bus->address);
    else if (!is_write)
        memset(data, 0xff, len); /* not a type-1 access */
    pthread_mutex_unlock(&bus->lock);
}

static void data_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pci_bus *bus = opaque;
    if (is_write)
        pthread_mutex_lock(&bus->bar_lock);
    pthread_mutex_lock(&bus->lock);
    cfg_access(bus, (unsigned)offset, data, len, is_write);
    pthread_mutex_unlock(&bus->lock);
    if (is_write)
        pthread_mutex_unlock(&bus->bar_lock);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

/* Assigns D's BARs from the bus windows (aligned to their size) and its INTx line. */
static int assign_resources_locked(struct pci_bus *bus, struct pci_device *d, unsigned slot)
{
    uint64_t io = bus->io_next, mmio = bus->mmio_next;
    for (int b = 0; b < 6; b++) {
        uint64_t s = d->bar_size[b];
        if (!s)
            continue;
        if (s & (s - 1) || (!d->bar_is_io[b] && b == 5))
            return -EINVAL; /* sizes are powers of two; a 64-bit BAR needs two slots */
        uint64_t *next = d->bar_is_io[b] ? &io : &mmio;
        uint64_t addr = (*next + s - 1) & ~(s - 1);
        uint64_t end = d->bar_is_io[b] ? PCI_IO_WINDOW_END : PCI_MMIO_WINDOW_END;
        if (addr + s > end)
            return -ENOSPC;
        *next = addr + s;
        if (d->bar_is_io[b]) {
            put32(&d->cfg[PCI_BAR0 + 4 * b], (uint32_t)addr | 0x1);
        } else { /* 64-bit, not prefetchable */
            put32(&d->cfg[PCI_BAR0 + 4 * b], (uint32_t)addr | PCI_BAR_MEM64);
            put32(&d->cfg[PCI_BAR0 + 4 * b + 4], (uint32_t)(addr >> 32));
            d->bar_size[b + 1] = 0;
        }
        d->cfg[PCI_COMMAND] |= d->bar_is_io[b] ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    }
    if (d->cfg[0x3d]) /* interrupt pin in use: INTx of odd and even slots on two lines */
        d->cfg[0x3c] = (uint8_t)(d->intx_irq = pci_intx_irqs[slot % 2]);
    bus->io_next = io;
    bus->mmio_next = mmio;
    return 0;
}

int pci_register(struct pci_bus *bus, struct pci_device *d, unsigned slot)
{
    if (slot == 0 || slot >= PCI_MAX_SLOTS)
        return -EINVAL;
    pthread_mutex_lock(&bus->bar_lock);
    pthread_mutex_lock(&bus->lock);
    int r = bus->slots[slot] ? -EBUSY : assign_resources_locked(bus, d, slot);
    if (!r)
        bus->slots[slot] = d;
    pthread_mutex_unlock(&bus->lock);
    for (int b = 0; b < 6 && !r && d->bar_changed; b++)
        if (d->bar_size[b])
            d->bar_changed(d, b, 0, bar_addr_raw(d, b), 1);
    pthread_mutex_unlock(&bus->bar_lock);
    return r;
}

/* Where the board wires the device's INTA#, fixed at registration. Config byte 0x3c is only
 * the OS's note of it: a guest writing anything there moves no interrupt. */
unsigned pci_irq_line(const struct pci_device *d)
{
    return d->intx_irq;
}

/* The line is wired by slot parity (pci_intx_irqs), whatever the guest writes into 0x3C. */
void pci_set_intx(struct pci_bus *bus, struct pci_device *d, bool level)
{
    pthread_mutex_lock(&bus->intx_lock);
    unsigned slot = 1;
    while (slot < PCI_MAX_SLOTS && bus->slots[slot] != d)
        slot++;
    if (slot < PCI_MAX_SLOTS) {
        if (level)
            bus->intx_high |= 1u << slot;
        else
            bus->intx_high &= ~(1u << slot);
        bool line = false;
        for (unsigned s = slot % 2; s < PCI_MAX_SLOTS; s += 2)
            line |= bus->intx_high >> s & 1;
        machine_set_irq(bus->m, pci_intx_irqs[slot % 2], line);
    }
    pthread_mutex_unlock(&bus->intx_lock);
}

/* Saved: the address latch and every present function's config space. Restoring writes what a
 * guest could write (the write masks, the BARs' sizes and flag bits) and moves BARs through
 * bar_changed as if the guest had written them. */
int pci_save(struct pci_bus *bus, struct state_writer *w)
{
    pthread_mutex_lock(&bus->lock);
    state_put(w, STATE_TAG('P', 'C', 'I', 'A'), 0, &bus->address, sizeof(bus->address));
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++)
        if (bus->slots[s])
            state_put(w, STATE_TAG('P', 'C', 'I', 'C'), s, bus->slots[s]->cfg, 256);
    pthread_mutex_unlock(&bus->lock);
    return 0;
}

int pci_load(struct pci_bus *bus, const struct state_reader *r)
{
    uint32_t address;
    if (state_get_exact(r, STATE_TAG('P', 'C', 'I', 'A'), 0, &address, sizeof(address)) < 0)
        return -EINVAL;
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        struct pci_device *d = bus->slots[s];
        const struct state_record *rec = state_get(r, STATE_TAG('P', 'C', 'I', 'C'), s);
        /* A device the saved machine had and this one lacks: refused. One it lacked (a state
         * from before the device existed) keeps its power-on config; its own load resets it. */
        if ((rec && !d) || (rec && rec->len != 256))
            return -EINVAL;
    }
    pthread_mutex_lock(&bus->bar_lock);
    pthread_mutex_lock(&bus->lock);
    bus->address = address & 0x80fffffcu;
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        struct pci_device *d = bus->slots[s];
        const struct state_record *rec = d ? state_get(r, STATE_TAG('P', 'C', 'I', 'C'), s) : NULL;
        if (!rec)
            continue;
        uint64_t old[6];
        bool was_on[6];
        for (int b = 0; b < 6; b++) {
            old[b] = bar_addr_raw(d, b);
            was_on[b] = bar_decoding(d, b);
        }
        /* What the guest could have written, as it could have written it: the device's
         * identity, capabilities and BAR types stay ours whatever the state file says. */
        for (unsigned off = 0; off < 256; off++)
            if (off != PCI_COMMAND + 2 && off != PCI_COMMAND + 3) /* status: the device's */
                cfg_write_byte(d, off, rec->data[off]);
        for (int b = 0; b < 6 && d->bar_changed; b++) {
            if (!d->bar_size[b])
                continue;
            uint64_t now = bar_addr_raw(d, b);
            bool on = bar_decoding(d, b);
            if (now != old[b] || on != was_on[b]) {
                pthread_mutex_unlock(&bus->lock);
                d->bar_changed(d, b, was_on[b] ? old[b] : 0, on ? now : 0, on);
                pthread_mutex_lock(&bus->lock);
            }
        }
    }
    pthread_mutex_unlock(&bus->lock);
    pthread_mutex_unlock(&bus->bar_lock);
    return 0;
}

struct pci_bus *pci_create(struct machine *m)
{
    struct pci_bus *bus = calloc(1, sizeof(*bus));
    if (!bus)
        return NULL;
    bus->m = m;
    bus->io_next = PCI_IO_WINDOW;
    bus->mmio_next = PCI_MMIO_WINDOW;
    pthread_mutex_init(&bus->bar_lock, NULL);
    pthread_mutex_init(&bus->lock, NULL);
    pthread_mutex_init(&bus->intx_lock, NULL);
    /* Host bridge: Red Hat's generic PCIe host bridge id, class 06/00. */
    pci_device_init(&bus->host_bridge, 0x1b36, 0x0008, 0x060000, 0);
    bus->slots[0] = &bus->host_bridge;
    /* 0xCF8 is decoded as a dword; the byte at 0xCF9 is the reset register (address_io). */
    if (iobus_register(&m->pio, 0xcf8, 4, address_io, bus) < 0 ||
        iobus_register(&m->pio, 0xcfc, 4, data_io, bus) < 0) {
        pci_destroy(bus);
        return NULL;
    }
    return bus;
}

void pci_destroy(struct pci_bus *bus)
{
    if (!bus)
        return;
    pthread_mutex_destroy(&bus->bar_lock);
    pthread_mutex_destroy(&bus->lock);
    pthread_mutex_destroy(&bus->intx_lock);
    free(bus);
}
