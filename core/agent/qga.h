/* A client of the QEMU guest agent protocol (qemu-ga, which Debian ships as qemu-guest-agent):
 * JSON commands over a byte stream to the guest, one JSON reply per line. The one idea: every
 * call first resynchronises the stream with guest-sync-delimited (a 0xFF byte, then a random id
 * the agent echoes after a 0xFF of its own), so garbage or a reply left over from before a
 * revert never passes for an answer; and every wait is bounded, so a guest without an agent, or
 * with one that hangs, costs a call its timeout at most, never a hang. Thread-safe: the stream's
 * bytes arrive on any thread (qga_receive), calls are made one at a time on others. */
#ifndef VMWS_QGA_H
#define VMWS_QGA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sends bytes to the guest: 0 or -errno (-ENOTCONN: no agent has the port open). */
typedef int (*qga_send_fn)(void *opaque, const void *buf, size_t len);

struct qga;
struct qga *qga_create(qga_send_fn send, void *opaque);
/* Fails the calls in flight (-ESHUTDOWN), waits for them to return and frees the client. */
void qga_destroy(struct qga *a);
/* Bytes from the guest, and whether a program in the guest has the port open (the device's
 * callbacks; they never wait on the guest). */
void qga_receive(struct qga *a, const uint8_t *buf, size_t len);
void qga_set_connected(struct qga *a, bool connected);
bool qga_connected(struct qga *a);
/* Runs CMD with ARGS (stolen; NULL for none) and waits up to TIMEOUT_MS for the answer: 0 with
 * *RET the reply's "return" value (the caller's to decref; NULL if RET is NULL), or -errno with
 * ERR saying why: -ENOTCONN "no guest agent" (nothing has the port open), -ETIMEDOUT, -EIO (the
 * agent answered with an error, its description in ERR). NO_REPLY: the command answers only on
 * failure (guest-shutdown): 0 once no error came within TIMEOUT_MS. */
int qga_call(struct qga *a, const char *cmd, json_t *args, unsigned timeout_ms, bool no_reply,
             json_t **ret, char *err, size_t errlen);

#endif
