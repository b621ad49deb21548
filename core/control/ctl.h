/* The control socket: one JSON object per line over a Unix socket (mode 0600), modelled on
 * QMP. On connect the server sends a greeting; each request {"execute": NAME, "arguments": {...},
 * "id": ANY} gets {"return": VALUE, "id": ...} or {"error": {"class": C, "desc": D}, "id": ...};
 * events {"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": U}} go to
 * every client. The server runs on its own thread; handlers are called on that thread. */
#ifndef VMWS_CTL_H
#define VMWS_CTL_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

struct ctl_error {
    const char *cls; /* "GenericError", "CommandNotFound", "InvalidArgument", ... */
    char desc[256];
};

/* Returns a new reference to the return value ({} if nothing to say), or NULL with ERR set.
 * ARGUMENTS is never NULL: an empty object when the request had none. */
typedef json_t *(*ctl_handler_fn)(void *opaque, json_t *arguments, struct ctl_error *err);

struct ctl_command {
    const char *name;
    ctl_handler_fn fn;
};

struct ctl_server;

/* Listens on PATH (an existing stale socket is replaced; a live one is an error: another VMM
 * owns it). GREETING is borrowed and sent as {"vmws": GREETING}. CMDS must outlive the server.
 * Returns NULL with ERR set on failure. */
struct ctl_server *ctl_server_start(const char *path, json_t *greeting,
                                    const struct ctl_command *cmds, size_t ncmds, void *opaque,
                                    char *err, size_t errlen);
/* Sends an event to every connected client; DATA is borrowed (may be NULL). Thread-safe. */
void ctl_server_event(struct ctl_server *s, const char *event, json_t *data);
/* Stops the thread, closes clients, unlinks the socket. */
void ctl_server_stop(struct ctl_server *s);

/* The server's handling of the bytes one client sent, without a socket or a thread (for tests
 * and fuzzing): runs every complete request line of DATA (N bytes) against CMDS as the server
 * does and returns what the server would send back, greeting excepted (malloc'd, NUL-terminated,
 * *LEN bytes); NULL if the server would have dropped the client. A partial last line is
 * dropped, as at EOF. */
char *ctl_handle_bytes(const struct ctl_command *cmds, size_t ncmds, void *opaque, const char *data,
                       size_t n, size_t *len);

/* Client side, for the CLI and the dashboard. */
struct ctl_client;
/* Connects and reads the greeting (returned borrowed via *GREETING if non-NULL: the value the
 * server passed as GREETING, valid until ctl_client_close). Waits up to 5 s for it. */
struct ctl_client *ctl_client_connect(const char *path, json_t **greeting, char *err,
                                      size_t errlen);
/* Sends a request and waits (skipping events) for its reply, up to TIMEOUT_MS. Returns a new
 * reference to the "return" value, or NULL with ERR set ("CLASS: desc" or the I/O error).
 * ARGUMENTS stays the caller's (not stolen). */
json_t *ctl_client_execute(struct ctl_client *c, const char *command, json_t *arguments,
                           int timeout_ms, char *err, size_t errlen);
/* Waits up to TIMEOUT_MS for the next event; new reference or NULL on timeout/EOF. */
json_t *ctl_client_next_event(struct ctl_client *c, int timeout_ms);
void ctl_client_close(struct ctl_client *c);

/* A listening Unix socket for the control and console servers: replaces a stale socket file,
 * refuses a live one, mode 0600, non-blocking, close-on-exec. */
struct ctl_listener {
    int fd;
    char path[108];
    unsigned long long dev, ino; /* of the socket file, so close unlinks only our own */
};
/* Returns 0 or -errno with ERR set ("PATH: what is wrong"). */
int ctl_listener_open(struct ctl_listener *l, const char *path, char *err, size_t errlen);
/* Closes the socket and unlinks its file if it is still the one we bound. */
void ctl_listener_close(struct ctl_listener *l);
/* Starts a socket server's thread with every signal blocked (signals belong to the VMM's own
 * threads). Returns 0 or the pthread error number. */
int ctl_start_thread(pthread_t *thread, void *(*fn)(void *), void *arg);

#endif
