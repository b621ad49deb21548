/* The KVM box: a real KVM on machines without one. QEMU in software mode emulates an AMD CPU
 * with SVM and nested paging and boots the machine's own Debian kernel, which loads kvm_amd;
 * the host's / (read-only, with a tmpfs on top) and chosen directories (read-write, at their
 * own paths) are shared over virtio-9p, so every host program runs in the box unchanged.
 * An agent in the box (`vmws box agent`, this same binary) runs commands for the host over a
 * TCP port QEMU forwards from 127.0.0.1 (wire.h).
 *
 * The one idea: a box is its state directory. `box_start` builds what it needs, starts QEMU
 * under a supervisor process that holds STATE/lock for the box's whole life and records why
 * it ended; every other operation finds the box through that directory. */
#ifndef VMWS_BOX_H
#define VMWS_BOX_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BOX_MAX_SHARES 8
/* The box's own address on its (QEMU user-mode) network: init.sh gives eth0 this. */
#define BOX_GUEST_ADDR "10.0.2.15"

/* Exit statuses of `vmws box run|exec` besides the command's own: the box failed (its kernel
 * panicked, QEMU died, it never became ready), and the time limit ran out (as timeout(1)). */
#define BOX_EXIT_FAILED 125
#define BOX_EXIT_TIMEOUT 124
/* Every command in a box has a time limit; this one unless --timeout says otherwise. */
#define BOX_DEFAULT_TIMEOUT_S (6 * 3600)

struct box_config {
    char dir[PATH_MAX];                    /* state directory */
    char shares[BOX_MAX_SHARES][PATH_MAX]; /* read-write at the same path in the box */
    int nshares;
    unsigned cpus;          /* 0: every host CPU */
    uint64_t memory;        /* 0: the default (8 GiB, at most 3/4 of the host's RAM) */
    int idle_timeout_s;     /* the box powers off after this long without a command; 0: never */
    int boot_timeout_s;     /* 0: 180 s */
    bool quiet;             /* no progress lines on stderr */
    bool tied;              /* the box dies with the process that started it (box run) */
    bool idle_when_empty;   /* idle means also: nothing but the agent runs in the box (the VMs
                               of `vmws` in the box keep it up; it stops after the last) */
    int forwards[16];       /* TCP ports forwarded from the host's 127.0.0.1 to the same
                               ports on the box's address, BOX_GUEST_ADDR */
    int nforwards;
    bool host_report;       /* the supervisor keeps STATE/host.meminfo: the host's
                               /proc/meminfo and a line "VmwsBoxRss: N kB" (QEMU's RSS) */
};

/* True if PATH is inside one of C's shares. */
bool box_shares_cover(const struct box_config *c, const char *path);

/* What a box needs from the machine, found and checked. Every failure names the cause and
 * the Debian package that cures it. */
struct box_host {
    char qemu[PATH_MAX];    /* qemu-system-x86_64 */
    char kernel[PATH_MAX];  /* /boot/vmlinuz-VERSION */
    char kver[128];         /* VERSION, whose /lib/modules/VERSION has kvm-amd.ko */
    char busybox[PATH_MAX]; /* a static busybox */
};
int box_host_find(struct box_host *h, char *why, size_t whylen);

/* The initramfs for H's kernel: busybox, the box's init and the modules it loads, cached in
 * CACHE_DIR under a name that changes with any of its inputs. Built only when missing.
 * Returns 0 (path in OUT) or -errno with WHY. */
int box_initramfs(const struct box_host *h, const char *cache_dir, char *out, size_t outlen,
                  char *why, size_t whylen);

/* The kernel QEMU loads: H's bzImage decompressed into an ELF that QEMU starts at its PVH
 * entry (which skips seconds of emulated decompression at every boot), cached in CACHE_DIR.
 * Where that is not possible (no decompressor, no PVH note) OUT is the bzImage itself and
 * the result negative; either way OUT boots. */
int box_kernel_image(const struct box_host *h, const char *cache_dir, char *out, size_t outlen);

/* True if this machine's /dev/kvm can run a guest (a vCPU executes HLT); else WHY says what
 * failed. */
bool box_kvm_native(char *why, size_t whylen);

/* The default state directory: $VMWS_BOX_DIR, else RUNTIME/box. Returns 0 or -errno. */
int box_default_dir(char *out, size_t len);

/* Starts the box described by C unless one already runs in C->dir (then returns 0 at once;
 * starts are serialised by a lock). Returns once its agent answers, 0; or -errno after
 * printing why on stderr (with the tail of the box's console when the box itself failed). */
int box_start(const struct box_config *c);

/* Facts about the running box in DIR. */
struct box_status {
    bool running;
    pid_t supervisor, qemu;
    int port;          /* 127.0.0.1:port reaches the agent */
    unsigned cpus;
    uint64_t memory;
    long long started; /* unix time */
    int forwards[16];  /* TCP ports forwarded from the host's 127.0.0.1 */
    int nforwards;
    char ended[512];   /* when not running: why the last box in DIR ended, if known */
};
int box_status_read(const char *dir, struct box_status *st);

/* Stops the box in DIR (asks its agent to power off, then signals QEMU). Returns 0, or
 * -ESRCH if none runs. */
int box_stop(const char *dir, int timeout_s);

/* What a command in the box gets as its standard input. */
enum box_stdin {
    BOX_STDIN_NULL = 0, /* /dev/null */
    BOX_STDIN_PIPE = 1, /* ours, relayed */
    BOX_STDIN_TTY = 2,  /* a pseudo-terminal in the box, relayed to and from ours (which is
                           put in raw mode meanwhile; its size follows ours) */
};

/* Runs ARGV in the box in DIR, in CWD, with this process's environment; relays stdout and
 * stderr as they come (and stdin as IN says). Returns the command's exit status (128+N
 * if a signal ended it), BOX_EXIT_TIMEOUT after TIMEOUT_S (0: no limit), or BOX_EXIT_FAILED
 * after printing why the box failed. */
int box_exec(const char *dir, char *const argv[], const char *cwd, enum box_stdin in,
             int timeout_s);

/* Connects to the agent of the box on PORT and reads its hello. Returns the socket (non-
 * blocking) or -errno (-ECONNREFUSED, -ETIMEDOUT: not up yet). */
int box_connect(int port, int timeout_ms);
/* The token of the box in DIR, which every request must carry. Returns 0 or -errno. */
int box_read_token(const char *dir, char *out, size_t len);

/* The console log's last LINES lines to stderr, each prefixed; a panic is named first. */
void box_print_console_tail(const char *dir, int lines);

/* Inside the box: the agent, PID 1 after the init script. Never returns. */
int box_agent_main(int argc, char **argv);

#endif
