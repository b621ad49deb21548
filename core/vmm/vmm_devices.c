/* The machine's devices, once, in order (see vmm_priv.h). Each row says how the VMM creates a
 * device for a VM's configuration, stops what it does on its own threads, destroys it, brings
 * its requests in flight to a quiet point, and saves and loads its records. The order is the
 * order of creation (a row may use the devices above it: audio, the disk and the balloon sit
 * on the PCI bus, the framebuffer's keyboard is the i8042), saving and loading; stopping and
 * destroying go the other way. A reboot is a destroy and a create, so no row needs a reset. Adding a device
 * means adding its file and one row here. */
#include "core/storage/disk.h"
#include "core/vmm/vmm_priv.h"

static void serial_to_console(void *opaque, const unsigned char *buf, size_t len)
{
    struct vmm *v = opaque;
    console_server_output(v->console, buf, len);
}

static int no_memory(const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot create the %s (out of memory?)", what);
    return -ENOMEM;
}

/* Destroy, save and load of a device the VMM holds in v->F, through its own N_destroy, N_save
 * and N_load (an absent device saves and loads nothing). */
#define HELD_DEVICE(n, f)                                                                          \
    static void n##_row_destroy(struct vmm *v)                                                     \
    {                                                                                              \
        n##_destroy(v->f);                                                                         \
        v->f = NULL;                                                                               \
    }                                                                                              \
    static int n##_row_save(struct vmm *v, struct state_writer *w)                                 \
    {                                                                                              \
        return v->f ? n##_save(v->f, w) : 0;                                                       \
    }                                                                                              \
    static int n##_row_load(struct vmm *v, const struct state_reader *r)                           \
    {                                                                                              \
        return v->f ? n##_load(v->f, r) : 0;                                                       \
    }

/* ---- serial, RTC, i8042, PCI, PM: always there ---- */

HELD_DEVICE(serial, serial)
static int serial_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->serial = serial_create(&v->m, COM1_BASE, COM1_IRQ, serial_to_console, v);
    return v->serial ? 0 : no_memory("serial port", err, errlen);
}

HELD_DEVICE(rtc, rtc)
static int rtc_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->rtc = rtc_create(&v->m);
    return v->rtc ? 0 : no_memory("RTC", err, errlen);
}

HELD_DEVICE(i8042, i8042)
static int i8042_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->i8042 = i8042_create(&v->m);
    return v->i8042 ? 0 : no_memory("keyboard controller", err, errlen);
}

HELD_DEVICE(pci, pci)
static int pci_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->pci = pci_create(&v->m);
    return v->pci ? 0 : no_memory("PCI bus", err, errlen);
}

HELD_DEVICE(pm, pm)
static int pm_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->pm = pm_create(&v->m);
    return v->pm ? 0 : no_memory("ACPI PM ports", err, errlen);
}

/* ---- sound: [audio] enabled and a mixer to clock it (backends->audio.create); a card that
 * cannot start is logged and the VM runs without ---- */

static void audio_row_destroy(struct vmm *v)
{
    if (v->audio)
        v->backends->audio.destroy(v->audio);
    es1370_destroy(v->es1370);
    pcspk_destroy(v->pcspk);
    v->audio = NULL, v->es1370 = NULL, v->pcspk = NULL;
}
static int audio_row_create(struct vmm *v, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (!v->audio_configured) { /* later boots keep what `vmws volume` set */
        v->audio_attenuation = 100 - (v->cfg->audio.volume <= 100 ? v->cfg->audio.volume : 100);
        v->audio_muted = v->cfg->audio.muted;
        v->audio_configured = true;
    }
    if (!v->cfg->audio.enabled || !v->backends || !v->backends->audio.create)
        return 0;
    struct audio_config acfg = {
        .vm_name = v->cfg->name, .volume = 100 - v->audio_attenuation, .muted = v->audio_muted};
    v->es1370 = es1370_create(&v->m, v->pci, ES1370_PCI_SLOT);
    v->pcspk = pcspk_create(&v->m);
    if (v->es1370 && v->pcspk)
        v->audio = v->backends->audio.create(&v->m, v->es1370, v->pcspk, &acfg);
    if (!v->audio) {
        vmm_log("audio: cannot create the sound devices (PCI slot %d taken, or no mixer "
                "thread): the VM runs without sound",
                ES1370_PCI_SLOT);
        audio_row_destroy(v);
    }
    return 0;
}
/* Its mixer thread raises IRQs: stopped while the VM fd is open. */
static void audio_row_stop(struct vmm *v)
{
    if (v->audio)
        v->backends->audio.stop(v->audio);
}
/* The card's DMA runs on the mixer's thread: quiet while pages are captured or rewritten. */
static int audio_row_quiesce(struct vmm *v, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (v->es1370)
        es1370_quiesce(v->es1370);
    return 0;
}
static void audio_row_resume(struct vmm *v)
{
    if (v->es1370)
        es1370_resume(v->es1370);
    if (v->pcspk)
        pcspk_resume(v->pcspk);
}
static int audio_row_save(struct vmm *v, struct state_writer *w)
{
    if (!v->audio)
        return 0;
    int r = es1370_save(v->es1370, w);
    return r ? r : pcspk_save(v->pcspk, w);
}
static int audio_row_load(struct vmm *v, const struct state_reader *r)
{
    if (!v->audio)
        return 0;
    int e = es1370_load(v->es1370, r);
    return e ? e : pcspk_load(v->pcspk, r);
}

