/* Where a VM's files live. Persistent files (config, .vmem, logs, snapshots) are in
 * $VMWS_HOME/NAME/ (default ~/.local/share/vmws); sockets are in a private 0700 runtime dir
 * ($VMWS_RUNTIME_DIR, else $XDG_RUNTIME_DIR/vmws, else /tmp/vmws-UID), because socket paths
 * are limited to 108 bytes and must not be world-reachable. */
#ifndef VMWS_PATHS_H
#define VMWS_PATHS_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

struct vm_paths {
    char dir[PATH_MAX];           /* $VMWS_HOME/NAME */
    char config[PATH_MAX];        /* dir/vm.conf */
    char vmem[PATH_MAX];          /* dir/NAME.vmem */
    char serial_log[PATH_MAX];    /* dir/serial.log */
    char vmm_log[PATH_MAX];       /* dir/vmm.log: the VMM's own messages */
    char pidfile[PATH_MAX];       /* dir/vmm.pid */
    char suspend_state[PATH_MAX]; /* dir/suspend.state: machine state while suspended */
    char ctl_sock[PATH_MAX];      /* runtime/NAME.ctl: JSON control socket */
    char console_sock[PATH_MAX];  /* runtime/NAME.console: raw serial bytes */
    char vnc_sock[PATH_MAX];      /* runtime/NAME.vnc: VNC, with [display] vnc_listen = unix */
};

/* $VMWS_HOME or ~/.local/share/vmws, created 0700 if missing. Returns 0 or -errno. */
int paths_home(char *out, size_t len);
/* The runtime dir, created 0700; refuses one owned by another user. Returns 0 or -errno. */
int paths_runtime(char *out, size_t len);
/* Fills P for VM NAME (does not create anything). Returns 0 or -ENAMETOOLONG/-errno. */
int paths_for_vm(const char *name, struct vm_paths *p);

/* The pidfile: written and locked by `vmws run` for the VMM's lifetime. */
int pidfile_acquire(const char *path, pid_t *holder); /* returns fd, or -EBUSY (*HOLDER) */
/* The pid of a live VMM holding PATH's lock, or 0. */
pid_t pidfile_live_pid(const char *path);

#endif
