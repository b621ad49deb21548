/* Helpers for end-to-end tests: each test gets a private $VMWS_HOME and runtime dir, runs the
 * real `vmws` binary and drives the guest shell through `vmws console` on a pipe, exactly as a
 * script of a user's would. console_expect() waits for text with a deadline and reports what
 * it saw instead, so a failure message shows the guest's actual output. */
#ifndef VMWS_TESTS_E2E_H
#define VMWS_TESTS_E2E_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Creates fresh VMWS_HOME/VMWS_RUNTIME_DIR under /tmp and exports them. */
void e2e_setup(void);
/* Kills every VMM started under this test's home and removes it. */
void e2e_teardown(void);
const char *e2e_home(void);
const char *vmws_bin(void);

/* Runs vmws with ARGS (NULL-terminated); captures stdout+stderr into OUT. Returns the exit
 * status (or -1 if it did not exit within TIMEOUT_S). */
int vmws_cmd(char *out, size_t outlen, int timeout_s, const char *arg, ...);
/* `vmws ... --json` parsed; NULL on failure. */
json_t *vmws_json(const char *arg, ...);

struct console {
    pid_t pid;
    int to_guest, from_guest;
    char buf[1 << 20];
    size_t len;   /* bytes received */
    size_t mark;  /* console_expect() searches from here */
};

/* Attaches `vmws console NAME` on pipes. */
struct console *console_open(const char *name);
void console_send(struct console *c, const char *text);
/* Waits up to TIMEOUT_MS for TEXT after the mark; on success moves the mark past it. Returns
 * false on timeout (the received text is in c->buf). */
bool console_expect(struct console *c, const char *text, int timeout_ms);
/* Sends CMD + "\n" and waits for TEXT. */
bool console_run(struct console *c, const char *cmd, const char *text, int timeout_ms);
/* Text received since the mark at the time of a failed expect, for messages. */
const char *console_tail(struct console *c);
void console_close(struct console *c);

/* Runs CMD in the guest's shell through a fresh `vmws console` and waits for EXPECT and the next
 * prompt; SEEN (may be NULL) gets everything the console showed. */
bool e2e_guest(const char *vm, const char *cmd, const char *expect, char *seen, size_t seenlen);

/* Prints the end of the VM's serial.log and vmm.log to stderr (for a failure's message). */
void e2e_dump_logs(const char *vm);

/* PID of the VM's VMM from its pidfile, or -1. */
pid_t vm_pid(const char *name);
/* Waits until PID is gone; true if it went within TIMEOUT_MS. */
bool wait_pid_gone(pid_t pid, int timeout_ms);

#endif