/* ---- the disk: [disk] path; its I/O thread serves requests while the vCPUs run ---- */

HELD_DEVICE(virtio_blk, blk)
static int virtio_blk_row_create(struct vmm *v, char *err, size_t errlen)
{
    if (!v->cfg->disk.path[0])
        return 0;
    /* The image it writes may be a snapshot's overlay: the tree knows which. Without the
     * tree, writing the configured image could change what snapshots keep. */
    if (!v->tree_ok) {
        snprintf(err, errlen, "cannot tell which disk image is current: %s", v->tree_err);
        return -EINVAL;
    }
    /* A linked clone's shared base must be the one the VM was made on. */
    if (v->cfg->disk.base[0] &&
        disk_base_check(v->cfg->disk.base, v->cfg->disk.base_stamp, err, errlen) < 0)
        return -EINVAL;
    char path[PATH_MAX];
    const char *active = disksnap_active(&v->tree, v->cfg->disk.path);
    disksnap_path(&v->tree, active, path, sizeof(path));
    v->blk = virtio_blk_create(&v->m, v->pci, VIRTIO_BLK_PCI_SLOT, path,
                               disksnap_format(&v->tree, active), v->cfg->disk.path, err, errlen);
    return v->blk ? 0 : -EIO;
}
static void virtio_blk_row_stop(struct vmm *v)
{
    char err[256];
    if (v->blk && virtio_blk_quiesce(v->blk, 5000, err, sizeof(err)) < 0)
        vmm_log("%s", err); /* its I/O thread raises IRQs too: no new requests from here */
}
static int virtio_blk_row_quiesce(struct vmm *v, char *err, size_t errlen)
{
    return v->blk ? virtio_blk_quiesce(v->blk, 2000, err, errlen) : 0;
}
static void virtio_blk_row_resume(struct vmm *v)
{
    if (v->blk)
        virtio_blk_resume(v->blk);
}

/* ---- the network card: [net] enabled; its I/O thread and slirp's serve frames while the
 * vCPUs run ---- */

HELD_DEVICE(virtio_net, net)
static int virtio_net_row_create(struct vmm *v, char *err, size_t errlen)
{
    if (!v->cfg->net.enabled)
        return 0;
    v->net = virtio_net_create(&v->m, v->pci, VIRTIO_NET_PCI_SLOT, &v->cfg->net, err, errlen);
    return v->net ? 0 : -EIO;
}
static void virtio_net_row_stop(struct vmm *v)
{
    char err[256];
    if (v->net && virtio_net_quiesce(v->net, 5000, err, sizeof(err)) < 0)
        vmm_log("%s", err); /* its I/O thread raises IRQs too: no new frames from here */
}
static int virtio_net_row_quiesce(struct vmm *v, char *err, size_t errlen)
{
    return v->net ? virtio_net_quiesce(v->net, 2000, err, errlen) : 0;
}
static void virtio_net_row_resume(struct vmm *v)
{
    if (v->net)
        virtio_net_resume(v->net);
}
/* ---- the balloon: [balloon] enabled (the default); its target outlives reboots (a rebooted
 * guest's driver inflates to it again) ---- */

static void virtio_balloon_row_destroy(struct vmm *v)
{
    virtio_balloon_destroy(v->balloon);
    v->balloon = NULL;
}
static int virtio_balloon_row_create(struct vmm *v, char *err, size_t errlen)
{
    if (!v->cfg->balloon.enabled)
        return 0;
    v->balloon = virtio_balloon_create(&v->m, v->pci, VIRTIO_BALLOON_PCI_SLOT, v->balloon_target,
                                       v->cfg->balloon.free_page_reporting);
    if (!v->balloon)
        snprintf(err, errlen, "cannot create the virtio-balloon at PCI slot %d (see vmm.log)",
                 VIRTIO_BALLOON_PCI_SLOT);
    return v->balloon ? 0 : -EIO;
}
static void virtio_balloon_row_stop(struct vmm *v)
{
    char err[256];
    if (v->balloon && virtio_balloon_quiesce(v->balloon, 5000, err, sizeof(err)) < 0)
        vmm_log("%s", err); /* its I/O thread raises IRQs: no new requests from here */
}
static int virtio_balloon_row_quiesce(struct vmm *v, char *err, size_t errlen)
{
    return v->balloon ? virtio_balloon_quiesce(v->balloon, 2000, err, errlen) : 0;
}
static void virtio_balloon_row_resume(struct vmm *v)
{
    if (v->balloon)
        virtio_balloon_resume(v->balloon);
}
static int virtio_balloon_row_save(struct vmm *v, struct state_writer *w)
{
    return v->balloon ? virtio_balloon_save(v->balloon, w) : 0;
}
/* After a load the state's target is the one a reboot keeps. */
static int virtio_balloon_row_load(struct vmm *v, const struct state_reader *r)
{
    int rc = v->balloon ? virtio_balloon_load(v->balloon, r) : 0;
    if (rc == 0 && v->balloon)
        v->balloon_target = virtio_balloon_target(v->balloon);
    return rc;
}

