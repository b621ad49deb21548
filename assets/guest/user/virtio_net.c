/* virtio-net driver of the built-in guest, all at CPL 3, polled (no interrupts): finds the
 * modern virtio-pci device (1af4:1041), takes VERSION_1, MAC and STATUS, gives the receive
 * queue eight 2 KiB buffers and sends one frame at a time on the transmit queue. Enough for the
 * `net` shell command to prove the card from the guest's side: `net info` (MAC, link), `net
 * arp` (an ARP request for the gateway 10.0.2.2 goes out; slirp's reply must come back into a
 * receive buffer) and `net test-garbage KIND` (a malformed transmit chain the device must
 * refuse by setting NEEDS_RESET; the next `net` command resets and reinitialises it). */
#include "assets/guest/user/sound.h"
#include "assets/guest/user/virtio.h"

#define F_NET_MAC (1u << 5)
#define F_NET_STATUS (1u << 16)
#define NET_HDR 12
#define NQ 8
#define RX_BUF 2048
#define FRAME_MAX 65550 /* the device's limit */

struct nring {
    struct virtq_desc desc[NQ];
    uint16_t avail_flags, avail_idx, avail_ring[NQ], used_event;
    uint8_t pad[4096 - 16 * NQ - 6 - 2 * NQ];
    uint16_t used_flags, used_idx;
    struct {
        uint32_t id, len;
    } used_ring[NQ];
} __attribute__((aligned(4096)));

static struct nring rxq, txq;
static uint8_t rx_buf[NQ][RX_BUF] __attribute__((aligned(4096)));
static uint8_t tx_buf[NET_HDR + FRAME_MAX + 16] __attribute__((aligned(4096)));

static struct {
    bool probed, found, ready;
    struct vpci pci;
    uint64_t rx_notify, tx_notify;
    uint16_t rx_size, tx_size, rx_used, tx_used;
    uint8_t mac[6];
} net;

static const uint8_t guest_ip[4] = {10, 0, 2, 15}, gateway_ip[4] = {10, 0, 2, 2};

static void rx_give(uint16_t id)
{
    rxq.avail_ring[rxq.avail_idx % net.rx_size] = id;
    vpci_barrier();
    rxq.avail_idx++;
    vpci_barrier();
}

static bool device_init(void)
{
    uint32_t accepted;
    if (!vpci_negotiate(&net.pci, F_NET_MAC | F_NET_STATUS, &accepted, "net"))
        return false;
    memset(&rxq, 0, sizeof(rxq));
    memset(&txq, 0, sizeof(txq));
    net.rx_notify =
        vpci_queue(&net.pci, 0, NQ, &net.rx_size, rxq.desc, &rxq.avail_flags, &rxq.used_flags);
    net.tx_notify =
        vpci_queue(&net.pci, 1, NQ, &net.tx_size, txq.desc, &txq.avail_flags, &txq.used_flags);
    if (!net.rx_notify || !net.tx_notify) {
        printf("net: the device offers too small queues\n");
        return false;
    }
    vpci_driver_ok(&net.pci);
    net.rx_used = net.tx_used = 0;
    for (unsigned i = 0; i < 6; i++)
        net.mac[i] = accepted & F_NET_MAC ? vpci_rd8(net.pci.devcfg + i) : 0;
    for (uint16_t i = 0; i < net.rx_size; i++) {
        rxq.desc[i] = (struct virtq_desc){(uintptr_t)rx_buf[i], RX_BUF, VIRTQ_DESC_WRITE, 0};
        rx_give(i);
    }
    vpci_wr16(net.rx_notify, 0);
    return true;
}

static bool net_ready(void)
{
    if (!net.probed) {
        net.probed = true;
        unsigned slot;
        net.found = pci_find(0x1af4, 0x1041, &slot);
        if (net.found) {
            pci_write32(slot, 0x04, pci_read32(slot, 0x04) | 0x06); /* memory, master */
            unsigned irq; /* polled, but its line must not storm the kernel */
            vpci_intx_edge(slot, &irq);
            net.found = vpci_map(slot, &net.pci);
        }
    }
    if (!net.found) {
        printf("net: no virtio-net device (vmws create without --net none gives the VM one)\n");
        return false;
    }
    if (net.ready && (vpci_rd8(net.pci.common + CC_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) {
        printf("net: the device needed a reset; reinitialising it\n");
        net.ready = false;
    }
    if (!net.ready)
        net.ready = device_init();
    return net.ready;
}

static uint64_t deadline_after_ms(uint64_t ms)
{
    return rdtsc() + ms * 1000 * timer_tsc_per_us();
}

/* Makes the chain at txq.desc[0] (already filled) available; waits up to 2 s for the device
 * to use it or to say it needs a reset. true if it used it. */
static bool tx_submit(void)
{
    txq.avail_ring[txq.avail_idx % net.tx_size] = 0;
    vpci_barrier();
    txq.avail_idx++;
    vpci_barrier();
    vpci_wr16(net.tx_notify, 1);
    uint64_t end = deadline_after_ms(2000);
    while (*(volatile uint16_t *)&txq.used_idx == net.tx_used) {
        if (vpci_rd8(net.pci.common + CC_STATUS) & VIRTIO_STATUS_NEEDS_RESET || rdtsc() > end)
            return false;
        delay_us(50);
    }
    net.tx_used++;
    (void)vpci_rd8(net.pci.isr); /* INTx low again */
    return true;
}

static void put_mac(char *s, const uint8_t *m)
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 6; i++) {
        s[3 * i] = hex[m[i] >> 4];
        s[3 * i + 1] = hex[m[i] & 15];
        s[3 * i + 2] = i < 5 ? ':' : '\0';
    }
}

