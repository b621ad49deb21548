/* The serial console's bytes, which the guest writes: through the console server (ring, log) to
 * a connected client, which must get every byte; then the escape/CR/LF interpreter of the
 * dashboard's console view (ui/conview.c) on what the client got, on a serial log's tail as on
 * attach, and fed in pieces the input sizes (escape sequences cut anywhere). Every line the view
 * keeps must be at most CONVIEW_COLS printable bytes: no escape sequence or control byte stays. */
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "core/control/consolesrv.h"
#include "tests/fuzz/fuzz.h"
#include "ui/conview.h"

static size_t typed;

static void on_input(void *opaque, const unsigned char *buf, size_t len)
{
    (void)opaque;
    (void)buf;
    __atomic_add_fetch(&typed, len, __ATOMIC_RELEASE);
}

static void check_view(const struct conview *c)
{
    if (c->count < 1 || c->count > CONVIEW_LINES || c->col < 0 || c->col > CONVIEW_COLS)
        abort();
    for (size_t i = 0; i < c->count; i++) {
        const char *l = conview_line(c, i);
        size_t n = strnlen(l, CONVIEW_COLS + 1);
        if (n > CONVIEW_COLS)
            abort();
        for (size_t k = 0; k < n; k++)
            if ((unsigned char)l[k] < 0x20 || l[k] == 0x7f)
                abort();
    }
}

/* The server, its log and a client connected to it, for the whole run (a server per input
 * would make every input wait for its thread to accept). */
static struct console_server *server;
static int client = -1;

static void start_server(void)
{
    char sock[100], err[512]; /* fits sun_path */
    snprintf(sock, sizeof(sock), "%s/console.sock", fuzz_dir());
    char log[128];
    snprintf(log, sizeof(log), "%s/serial.log", fuzz_dir());
    server = console_server_start(sock, log, on_input, NULL, err, sizeof(err));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!server || client < 0 || connect(client, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        abort();
    /* Typed into the console: once it arrives, the server has accepted us and we see all the
     * output from now on. */
    if (send(client, "ls\r", 3, MSG_NOSIGNAL) != 3)
        abort();
    for (int i = 0; i < 100000 && __atomic_load_n(&typed, __ATOMIC_ACQUIRE) < 3; i++)
        usleep(100);
    if (__atomic_load_n(&typed, __ATOMIC_ACQUIRE) < 3)
        abort();
}

/* A client that keeps up gets every byte, in order. */
static void receive(uint8_t *buf, size_t size)
{
    for (size_t got = 0; got < size;) {
        struct pollfd p = {.fd = client, .events = POLLIN};
        ssize_t n = poll(&p, 1, 30000) == 1 ? recv(client, buf + got, size - got, 0) : -1;
        if (n <= 0)
            abort();
        got += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct conview live, seeded, pieces;
    static uint8_t got[1 << 16];
    if (!server)
        start_server();
    if (size > sizeof(got))
        return 0;
    /* As the UART hands it over: in bursts. */
    for (size_t i = 0; i < size;) {
        size_t n = 1 + data[i] % 64 * 16;
        n = n < size - i ? n : size - i;
        console_server_output(server, data + i, n);
        i += n;
    }
    receive(got, size);
    if (memcmp(got, data, size) != 0)
        abort();
    conview_init(&live); /* what the dashboard's view does with what it reads */
    conview_feed(&live, (const char *)got, size);
    check_view(&live);

    /* An input starting with 0xff goes, over and over, 32 KiB at a time, past the ring's size to
     * a server of its own with no client, so the log's reader may fall behind and skip. */
    if (size && data[0] == 0xff) {
        char sock[128], log[128], err[512];
        snprintf(sock, sizeof(sock), "%s/flood.sock", fuzz_dir());
        snprintf(log, sizeof(log), "%s/flood.log", fuzz_dir());
        unlink(log);
        struct console_server *s = console_server_start(sock, log, NULL, NULL, err, sizeof(err));
        if (!s)
            abort();
        static uint8_t burst[32 << 10];
        for (size_t i = 0; i < sizeof(burst); i++)
            burst[i] = data[i % size];
        for (int k = 0; k < 10; k++)
            console_server_output(s, burst, sizeof(burst));
        console_server_stop(s);
        conview_init(&seeded);
        conview_attach(&seeded, "fuzz", sock, log);
        check_view(&seeded);
    }

    /* The input as a whole serial log (the server's own log grows across the run: its 64 KiB
     * tail would be most of the work of every input), seeding a view with no socket. */
    conview_init(&seeded);
    conview_attach(&seeded, "fuzz", "", fuzz_file("serial-copy.log", data, size));
    check_view(&seeded);

    conview_init(&pieces);
    for (size_t i = 0; i < size;) {
        size_t n = 1 + data[i] % 7;
        n = n < size - i ? n : size - i;
        conview_feed(&pieces, (const char *)data + i, n);
        check_view(&pieces);
        i += n;
    }
    return 0;
}
