/* The serial console socket: raw bytes, both ways, to any number of clients (`vmws console`,
 * the dashboard). The UART model calls console_server_output() from a vCPU thread: it only
 * appends to a ring buffer and wakes the server thread, never blocks. A client too slow to keep
 * up loses the oldest bytes (with a marker), never stalls the guest. All output is also appended
 * to the serial log file, up to CONSOLE_LOG_MAX. */
#ifndef VMWS_CONSOLESRV_H
#define VMWS_CONSOLESRV_H

#include <stddef.h>

/* The serial log's cap: at this size it moves to LOG.1 (replacing an older one) and a new log
 * starts with a line saying so; at most twice this on disk, whatever a guest prints. */
#define CONSOLE_LOG_MAX (16ull << 20)

struct console_server;

/* Called on the server thread with bytes a client typed. */
typedef void (*console_input_fn)(void *opaque, const unsigned char *buf, size_t len);

struct console_server *console_server_start(const char *sock_path, const char *log_path,
                                            console_input_fn input, void *opaque, char *err,
                                            size_t errlen);
/* Non-blocking; safe from any thread. */
void console_server_output(struct console_server *s, const unsigned char *buf, size_t len);
void console_server_stop(struct console_server *s);

#endif
