/* The ES1370 as a guest drives it: each input is a sequence of 6-byte operations on a machine
 * with 1 MiB of guest RAM in a buffer (no KVM) - a 32-bit write or read of one of the card's 64
 * I/O ports, a write or read of its PCI configuration space, or rendering of N frames (what the
 * mixer thread does, reading and writing guest RAM where the guest pointed the card) - followed
 * by a save and a load of the card's state, and a load of the input itself as that state, and
 * more rendering. Nothing a guest does may crash or corrupt the VMM. */
#include <pthread.h>

#include "core/devices/devices.h"
#include "core/devices/sound.h"
#include "core/util/state.h"
#include "core/vm/iobus.h"
#include "core/vm/machine.h"
#include "tests/fuzz/fuzz.h"

#define RAM_SIZE (1u << 20)
#define IO 0xc000u /* where the card's BAR 0 starts (PCI slot 5, as vmws places it) */

static void io32(struct machine *m, uint64_t port, uint32_t v, bool write)
{
    uint8_t d[4];
    io_data_put(d, 4, v);
    iobus_access(&m->pio, port, d, 4, write);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *ram;
    static struct guest_mem gm;
    if (!ram) {
        ram = calloc(1, RAM_SIZE);
        if (!ram || guest_mem_init_buffer(&gm, ram, RAM_SIZE) < 0)
            abort();
    }
    struct machine m;
    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1; /* interrupts go nowhere */
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    struct pci_bus *bus = pci_create(&m);
    struct es1370 *es = bus ? es1370_create(&m, bus, ES1370_PCI_SLOT) : NULL;
    if (!es)
        abort();
    io32(&m, 0xcf8, 0x80000000u | ES1370_PCI_SLOT << 11 | 0x04, true);
    io32(&m, 0xcfc, 0x5, true); /* I/O decoding and bus mastering on, as a driver does */
    static int32_t mix[2 * 4096];
    for (size_t i = 0; i + 6 <= size; i += 6) {
        const uint8_t *op = data + i;
        uint32_t v = (uint32_t)op[2] | (uint32_t)op[3] << 8 | (uint32_t)op[4] << 16 |
                     (uint32_t)op[5] << 24;
        switch (op[0] % 5) {
        case 0: /* a write to the card's ports */
            io32(&m, IO + (op[1] & 0x3c), v, true);
            break;
        case 1:
            io32(&m, IO + (op[1] & 0x3c), 0, false);
            break;
        case 2: /* PCI configuration space, BARs and interrupt line included */
            io32(&m, 0xcf8, 0x80000000u | ES1370_PCI_SLOT << 11 | (op[1] & 0xfc), true);
            io32(&m, 0xcfc, v, true);
            break;
        case 3: /* guest RAM the card may read: the DMA buffers */
            memcpy(ram + (v % (RAM_SIZE - 2)), op + 1, 2);
            break;
        default:
            es1370_render(es, mix, 1 + v % 4096);
            break;
        }
    }
    /* Its state saved and loaded back; then the input itself as the card's state record. */
    for (int pass = 0; pass < 2; pass++) {
        struct state_writer w;
        state_writer_init(&w);
        if (pass == 0)
            es1370_save(es, &w);
        else
            state_put(&w, STATE_TAG('E', 'S', '1', '3'), 0, data, size);
        uint8_t *buf = NULL;
        size_t len = 0;
        struct state_reader r;
        char err[256];
        if (state_writer_finish(&w, &buf, &len) == 0 &&
            state_reader_parse(&r, buf, len, err, sizeof(err)) == 0) { /* r owns buf */
            es1370_load(es, &r);
            state_reader_free(&r);
        }
        state_writer_free(&w);
    }
    es1370_render(es, mix, 256);
    es1370_destroy(es);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    pthread_mutex_destroy(&m.lock);
    return 0;
}