/* ---- the guest agent's port: always there (a guest without a driver or an agent never opens
 * it, and every use of the agent falls back) ---- */

HELD_DEVICE(virtio_console, vcon)
static int virtio_console_row_create(struct vmm *v, char *err, size_t errlen)
{
    v->vcon = virtio_console_create(&v->m, v->pci, VIRTIO_CONSOLE_PCI_SLOT,
                                    "org.qemu.guest_agent.0", &vmm_agent_port, v);
    if (!v->vcon)
        snprintf(err, errlen, "cannot create the virtio-console at PCI slot %d (see vmm.log)",
                 VIRTIO_CONSOLE_PCI_SLOT);
    return v->vcon ? 0 : -EIO;
}
static void virtio_console_row_stop(struct vmm *v)
{
    char err[256];
    if (v->vcon && virtio_console_quiesce(v->vcon, 5000, err, sizeof(err)) < 0)
        vmm_log("%s", err);
}
static int virtio_console_row_quiesce(struct vmm *v, char *err, size_t errlen)
{
    return v->vcon ? virtio_console_quiesce(v->vcon, 2000, err, errlen) : 0;
}
static void virtio_console_row_resume(struct vmm *v)
{
    if (v->vcon)
        virtio_console_resume(v->vcon);
}

/* ---- the framebuffer: it outlives reboots and is attached to each machine ---- */

static int framebuffer_row_create(struct vmm *v, char *err, size_t errlen)
{
    return framebuffer_attach(v->fb, &v->m, v->i8042, err, errlen);
}
static void framebuffer_row_stop(struct vmm *v)
{
    framebuffer_detach(v->fb);
}
static int framebuffer_row_save(struct vmm *v, struct state_writer *w)
{
    return framebuffer_save(v->fb, w);
}
static int framebuffer_row_load(struct vmm *v, const struct state_reader *r)
{
    return framebuffer_load(v->fb, r);
}

#define ROW(n, tg, ver, ...)                                                                       \
    {                                                                                              \
        .name = #n, .tag = tg, .version = ver, .create = n##_row_create, .save = n##_row_save,     \
        .load = n##_row_load, __VA_ARGS__                                                          \
    }

const struct vmm_device vmm_devices[] = {
    ROW(serial, STATE_TAG('U', 'A', 'R', 'T'), 1, .destroy = serial_row_destroy),
    ROW(rtc, STATE_TAG('C', 'M', 'O', 'S'), 1, .destroy = rtc_row_destroy),
    ROW(i8042, STATE_TAG('8', '0', '4', '2'), 1, .destroy = i8042_row_destroy),
    ROW(pci, STATE_TAG('P', 'C', 'I', 'A'), 1, .destroy = pci_row_destroy),
    ROW(pm, STATE_TAG('A', 'C', 'P', 'M'), 2, .destroy = pm_row_destroy),
    ROW(audio, STATE_TAG('E', 'S', '1', '3'), 1, .stop = audio_row_stop,
        .destroy = audio_row_destroy, .quiesce = audio_row_quiesce, .resume = audio_row_resume),
    ROW(virtio_blk, STATE_TAG('V', 'B', 'L', 'K'), 1, .stop = virtio_blk_row_stop,
        .destroy = virtio_blk_row_destroy, .quiesce = virtio_blk_row_quiesce,
        .resume = virtio_blk_row_resume),
    ROW(virtio_net, STATE_TAG('V', 'N', 'E', 'T'), 1, .stop = virtio_net_row_stop,
        .destroy = virtio_net_row_destroy, .quiesce = virtio_net_row_quiesce,
        .resume = virtio_net_row_resume),
    ROW(virtio_balloon, STATE_TAG('V', 'B', 'A', 'L'), 1, .stop = virtio_balloon_row_stop,
        .destroy = virtio_balloon_row_destroy, .quiesce = virtio_balloon_row_quiesce,
        .resume = virtio_balloon_row_resume),
    ROW(virtio_console, STATE_TAG('V', 'C', 'O', 'N'), 1, .stop = virtio_console_row_stop,
        .destroy = virtio_console_row_destroy, .quiesce = virtio_console_row_quiesce,
        .resume = virtio_console_row_resume),
    ROW(framebuffer, STATE_TAG('F', 'B', 'C', 'F'), 1, .stop = framebuffer_row_stop),
};
const size_t vmm_ndevices = sizeof(vmm_devices) / sizeof(vmm_devices[0]);
