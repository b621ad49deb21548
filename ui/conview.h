/* The selected VM's serial console as the dashboard sees it: a connection to the VM's console
 * socket plus a scrollback of text lines. The one idea: the socket only delivers output from
 * the moment we connect, so attaching first seeds the scrollback from the tail of the VM's
 * serial.log, then appends live bytes; a tiny interpreter handles CR, LF, backspace and tabs
 * and drops escape sequences, which is all the built-in guest's shell and a Linux boot log
 * need. No curses here. */
#ifndef VMWS_UI_CONVIEW_H
#define VMWS_UI_CONVIEW_H

#include <stdbool.h>
#include <stddef.h>

#define CONVIEW_LINES 2000
#define CONVIEW_COLS 240

struct conview {
    char vm[64];
    int fd;         /* console socket, -1 when not connected */
    bool connected; /* false after EOF until the next attach */
    char lines[CONVIEW_LINES][CONVIEW_COLS + 1];
    size_t first, count; /* ring of lines; the last one is being written */
    int col;
    int esc;    /* 0 none, 1 after ESC, 2 inside CSI */
    int scroll; /* lines scrolled back from the bottom (0 = follow) */
};

void conview_init(struct conview *c);
/* Connects to SOCK_PATH for VM and seeds from LOG_PATH's tail. Returns 0 or -errno (the
 * scrollback still shows the log). */
int conview_attach(struct conview *c, const char *vm, const char *sock_path, const char *log_path);
void conview_detach(struct conview *c);
/* Reads what the socket has (call on POLLIN). Returns false at EOF/error (now detached). */
bool conview_read(struct conview *c);
/* Sends bytes to the guest. Returns 0 or -errno. */
int conview_send(struct conview *c, const char *buf, size_t len);
/* Feeds raw console bytes into the scrollback (used for the log seed and tests). */
void conview_feed(struct conview *c, const char *buf, size_t len);
/* Line I counted from the oldest kept (0..count-1). */
const char *conview_line(const struct conview *c, size_t i);

#endif
