/* The box's exec protocol: how `vmws box exec` on the host and the agent inside the box talk
 * over one TCP connection (QEMU forwards 127.0.0.1:PORT on the host to the agent).
 * The one idea: everything is a frame, a type byte and a 32-bit big-endian length, then the
 * payload; control frames carry JSON, data frames carry raw bytes. One connection runs one
 * command, so concurrency is simply several connections.
 *
 *   agent -> client   BOX_HELLO   {"vmws-box": VERSION}            once, on connect
 *   client -> agent   BOX_REQUEST {"token", "argv", "cwd", "env", "stdin", "merge"[, "tty"]}
 *                     "tty": {"rows", "cols"}: the command runs on a pseudo-terminal of that
 *                     size (its output comes as BOX_STDOUT; stdin goes to the terminal)
 *   client -> agent   BOX_WINSIZE {"rows", "cols"}: the client's terminal was resized
 *   client -> agent   BOX_STDIN   bytes; an empty one is end of input
 *   client -> agent   BOX_SIGNAL  {"signal": N} for the command's process group
 *   agent -> client   BOX_STDOUT / BOX_STDERR bytes
 *   agent -> client   BOX_EXIT    {"exit": N} or {"signal": N} or {"error": "why"}
 *   client -> agent   BOX_POWEROFF {"token"}: the box shuts down (`vmws box stop`)
 */
#ifndef VMWS_BOX_WIRE_H
#define VMWS_BOX_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum box_frame_type {
    BOX_HELLO = 'H',
    BOX_REQUEST = 'R',
    BOX_STDIN = 'I',
    BOX_SIGNAL = 'K',
    BOX_STDOUT = 'O',
    BOX_STDERR = 'E',
    BOX_EXIT = 'X',
    BOX_POWEROFF = 'P',
    BOX_WINSIZE = 'W',
};

/* Largest payload either side sends or accepts (a request carries the environment). */
#define BOX_FRAME_MAX (1u << 20)
/* The port the agent listens on inside the box. */
#define BOX_AGENT_PORT 7000
#define BOX_POKE_PORT 7001 /* the supervisor's datagrams (launch.c); nothing listens */

/* Writes one frame (blocking, retries short writes). Returns 0 or -errno. */
int box_frame_write(int fd, uint8_t type, const void *data, size_t len);
/* Writes a frame whose payload is J serialised (J is not consumed). Returns 0 or -errno. */
int box_frame_write_json(int fd, uint8_t type, const json_t *j);

/* Incremental reader for a non-blocking or polled socket. */
struct box_reader {
    uint8_t hdr[5];
    size_t hdr_len;
    uint8_t *data;   /* payload being filled, BOX_FRAME_MAX at most */
    size_t len, got; /* payload length and bytes received */
};
/* Reads what FD has. Returns 1 with a complete frame in *TYPE / R->data / R->len (valid until
 * the next call), 0 if more bytes are needed, -EPIPE at end of stream, -EPROTO for an oversized
 * frame, or -errno. */
int box_reader_step(struct box_reader *r, int fd, uint8_t *type);
void box_reader_free(struct box_reader *r);
/* Reads one whole frame, waiting up to TIMEOUT_MS for each part (-1: no limit). Same results
 * as box_reader_step, never 0; -ETIMEDOUT when the wait runs out. */
int box_reader_next(struct box_reader *r, int fd, uint8_t *type, int timeout_ms);
/* The current frame's payload parsed as a JSON object, or NULL. */
json_t *box_reader_json(const struct box_reader *r);

#endif
