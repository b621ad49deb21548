/* The guest agent's path without KVM: the virtio-console device driven through PCI and its
 * queues as Linux's virtio_console driver drives it (DEVICE_READY, DEVICE_ADD, PORT_READY, the
 * port's name, PORT_OPEN, bytes each way), garbage on its control queue breaking the device and
 * not the process (and a reset bringing it back), and the QGA client (core/agent/qga.c) against
 * a scripted agent: the handshake skips garbage, errors and hangs come back within their bound,
 * no agent fails at once. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/agent/qga.h"
#include "core/devices/devices.h"
#include "core/virtio/virtio_console.h"
#include "core/virtio/virtio_pci.h"
#include "core/vm/guestmem.h"
#include "tests/vpci_driver.h"

#define MIB (1ull << 20)
#define SLOT VIRTIO_CONSOLE_PCI_SLOT
#define RAM (16 * MIB)
#define QSZ 8
#define RINGS 0x10000 /* queue Q's rings at RINGS + Q * 0x1000: desc, avail +0x400, used +0x800 */
#define BUFS 0x20000  /* queue Q's descriptor D points at BUFS + Q * 0x8000 + D * 0x1000 */

static char dir[] = "/tmp/vmws-agent-XXXXXX";
static char vmem[300];
static struct guest_mem gm;
static struct machine m;
static struct pci_bus *bus;
static struct virtio_console *vc;
static uint64_t bar;
static unsigned common, devcfg, notify;
static uint16_t avail_idx[4], used_seen[4];

/* The host end. */
static uint8_t host_got[4096];
static size_t host_len;
static int host_open = -1;
static void host_data(void *opaque, const uint8_t *buf, size_t len)
{
    (void)opaque;
    if (len <= sizeof(host_got) - host_len) {
        memcpy(host_got + host_len, buf, len);
        host_len += len;
    }
}
static void host_open_cb(void *opaque, bool open)
{
    (void)opaque;
    host_open = open;
}
static const struct virtio_console_host host = {.data = host_data, .open = host_open_cb};

static uint64_t rd(unsigned off, unsigned len)
{
    return vpci_bar_read(&m, bar + off, len);
}

static void wr(unsigned off, unsigned len, uint64_t v)
{
    vpci_bar_write(&m, bar + off, len, v);
}

static void driver_init(void)
{
    memset(gm.host + RINGS, 0, 4 * 0x1000);
    uint8_t status = vpci_driver_probe(&m, bar + common, 1u << 1 /* MULTIPORT */, 4, QSZ, RINGS);
    ck_assert_uint_eq(status & 8, 8);
    wr(common + 0x00, 4, 0);
    ck_assert_uint_eq(rd(common + 0x04, 4) & 2, 2); /* MULTIPORT offered */
    ck_assert_uint_eq(rd(common + 0x12, 2), 4);     /* port 0 rx/tx, control rx/tx */
    ck_assert_uint_eq(rd(devcfg + 4, 4), 1);        /* max_nr_ports */
    for (unsigned q = 0; q < 4; q++)
        avail_idx[q] = used_seen[q] = 0;
}

