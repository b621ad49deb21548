/* The serial console socket: raw bytes, both ways, to any number of clients (`vmws console`,
 * the dashboard). The UART model calls console_server_output() from a vCPU thread: it only
 * appends to a ring buffer and wakes the server thread, never blocks. A client too slow to keep
 * up loses the oldest bytes (with a marker), never stalls the guest. All output is also appended
 * to the serial log file. */
#ifndef VMWS_CONSOLESRV_H
#define VMWS_CONSOLESRV_H

#include <stddef.h>

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
