/* A VM's configuration: the human-editable INI file `vm.conf` in the VM's directory.
 * Parsing is strict: an unknown key or a bad value is an error naming file, line and what is
 * wrong, so a typo never silently boots a different machine than the user wrote. */
#ifndef VMWS_VMCONFIG_H
#define VMWS_VMCONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define VM_NAME_MAX 64
#define VM_APPEND_MAX 2048
#define VM_CPUS_MAX 64

enum mem_backend {
    MEM_BACKEND_FILE,      /* sparse NAME.vmem in the VM dir, MAP_SHARED (default) */
    MEM_BACKEND_SHM,       /* memfd: the unlinked hidden file of seed 000 */
    MEM_BACKEND_ANON,      /* private anonymous: KSM-mergeable, THP */
    MEM_BACKEND_HUGETLBFS, /* memfd with MFD_HUGETLB */
};

/* [display] in vm.conf (see core/config/dconfig.c). */
struct vm_display_config {
    char mode[16]; /* auto (SDL if a display exists, and VNC), sdl, vnc, sdl,vnc, none */
    unsigned width, height;
    char vnc_listen[64]; /* ADDRESS or ADDRESS:PORT (port 0 or none = first free from 5900), or unix
                          */
    char vnc_password_file[PATH_MAX]; /* "" = DIR/vnc.passwd if it exists; mode 0600 */
};

/* [audio] in vm.conf (see core/config/aconfig.c). */
struct vm_audio_config {
    bool enabled;    /* ES1370 + PC speaker + PulseAudio stream (default yes) */
    unsigned volume; /* 0..100, default 100 */
    bool muted;
};

/* [balloon] in vm.conf (see core/config/bconfig.c). */
struct vm_balloon_config {
    bool enabled;             /* the virtio-balloon at 00:08.0 (default yes) */
    bool free_page_reporting; /* offered to the guest's driver (default yes) */
};

/* [memory] in vm.conf (see core/config/mconfig.c); sizes in bytes, 0 = not set. */
#define VM_SHARES_DEFAULT 1000
struct vm_memory_config {
    uint64_t reservation;    /* guaranteed floor: memory.min; admission control counts it */
    uint64_t limit;          /* ceiling on what the host holds for the VM: memory.max (0 = none) */
    unsigned shares;         /* priority when the host is short (default 1000) */
    bool dynamic;            /* the VMM moves the balloon target itself (default no) */
    uint64_t min, max;       /* dynamic memory's bounds on what the guest keeps (0 = 0 / all RAM) */
    unsigned buffer_percent; /* headroom over the guest's demand, percent (default 20) */
};

/* [disk] in vm.conf: the virtio-blk disk's image, a name in the VM's directory or an
 * absolute path; "" = no disk. format: "raw" or "qcow2" ("" = probed at every open, which lets
 * a guest that writes a qcow2 header into its raw disk choose a backing file: set it).
 * base: the shared, read-only image at the bottom of the disk's backing chain (a linked clone,
 * `create --os`), absolute; base_stamp: what it was when the VM was made (disk_stamp()), which
 * the VMM checks before it boots. */
struct vm_disk_config {
    char path[PATH_MAX];
    char format[8];
    char base[PATH_MAX];
    char base_stamp[64];
};

/* [net] in vm.conf (see core/config/nconfig.c): the virtio-net card and its user-mode NAT. A
 * vm.conf without [net] (VMs made before networking) has it on, with the MAC derived from the
 * name; `vmws create --net none` writes enabled = no. */
#define VM_NET_FORWARDS_MAX 16
struct vm_net_forward {
    bool udp;
    uint16_t host_port, guest_port; /* host 127.0.0.1:HOST_PORT -> guest GUEST_PORT */
};
struct vm_net_config {
    bool enabled; /* default yes */
    bool mac_set; /* mac came from vm.conf; else derived from the VM's name */
    uint8_t mac[6];
    unsigned nforwards;
    struct vm_net_forward forwards[VM_NET_FORWARDS_MAX];
};

struct vm_config {
    char name[VM_NAME_MAX];
    uint64_t memory_bytes; /* guest RAM, multiple of 2 MiB, 16 MiB .. 1 TiB */
    unsigned cpus;         /* 1 .. VM_CPUS_MAX */
    enum mem_backend backend;
    bool memory_sharing;    /* KSM may merge identical guest pages (anon backend; default no) */
    bool memory_huge_pages; /* transparent huge pages (anon and shm backends; default yes) */
    char kernel[PATH_MAX];  /* "" = the built-in guest */
    char initrd[PATH_MAX];  /* "" = none */
    char append[VM_APPEND_MAX];
    struct vm_display_config display;
    struct vm_audio_config audio;
    struct vm_disk_config disk;
    struct vm_net_config net;
    struct vm_balloon_config balloon;
    struct vm_memory_config memory;
};