static void setup(void)
{
    char err[256];
    strcpy(dir, "/tmp/vmws-agent-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(vmem, sizeof(vmem), "%s/t.vmem", dir);
    ck_assert_msg(guest_mem_open(&gm, RAM, MEM_BACKEND_FILE, vmem, err, sizeof(err)) == 0, "%s",
                  err);
    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1;
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    bus = pci_create(&m);
    host_len = 0;
    host_open = -1;
    vc = virtio_console_create(&m, bus, SLOT, "org.qemu.guest_agent.0", &host, NULL);
    ck_assert_ptr_nonnull(vc);
    ck_assert_uint_eq(vpci_cfg_read(&m, SLOT, 0), 0x10431af4); /* virtio 1.x console */
    bar = (vpci_cfg_read(&m, SLOT, 0x10) & ~0xfu) | (uint64_t)vpci_cfg_read(&m, SLOT, 0x14) << 32;
    common = (unsigned)vpci_cap_offset(&m, SLOT, 1);
    notify = (unsigned)vpci_cap_offset(&m, SLOT, 2);
    devcfg = (unsigned)vpci_cap_offset(&m, SLOT, 4);
    driver_init();
}

static void teardown(void)
{
    virtio_console_destroy(vc);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    guest_mem_close(&gm);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static uint8_t *buf_of(unsigned q, unsigned d)
{
    return gm.host + BUFS + q * 0x8000 + d * 0x1000;
}

/* Makes a buffer of LEN bytes available on queue Q (WRITABLE: device-writable) and notifies;
 * returns its descriptor. */
static unsigned post(unsigned q, const void *data, uint32_t len, bool writable)
{
    uint8_t *ring = gm.host + RINGS + q * 0x1000;
    uint16_t d = avail_idx[q] % QSZ, flags = writable ? 2 : 0, next = 0;
    uint64_t addr = BUFS + q * 0x8000 + d * 0x1000;
    if (data)
        memcpy(buf_of(q, d), data, len);
    memcpy(ring + 16 * d, &addr, 8);
    memcpy(ring + 16 * d + 8, &len, 4);
    memcpy(ring + 16 * d + 12, &flags, 2);
    memcpy(ring + 16 * d + 14, &next, 2);
    memcpy(ring + 0x400 + 4 + 2 * (avail_idx[q] % QSZ), &d, 2);
    avail_idx[q]++;
    __atomic_store_n((uint16_t *)(ring + 0x400 + 2), avail_idx[q], __ATOMIC_RELEASE);
    wr(notify + 4 * q, 2, q);
    return d;
}

/* Waits up to WAIT_MS for the next used entry on Q: its length and descriptor, or -1. */
static int used(unsigned q, int wait_ms, unsigned *desc)
{
    uint8_t *ring = gm.host + RINGS + q * 0x1000;
    for (int i = 0; i < wait_ms * 10; i++, usleep(100))
        if (__atomic_load_n((uint16_t *)(ring + 0x800 + 2), __ATOMIC_ACQUIRE) != used_seen[q]) {
            uint8_t *e = ring + 0x800 + 4 + 8 * (used_seen[q]++ % QSZ);
            uint32_t id, len;
            memcpy(&id, e, 4);
            memcpy(&len, e + 4, 4);
            if (desc)
                *desc = id;
            return (int)len;
        }
    return -1;
}

static void ctl_send(uint32_t id, uint16_t event, uint16_t value)
{
    uint8_t msg[8];
    memcpy(msg, &id, 4);
    memcpy(msg + 4, &event, 2);
    memcpy(msg + 6, &value, 2);
    post(3, msg, 8, false);
    ck_assert_int_eq(used(3, 2000, NULL), 0);
}

/* The next control message for the driver: its event, value and (for PORT_NAME) name. */
static void ctl_expect(uint16_t event, uint16_t value, const char *name)
{
    unsigned d;
    int len = used(2, 2000, &d);
    ck_assert_int_ge(len, 8);
    uint8_t *b = buf_of(2, d);
    uint32_t id;
    uint16_t ev, val;
    memcpy(&id, b, 4);
    memcpy(&ev, b + 4, 2);
    memcpy(&val, b + 6, 2);
    ck_assert_uint_eq(id, 0);
    ck_assert_uint_eq(ev, event);
    ck_assert_uint_eq(val, value);
    if (name) {
        ck_assert_int_eq(len, 8 + (int)strlen(name));
        ck_assert_int_eq(memcmp(b + 8, name, strlen(name)), 0);
    }
}

static bool broken(void)
{
    json_t *j = virtio_console_status_json(vc);
    bool b = json_is_true(json_object_get(j, "needs_reset"));
    json_decref(j);
    return b;
}

/* Linux's probe and port setup, up to a program opening the port. */
static void handshake(void)
{
    for (int i = 0; i < 4; i++)
        post(2, NULL, 4096, true); /* control receive buffers */
    ctl_send(0xffffffff, 0, 1);    /* DEVICE_READY (VIRTIO_CONSOLE_BAD_ID) */
    ctl_expect(1, 0, NULL);        /* DEVICE_ADD port 0 */
    ctl_send(0, 3, 1);             /* PORT_READY */
    ctl_expect(7, 1, "org.qemu.guest_agent.0");
    ctl_expect(6, 1, NULL); /* PORT_OPEN: the host end is there */
    ck_assert_int_eq(host_open, -1);
    ck_assert_int_eq(virtio_console_write(vc, "x", 1), -ENOTCONN);
    ctl_send(0, 6, 1); /* qemu-ga opened /dev/virtio-ports/org.qemu.guest_agent.0 */
    ck_assert_int_eq(host_open, 1);
    ck_assert(virtio_console_guest_open(vc));
}

START_TEST(linux_handshake_and_bytes_both_ways)
{
    handshake();
    ck_assert_int_eq(virtio_console_write(vc, "{\"execute\":\"x\"}\n", 16), 0);
    unsigned d = post(0, NULL, 4096, true);
    unsigned got;
    ck_assert_int_eq(used(0, 2000, &got), 16);
    ck_assert_uint_eq(got, d);
    ck_assert_int_eq(memcmp(buf_of(0, d), "{\"execute\":\"x\"}\n", 16), 0);
    /* A buffer with nothing for it waits; the next write fills it. */
    d = post(0, NULL, 4, true);
    ck_assert_int_eq(used(0, 100, NULL), -1);
    ck_assert_int_eq(virtio_console_write(vc, "abcdef", 6), 0);
    ck_assert_int_eq(used(0, 2000, NULL), 4);
    ck_assert_int_eq(memcmp(buf_of(0, d), "abcd", 4), 0);
    post(0, NULL, 4096, true);
    ck_assert_int_eq(used(0, 2000, &d), 2);
    ck_assert_int_eq(memcmp(buf_of(0, d), "ef", 2), 0);
    post(1, "{\"return\": {}}\n", 15, false);
    ck_assert_int_eq(used(1, 2000, NULL), 0);
    ck_assert_uint_eq(host_len, 15);
    ck_assert_int_eq(memcmp(host_got, "{\"return\": {}}\n", 15), 0);
    /* Closing the port: the host hears it and its writes are refused. */
    ctl_send(0, 6, 0);
    ck_assert_int_eq(host_open, 0);
    ck_assert_int_eq(virtio_console_write(vc, "x", 1), -ENOTCONN);
    ck_assert(!broken());
}
END_TEST

/* Each kind of garbage breaks the device (not the process), and a reset brings it back. */
START_TEST(control_garbage_breaks_the_device_only)
{
    static const struct {
        uint32_t len;
        uint32_t id;
        uint16_t event;
        bool writable;
    } bad[] = {
        {3, 0, 0, false},  /* a short message */
        {8, 0, 99, false}, /* an event no driver sends */
        {8, 5, 6, false},  /* PORT_OPEN for a port that does not exist */
        {8, 0, 1, false},  /* DEVICE_ADD: the device's message, not the driver's */
        {8, 0, 6, true},   /* a device-writable control message */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        handshake();
        uint8_t msg[8] = {0};
        memcpy(msg, &bad[i].id, 4);
        memcpy(msg + 4, &bad[i].event, 2);
        post(3, msg, bad[i].len, bad[i].writable);
        for (int t = 0; t < 2000 && !broken(); t++)
            usleep(1000);
        ck_assert_msg(broken(), "garbage %zu did not break the device", i);
        ck_assert_int_eq(used(3, 50, NULL), -1); /* not served */
        driver_init();                           /* the guest resets it */
        ck_assert(!broken());
        ck_assert_int_eq(host_open, 0); /* the reset closed the port */
        host_open = -1;
    }
    handshake(); /* and it works as new */
}
END_TEST

/* A writable buffer on the port's transmit queue, or a readable one on its receive queue. */
START_TEST(port_garbage_breaks_the_device_only)
{
    handshake();
    post(1, NULL, 16, true);
    for (int t = 0; t < 2000 && !broken(); t++)
        usleep(1000);
    ck_assert(broken());
    driver_init();
    host_open = -1;
    handshake();
    post(0, "zz", 2, false);
    for (int t = 0; t < 2000 && !broken(); t++)
        usleep(1000);
    ck_assert(broken());
}
END_TEST

/* ---- the QGA client against a scripted agent ---- */

static struct qga *qa;
static enum { AGENT_OK, AGENT_HANG, AGENT_ERROR, AGENT_SILENT_SYNC } agent_mode;
static int agent_calls;

/* The agent: answers each line it is sent at once (qga_receive from the sender's thread). */
static int agent_send(void *opaque, const void *buf, size_t len)
{
    (void)opaque;
    const char *p = buf;
    bool marker = len && (uint8_t)p[0] == 0xff;
    json_t *j = json_loadb(p + marker, len - marker, 0, NULL);
    ck_assert_ptr_nonnull(j);
    const char *cmd = json_string_value(json_object_get(j, "execute"));
    agent_calls++;
    char out[512];
    int n = 0;
    if (strcmp(cmd, "guest-sync-delimited") == 0) {
        ck_assert(marker);
        if (agent_mode != AGENT_SILENT_SYNC) /* garbage and a stale reply first */
            n = snprintf(out, sizeof(out), "{\"return\": 7}\nnot json\n\xff{\"return\": %lld}\n",
                         (long long)json_integer_value(
                             json_object_get(json_object_get(j, "arguments"), "id")));
    } else if (agent_mode == AGENT_ERROR) {
        n = snprintf(out, sizeof(out),
                     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no way\"}}\n");
    } else if (agent_mode == AGENT_OK && strcmp(cmd, "guest-get-osinfo") == 0) {
        n = snprintf(out, sizeof(out),
                     "{\"return\": {\"pretty-name\": \"Debian GNU/Linux 12 (bookworm)\"}}\n");
    }
    json_decref(j);
    if (n)
        qga_receive(qa, (const uint8_t *)out, (size_t)n);
    return 0;
}

static double ms_of(void (*fn)(void))
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    fn();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

static int last_rc;
static char last_err[256];
static json_t *last_ret;
static void call_osinfo(void)
{
    json_decref(last_ret);
    last_ret = NULL;
    last_rc =
        qga_call(qa, "guest-get-osinfo", NULL, 300, false, &last_ret, last_err, sizeof(last_err));
}

START_TEST(qga_client_answers_and_bounds)
{
    qa = qga_create(agent_send, NULL);
    agent_calls = 0;
    /* No agent: at once, without sending. */
    ck_assert_double_lt(ms_of(call_osinfo), 50);
    ck_assert_int_eq(last_rc, -ENOTCONN);
    ck_assert_str_eq(last_err, "no guest agent (nothing in the guest has the port open)");
    ck_assert_int_eq(agent_calls, 0);
    qga_set_connected(qa, true);
    agent_mode = AGENT_OK;
    call_osinfo();
    ck_assert_msg(last_rc == 0, "%s", last_err);
    ck_assert_str_eq(json_string_value(json_object_get(last_ret, "pretty-name")),
                     "Debian GNU/Linux 12 (bookworm)");
    agent_mode = AGENT_ERROR;
    call_osinfo();
    ck_assert_int_eq(last_rc, -EIO);
    ck_assert_str_eq(last_err, "guest-get-osinfo: the guest agent says: no way");
    agent_mode = AGENT_HANG; /* syncs, then never answers the command */
    double ms = ms_of(call_osinfo);
    ck_assert_int_eq(last_rc, -ETIMEDOUT);
    ck_assert_double_ge(ms, 290);
    ck_assert_double_lt(ms, 1000);
    agent_mode = AGENT_SILENT_SYNC; /* something on the port that is no agent */
    ms = ms_of(call_osinfo);
    ck_assert_int_eq(last_rc, -ETIMEDOUT);
    ck_assert_double_lt(ms, 1000);
    /* guest-shutdown answers only when it fails: no answer within the time is success. */
    agent_mode = AGENT_HANG;
    ck_assert_int_eq(
        qga_call(qa, "guest-shutdown", NULL, 100, true, NULL, last_err, sizeof(last_err)), 0);
    json_decref(last_ret);
    last_ret = NULL;
    qga_destroy(qa);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent");
    TCase *dev = tcase_create("virtio-console");
    tcase_add_checked_fixture(dev, setup, teardown);
    tcase_set_timeout(dev, 60);
    tcase_add_test(dev, linux_handshake_and_bytes_both_ways);
    tcase_add_test(dev, control_garbage_breaks_the_device_only);
    tcase_add_test(dev, port_garbage_breaks_the_device_only);
    suite_add_tcase(s, dev);
    TCase *cl = tcase_create("qga");
    tcase_set_timeout(cl, 30);
    tcase_add_test(cl, qga_client_answers_and_bounds);
    suite_add_tcase(s, cl);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
