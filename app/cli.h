/* Shared pieces of the vmws command line: one function per subcommand, the error reporting
 * convention and the helpers that find a VM and ask its VMM what state it is in.
 * The one idea: "running" means the VM's control socket answers with a greeting; the pidfile
 * (locked by the VMM for its whole life) only serves to find and signal the process. */
#ifndef VMWS_CLI_H
#define VMWS_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config/paths.h"
#include "core/config/vmconfig.h"
#include "core/control/ctl.h"

/* Exit statuses. */
#define EXIT_USAGE 2

struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the command name */
    const char *usage;                /* "NAME [--json]" */
    const char *summary;              /* one line for `vmws help` */
    const char *details;              /* options, printed by `vmws COMMAND --help` */
};

extern const struct cli_command cli_commands[];
const struct cli_command *cli_find(const char *name);

/* Prints "vmws: MSG" to stderr. Returns 1 (the exit status of a failure). */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "vmws CMD: MSG (see 'vmws CMD --help')" to stderr. Returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the usage of CMD to stdout. Returns 0. */
int cli_print_help(const char *cmd);

/* Option parsing shared by the subcommands: getopt_long over ARGV (long options only, plus
 * -h) with GNU argument permutation, so options may follow the VM name. Returns the option's
 * val, -1 when done, 'h' for --help, or '?' after printing a usage error. */
struct option;
int cli_getopt(int argc, char **argv, const struct option *longopts);
/* Checks that exactly N positional arguments remain after the options; prints a usage error
 * naming WHAT (e.g. "NAME") otherwise. Returns 0 or EXIT_USAGE. */
int cli_positional(int argc, char **argv, int n, const char *what);

/* The common command line "[--json] [--yes] POSITIONALS": --help prints the usage and returns
 * -1; --json sets *JSON (an error if JSON is NULL); --yes is accepted (commands that would ask
 * for confirmation on a terminal don't ask with it); then exactly NPOS positionals (named
 * WHAT in errors). Returns 0, -1 (help shown) or EXIT_USAGE. */
int cli_parse_common(int argc, char **argv, int npos, const char *what, bool *json);

/* Looks up VM NAME: validates the name, fills paths, checks the directory exists and (if CFG)
 * loads its config. On failure prints the error and returns 1. */
int cli_vm_open(const char *name, struct vm_paths *p, struct vm_config *cfg);

/* VM state as the control socket reports it. */
struct cli_vm_state {
    bool running;   /* the control socket answered */
    char state[32]; /* "running", "paused", ... or "off" */
    pid_t pid;      /* from query-status or the pidfile, 0 if unknown */
    unsigned cpus;
    uint64_t memory;
    int64_t uptime_ms; /* -1 if unknown */
    char detail[256];  /* why, when the VMM reports a crashed guest */
    bool suspended;    /* not running, with a saved suspend state: "suspended" */
};
/* Asks the VM's VMM (query-status). Never fails: a VM that does not answer is "off". */
void cli_vm_query(const struct vm_paths *p, const struct vm_config *cfg, struct cli_vm_state *st);
/* Connects to a running VM's control socket; prints an error and returns NULL if it is off. */
struct ctl_client *cli_vm_connect(const char *name, const struct vm_paths *p);

/* cli_display.c: the VMM's query-display (NULL if it does not answer), and "display:" and
 * "vnc:" lines for status and start. */
/* A running VM's answer to COMMAND (no arguments, 3 s), or NULL: not running, or it failed. */
json_t *cli_vm_ask(const struct vm_paths *p, const char *command);
json_t *cli_display_query(const struct vm_paths *p);
void cli_display_print(const struct vm_paths *p, const char *prefix);
/* A new VM's VNC password: 8 random characters (letters and digits that cannot be confused)
 * in DIR/vnc.passwd, mode 0600; OUT (at least 9 bytes) gets it. Returns 0 or -errno. */
int cli_vnc_password_generate(const char *dir, char *out);
/* LEN random characters of that alphabet into OUT (LEN + 1 bytes). Returns 0 or -EIO. */
int cli_random_password(char *out, size_t len);
/* --display MODE for the next cli_start_vm() (NULL: the VM's configured mode). */
extern const char *cli_start_display_mode;
/* The next cli_start_vm() starts the VMM with its vCPUs paused (offline snapshot work). */
extern bool cli_start_paused;

/* cli_mem.c: reservation, limit, shares, the cgroup and dynamic memory - the running VMM's
 * (query-status's "management"), or from CFG when it is off - and their lines for mem/status. */
json_t *cli_mem_management(const struct vm_paths *p, const struct vm_config *cfg);
void cli_mem_management_print(json_t *management);

/* True if PID is gone (or a zombie); waits up to TIMEOUT_MS for that. */
bool pid_wait_gone(pid_t pid, int timeout_ms);
/* True if PID's command line is `vmws run NAME ...`: it is this VM's VMM, safe to signal. */
bool pid_is_vmm(pid_t pid, const char *name);
/* SIGKILLs VM NAME's VMM (if any), waits for it and removes its stale pidfile and sockets.
 * Returns 0 if a VMM was killed, 1 if none was running, or -errno. */
int cli_kill_vm(const char *name, const struct vm_paths *p);

/* "1G", "512M", "1.5G" for tables. */
void format_size(char *out, size_t len, uint64_t bytes);
/* "1h 02m 03s" */
void format_duration(char *out, size_t len, int64_t ms);
/* Prints JSON to stdout, indented, with a trailing newline. */
void print_json(json_t *j);

/* The default VM's name and first-run creation (used by `vmws` with no arguments). */
#define CLI_DEFAULT_VM "default"
#define CLI_DEFAULT_DISK (8ull << 30) /* its disk: sparse qcow2, a few hundred KiB until used */
/* Writes the VM's directory and vm.conf, and with DISK_BYTES a sparse qcow2 disk.qcow2 in it
 * (CFG's [disk] then names it). */
int cli_create_vm(const char *name, struct vm_config *cfg, uint64_t disk_bytes, bool quiet);
/* cli_create_vm whose disk starts as a copy of IMAGE (raw or qcow2), at least DISK_BYTES large;
 * WHAT names IMAGE in the message (NULL: its path). Returns 0 or 1 (the error printed). */
int cli_create_from_image(const char *name, struct vm_config *cfg, uint64_t disk_bytes,
                          const char *image, const char *what);
/* `vmws create --os OS`: the VM, its disk a copy of OS's system (app/cli_os.c). 0 or 1. */
int cli_create_os(const char *name, struct vm_config *cfg, uint64_t disk_bytes, const char *os,
                  const char *ssh_key);
int cmd_ssh(int argc, char **argv);
int cli_start_vm(const char *name, bool quiet);
int cli_console_attach(const char *name, int idle_ms);

int cmd_create(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_vnc_password(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_console(int argc, char **argv);
int cmd_mem(int argc, char **argv);
int cmd_suspend(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_volume(int argc, char **argv); /* cli_audio.c */
int cmd_box(int argc, char **argv);    /* cli_box.c */

/* cli_boxed.c: where this machine has no usable KVM (or VMWS_BOX=always), runs a VM command
 * (or the dashboard) in the KVM box and returns its exit status; -1 if it runs here. Removes
 * --no-box (which keeps everything here) from ARGV. */
int cli_boxed_dispatch(int *argc, char **argv);

#endif
