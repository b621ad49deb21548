/* Console scrollback and socket (see conview.h). */
#include "ui/conview.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SEED_BYTES (64 * 1024)

void conview_init(struct conview *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->count = 1;
}

static char *cur_line(struct conview *c)
{
    return c->lines[(c->first + c->count - 1) % CONVIEW_LINES];
}

static void new_line(struct conview *c)
{
    if (c->count == CONVIEW_LINES)
        c->first = (c->first + 1) % CONVIEW_LINES;
    else
        c->count++;
    cur_line(c)[0] = '\0';
    c->col = 0;
    if (c->scroll > 0 && c->scroll < (int)c->count - 1)
        c->scroll++; /* keep the view still while the user reads back */
}

static void put_char(struct conview *c, char ch)
{
    char *l = cur_line(c);
    size_t len = strlen(l);
    if (c->col >= CONVIEW_COLS) {
        new_line(c); /* wrap very long lines */
        l = cur_line(c);
        len = 0;
    }
    while ((int)len < c->col) /* cursor moved right past the end (tabs, CR overwrite) */
        l[len++] = ' ';
    l[c->col] = ch;
    if ((size_t)c->col >= len)
        l[c->col + 1] = '\0';
    c->col++;
}

void conview_feed(struct conview *c, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (c->esc == 1) { /* ESC x: CSI if '[', otherwise a two-byte sequence */
            c->esc = ch == '[' ? 2 : 0;
            continue;
        }
        if (c->esc == 2) {
            if (ch >= 0x40 && ch <= 0x7e)
                c->esc = 0;
            continue;
        }
        switch (ch) {
        case 0x1b:
            c->esc = 1;
            break;
        case '\n':
            new_line(c);
            break;
        case '\r':
            c->col = 0;
            break;
        case '\b':
            if (c->col > 0)
                c->col--;
            break;
        case '\t':
            do
                put_char(c, ' ');
            while (c->col % 8);
            break;
        default:
            if (ch >= 0x20 && ch != 0x7f)
                put_char(c, (char)ch); /* UTF-8 bytes pass through */
            break;
        }
    }
}

static void seed_from_log(struct conview *c, const char *log_path)
{
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        off_t off = st.st_size > SEED_BYTES ? st.st_size - SEED_BYTES : 0;
        static char buf[SEED_BYTES];
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n > 0) {
            size_t skip = 0;
            if (off > 0) { /* start at a line boundary */
                while (skip < (size_t)n && buf[skip] != '\n')
                    skip++;
                skip++;
            }
            if (skip < (size_t)n)
                conview_feed(c, buf + skip, (size_t)n - skip);
        }
    }
    close(fd);
}

int conview_attach(struct conview *c, const char *vm, const char *sock_path, const char *log_path)
{
    conview_detach(c);
    conview_init(c);
    snprintf(c->vm, sizeof(c->vm), "%s", vm);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int rc = 0;
    if (strlen(sock_path) >= sizeof(sa.sun_path))
        rc = -ENAMETOOLONG;
    int fd = rc ? -1 : socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (!rc && fd < 0)
        rc = -errno;
    if (!rc) {
        strcpy(sa.sun_path, sock_path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            rc = -errno;
            close(fd);
            fd = -1;
        }
    }
    /* Connect first, then read the log: a byte may show twice, none is lost. */
    seed_from_log(c, log_path);
    c->fd = fd;
    c->connected = fd >= 0;
    return rc;
}

void conview_detach(struct conview *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->connected = false;
}

bool conview_read(struct conview *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0) {
            conview_detach(c);
            return false;
        }
        conview_feed(c, buf, (size_t)n);
    }
}

int conview_send(struct conview *c, const char *buf, size_t len)
{
    if (c->fd < 0)
        return -ENOTCONN;
    while (len) {
        ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            usleep(1000); /* a few keystrokes never fill the socket for long */
            continue;
        }
        if (w < 0)
            return -errno;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

const char *conview_line(const struct conview *c, size_t i)
{
    return i < c->count ? c->lines[(c->first + i) % CONVIEW_LINES] : "";
}