/* An ARP request for the gateway; the reply's sender MAC. */
static void cmd_arp(void)
{
    uint8_t *f = tx_buf + NET_HDR;
    memset(tx_buf, 0, NET_HDR + 60);
    memset(f, 0xff, 6);
    memcpy(f + 6, net.mac, 6);
    f[12] = 0x08, f[13] = 0x06;                    /* ARP */
    f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0; /* Ethernet, IPv4 */
    f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;    /* request */
    memcpy(f + 22, net.mac, 6);
    memcpy(f + 28, guest_ip, 4);
    memcpy(f + 38, gateway_ip, 4);
    txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR + 60, 0, 0};
    if (!tx_submit()) {
        printf("net arp: the device did not send the request\n");
        return;
    }
    uint64_t end = deadline_after_ms(3000);
    while (rdtsc() < end) {
        if (*(volatile uint16_t *)&rxq.used_idx == net.rx_used) {
            delay_us(100);
            continue;
        }
        vpci_barrier();
        unsigned slot = net.rx_used % net.rx_size;
        uint16_t id = (uint16_t)rxq.used_ring[slot].id;
        uint32_t len = rxq.used_ring[slot].len;
        net.rx_used++;
        const uint8_t *r = rx_buf[id % NQ] + NET_HDR;
        bool reply = len >= NET_HDR + 42 && r[12] == 0x08 && r[13] == 0x06 && r[21] == 2 &&
                     !memcmp(r + 28, gateway_ip, 4);
        char mac[18];
        put_mac(mac, r + 22);
        rx_give(id);
        vpci_wr16(net.rx_notify, 0);
        (void)vpci_rd8(net.pci.isr);
        if (reply) {
            printf("net arp: 10.0.2.2 is at %s\n", mac);
            return;
        }
    }
    printf("net arp: no reply from 10.0.2.2 within 3 s\n");
}

/* One malformed transmit chain of KIND. */
static void cmd_garbage(const char *kind)
{
    memset(tx_buf, 0, NET_HDR + 64);
    memset(tx_buf + NET_HDR, 0xff, 6);
    if (!strcmp(kind, "header")) { /* a segmentation offload never negotiated */
        tx_buf[1] = 1;             /* VIRTIO_NET_HDR_GSO_TCPV4 */
        txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR + 60, 0, 0};
    } else if (!strcmp(kind, "big")) { /* one byte over the limit */
        txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR + FRAME_MAX + 1, 0, 0};
    } else if (!strcmp(kind, "short")) { /* not even an Ethernet header */
        txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR + 10, 0, 0};
    } else if (!strcmp(kind, "writable")) { /* a transmit buffer the device may write */
        txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR + 60, VIRTQ_DESC_WRITE, 0};
    } else if (!strcmp(kind, "loop")) { /* 0 -> 1 -> 0 ... */
        txq.desc[0] = (struct virtq_desc){(uintptr_t)tx_buf, NET_HDR, VIRTQ_DESC_NEXT, 1};
        txq.desc[1] = (struct virtq_desc){(uintptr_t)tx_buf + NET_HDR, 60, VIRTQ_DESC_NEXT, 0};
    } else {
        printf("net test-garbage: KIND is header, big, short, writable or loop\n");
        return;
    }
    bool used = tx_submit();
    uint8_t st = vpci_rd8(net.pci.common + CC_STATUS);
    (void)vpci_rd8(net.pci.isr);
    printf("net test-garbage %s: %s, device status 0x%x%s\n", kind, used ? "sent" : "not sent", st,
           st & VIRTIO_STATUS_NEEDS_RESET ? " (NEEDS_RESET)" : "");
}

void cmd_net(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "info";
    if (!strcmp(sub, "info") && argc <= 2) {
        if (!net_ready())
            return;
        char mac[18];
        put_mac(mac, net.mac);
        uint16_t link = vpci_rd16(net.pci.devcfg + 6);
        printf("net: virtio-net at 00:%02x.0, MAC %s, link %s, status 0x%x\n", net.pci.slot, mac,
               link & 1 ? "up" : "down", vpci_rd8(net.pci.common + CC_STATUS));
    } else if (!strcmp(sub, "arp") && argc == 2) {
        if (net_ready())
            cmd_arp();
    } else if (!strcmp(sub, "test-garbage") && argc <= 3) {
        if (net_ready())
            cmd_garbage(argc == 3 ? argv[2] : "header");
    } else {
        printf("usage: net info | net arp | net test-garbage [KIND]\n");
    }
}