/* Fills defaults: 1 GiB, 1 vCPU, file backend, built-in kernel, console=ttyS0 cmdline. */
void vmconfig_defaults(struct vm_config *cfg, const char *name);

/* Parses PATH into CFG (which starts from defaults). On error returns -1 and writes
 * "PATH:LINE: what is wrong" into ERR. */
int vmconfig_load(const char *path, struct vm_config *cfg, char *err, size_t errlen);

/* Writes CFG to PATH atomically (temp file, fsync, rename). Returns 0 or -errno. */
int vmconfig_save(const char *path, const struct vm_config *cfg);

/* Sets KEYS[i] = VALUES[i] (N of them) in [SECTION] of the vm.conf at PATH, in place: every
 * other line - the user's comments, blank lines, order - stays as it was; a key that is missing
 * is added at the end of its section, a missing section at the end. Atomic, like
 * vmconfig_save. Returns 0 or -errno (-E2BIG for more than VMCONFIG_SET_MAX keys). */
#define VMCONFIG_SET_MAX 16
int vmconfig_set(const char *path, const char *section, const char *const *keys,
                 const char *const *values, size_t n);
/* Serialises a read-modify-write of the vm.conf at PATH among processes (vm.conf itself is
 * replaced by rename, so the lock is on its folder). Returns an fd whose close() unlocks, or
 * -errno. */
int vmconfig_lock(const char *path);

/* "1G", "512M", "1073741824", "2048K" -> bytes. Returns 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *out);

/* [display] keys (core/config/dconfig.c): returns 1 if set, 0 with ERR for a bad key or value. */
int vmconfig_display_key(struct vm_display_config *d, const char *name, const char *value,
                         char *err, size_t errlen);
void vmconfig_display_defaults(struct vm_display_config *d);
/* Writes the [display] section. */
void vmconfig_display_write(FILE *f, const struct vm_display_config *d);
/* [audio] keys (core/config/aconfig.c), the same way. */
int vmconfig_audio_key(struct vm_audio_config *a, const char *name, const char *value, char *err,
                       size_t errlen);
void vmconfig_audio_defaults(struct vm_audio_config *a);
void vmconfig_audio_write(FILE *f, const struct vm_audio_config *a);
/* [balloon] keys (core/config/bconfig.c), the same way. */
int vmconfig_balloon_key(struct vm_balloon_config *b, const char *name, const char *value,
                         char *err, size_t errlen);
void vmconfig_balloon_defaults(struct vm_balloon_config *b);
void vmconfig_balloon_write(FILE *f, const struct vm_balloon_config *b);
/* [memory] keys (core/config/mconfig.c), the same way; vmconfig_memory_check tells, once the
 * file is read, whether they fit together and the VM's RAM (0, or -1 with ERR). */
int vmconfig_memory_key(struct vm_memory_config *m, const char *name, const char *value, char *err,
                        size_t errlen);
void vmconfig_memory_defaults(struct vm_memory_config *m);
int vmconfig_memory_check(const struct vm_memory_config *m, uint64_t ram, char *err, size_t errlen);
void vmconfig_memory_write(FILE *f, const struct vm_memory_config *m);
/* "yes"/"true"/"on"/"1" or "no"/"false"/"off"/"0" -> *OUT; -1 for anything else. */
int vmconfig_parse_bool(const char *s, bool *out);

/* [net] keys (core/config/nconfig.c), the same way; forward may repeat. */
int vmconfig_net_key(struct vm_net_config *n, const char *name, const char *value, char *err,
                     size_t errlen);
/* On, no forwards, the MAC derived from NAME (52:54:00 and three bytes of its hash). */
void vmconfig_net_defaults(struct vm_net_config *n, const char *name);
void vmconfig_net_write(FILE *f, const struct vm_net_config *n);
/* "tcp:HOSTPORT:GUESTPORT" or "udp:..." (ports 1-65535) -> *F; 0, or -EINVAL with ERR. */
int vmconfig_net_forward_parse(const char *s, struct vm_net_forward *f, char *err, size_t errlen);
/* Adds F to N's forwards: 0, or -EINVAL with ERR (a host port forwarded twice, too many). */
int vmconfig_net_forward_add(struct vm_net_config *n, const struct vm_net_forward *f, char *err,
                             size_t errlen);
/* "tcp:8080:80" (at least 16 bytes) and "52:54:00:12:34:56" (at least 18). */
void vmconfig_net_forward_format(const struct vm_net_forward *f, char *buf, size_t len);
void vmconfig_net_mac_format(const uint8_t mac[6], char *buf, size_t len);

const char *mem_backend_name(enum mem_backend b);
int mem_backend_parse(const char *s, enum mem_backend *out);

/* A VM name is 1..63 chars of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool vm_name_valid(const char *name);

#endif
