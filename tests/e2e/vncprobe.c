/* vncprobe: a small VNC client (libvncclient) for the display tests and benchmark. It connects
 * like any viewer (default encodings: tight, zrle, hextile, ...) and runs a list of actions:
 *   capture FILE.ppm | pixel X Y | keys TEXT | pointer X Y BUTTONS | watch SECONDS |
 *   wait-change X Y SECONDS | flood N
 * The server is HOST:PORT, or the path of a Unix socket (libvncclient connects to a path that
 * names one). Bytes are counted by the kernel (TCP_INFO's bytes_received; 0 on a Unix socket),
 * so they are what really came over the wire. Exit status: 0 ok, 2 usage, 3
 * connect/authentication failed, 4 action failed. */
#include <errno.h>
#include <linux/tcp.h>
#include <rfb/rfbclient.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static char *password;
static uint64_t updates, rects;
static bool got_update;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void quiet_log(const char *fmt, ...)
{
    (void)fmt;
}

static void print_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* No password: NULL, which libvncclient refuses ("Reading password failed") - an empty string
 * it would refuse too, and leak. */
static char *get_password(rfbClient *cl)
{
    (void)cl;
    return password && *password ? strdup(password) : NULL;
}

/* Which pixels some update has covered since the connection: the first frame is complete
 * only when all have been (a busy server may send it in several updates). */
static uint8_t *covered;
static uint64_t uncovered;

static void got_rect(rfbClient *cl, int x, int y, int w, int h)
{
    rects++;
    if (!covered || x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > cl->width || y + h > cl->height)
        return; /* pseudo-encodings (cursor, size) cover no pixels */
    for (int r = y; r < y + h; r++) {
        for (int c = x; c < x + w; c++) {
            uint8_t *p = &covered[(size_t)r * cl->width + c];
            uncovered -= !*p;
            *p = 1;
        }
    }
}

static void finished_update(rfbClient *cl)
{
    (void)cl;
    updates++;
    got_update = true;
}

static uint64_t bytes_received(rfbClient *cl)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(cl->sock, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return 0;
    return ti.tcpi_bytes_received;
}

/* Handles messages until DEADLINE; returns false if the connection broke. libvncclient reads
 * the socket in 8 KiB gulps into cl->buf, so a message can be waiting there with nothing left
 * on the socket: WaitForMessage (a select() on the socket alone, in 0.9.14) would then sleep
 * until the server sent something else. That happened when the server sent the first frame's
 * size marker and its pixels back to back and one read took both: the frame sat in the buffer
 * until the guest's clock redrew the screen (up to a minute), and the probe gave up at 20 s. */
static bool pump(rfbClient *cl, uint64_t deadline, bool stop_on_update)
{
    got_update = false;
    while (now_ns() < deadline) {
        int n = cl->buffered > 0 ? 1 : WaitForMessage(cl, 10000);
        if (n < 0)
            return false;
        if (n > 0 && !HandleRFBServerMessage(cl))
            return false;
        if (stop_on_update && got_update)
            return true;
    }
    return true;
}

static uint32_t pixel_at(rfbClient *cl, int x, int y)
{
    const uint8_t *p = cl->frameBuffer + ((size_t)y * cl->width + x) * 4;
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; /* client format: R, G, B, X */
}

static int write_ppm(rfbClient *cl, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fprintf(f, "P6\n%d %d\n255\n", cl->width, cl->height);
    for (int i = 0; i < cl->width * cl->height; i++)
        fwrite(cl->frameBuffer + (size_t)i * 4, 1, 3, f);
    return fclose(f);
}

static void send_key(rfbClient *cl, uint32_t keysym, bool shift)
{
    if (shift)
        SendKeyEvent(cl, XK_Shift_L, TRUE);
    SendKeyEvent(cl, keysym, TRUE);
    SendKeyEvent(cl, keysym, FALSE);
    if (shift)
        SendKeyEvent(cl, XK_Shift_L, FALSE);
}

static void type_text(rfbClient *cl, const char *s)
{
    for (; *s; s++) {
        if (*s == '\n' || *s == '\r')
            send_key(cl, XK_Return, false);
        else
            send_key(cl, (uint32_t)(unsigned char)*s,
                     (*s >= 'A' && *s <= 'Z') || strchr("!@#$%^&*()_+{}|:\"<>?~", *s));
    }
}

/* The frame buffer is the application's (libvncclient's default allocator), so freed here; a
 * sanitizer build counts anything left as a leak and fails the probe. */
static int finish(rfbClient *cl, int status)
{
    free(cl->frameBuffer);
    cl->frameBuffer = NULL;
    rfbClientCleanup(cl);
    free(covered);
    covered = NULL;
    return status;
}

static int usage(void)
{
    fprintf(
        stderr,
        "usage: vncprobe [--password P | --password-file F] [--lossless] [--timeout S] "
        "HOST:PORT|/SOCKET "
        "ACTION...\n  actions: capture FILE.ppm | pixel X Y | keys TEXT | pointer X Y BUTTONS | "
        "watch S | wait-change X Y S | flood N\n");
    return 2;
}

int main(int argc, char **argv)
{
    int i = 1;
    double timeout = 10;
    bool lossless = false;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--password") && i + 1 < argc) {
            password = argv[++i];
        } else if (!strcmp(argv[i], "--password-file") && i + 1 < argc) {
            FILE *f = fopen(argv[++i], "r");
            static char buf[64];
            if (!f || !fgets(buf, sizeof(buf), f)) {
                fprintf(stderr, "vncprobe: cannot read %s\n", argv[i]);
                return 2;
            }
            fclose(f);
            buf[strcspn(buf, "\r\n")] = 0;
            password = buf;
        } else if (!strcmp(argv[i], "--lossless")) {
            lossless = true;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = atof(argv[++i]);
        } else {
            return usage();
        }
    }
    if (i >= argc)
        return usage();
    char host[256];
    int port = 0;
    if (argv[i][0] == '/') /* a Unix socket */
        snprintf(host, sizeof(host), "%s", argv[i]);
    else if (sscanf(argv[i], "%255[^:]:%d", host, &port) != 2)
        return usage();
    i++;

    rfbClientLog = getenv("VNCPROBE_VERBOSE") ? print_log : quiet_log;
    rfbClientErr = print_log;
    rfbClient *cl = rfbGetClient(8, 3, 4);
    cl->GetPassword = get_password;
    cl->GotFrameBufferUpdate = got_rect;
    cl->FinishedFrameBufferUpdate = finished_update;
    free(cl->serverHost);
    cl->serverHost = strdup(host);
    cl->serverPort = port;
    if (lossless)
        cl->appData.enableJPEG = FALSE; /* tight without JPEG: what arrives is exact */
    cl->connectTimeout = (unsigned)timeout;
    cl->readTimeout = (unsigned)timeout;
    uint64_t t0 = now_ns();
    if (!rfbInitClient(cl, NULL, NULL)) {
        printf("vncprobe: cannot connect to or authenticate with %s:%d\n", host, port);
        return 3; /* rfbInitClient freed the client */
    }
    /* The first complete frame: updates until every pixel was in one, then until none came
     * for 150 ms. */
    covered = calloc((size_t)cl->width * (size_t)cl->height, 1);
    uncovered = (uint64_t)cl->width * (uint64_t)cl->height;
    uint64_t deadline = t0 + (uint64_t)(timeout * 1e9);
    bool ok = covered != NULL;
    while (ok && uncovered && now_ns() < deadline)
        ok = pump(cl, deadline, true);
    ok = ok && !uncovered;
    while (ok && got_update)
        ok = pump(cl, now_ns() + 150000000ull, true);
    if (!ok) {
        printf("vncprobe: no framebuffer from %s:%d within %.0f s\n", host, port, timeout);
        return finish(cl, 4);
    }
    printf("connected %dx%d first-frame-ms %.1f bytes %llu\n", cl->width, cl->height,
           (now_ns() - t0) / 1e6, (unsigned long long)bytes_received(cl));
    int status = 0;
    for (; i < argc && status == 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "capture") && i + 1 < argc) {
            pump(cl, now_ns() + 200000000ull, false); /* let pending updates land */
            if (write_ppm(cl, argv[++i]) < 0)
                status = 4;
        } else if (!strcmp(a, "pixel") && i + 2 < argc) {
            int x = atoi(argv[i + 1]), y = atoi(argv[i + 2]);
            i += 2;
            if (x < 0 || y < 0 || x >= cl->width || y >= cl->height)
                return finish(cl, usage());
            printf("pixel %d %d %06x\n", x, y, pixel_at(cl, x, y));
        } else if (!strcmp(a, "keys") && i + 1 < argc) {
            type_text(cl, argv[++i]);
            pump(cl, now_ns() + 100000000ull, false);
        } else if (!strcmp(a, "pointer") && i + 3 < argc) {
            /* RFB's button mask: 1 left, 2 middle, 4 right. */
            SendPointerEvent(cl, atoi(argv[i + 1]), atoi(argv[i + 2]), atoi(argv[i + 3]));
            i += 3;
            pump(cl, now_ns() + 50000000ull, false);
        } else if (!strcmp(a, "watch") && i + 1 < argc) {
            double s = atof(argv[++i]);
            uint64_t u0 = updates, r0 = rects, b0 = bytes_received(cl);
            if (!pump(cl, now_ns() + (uint64_t)(s * 1e9), false))
                status = 4;
            printf("watch %.1f s: updates %llu rects %llu bytes %llu\n", s,
                   (unsigned long long)(updates - u0), (unsigned long long)(rects - r0),
                   (unsigned long long)(bytes_received(cl) - b0));
        } else if (!strcmp(a, "wait-change") && i + 3 < argc) {
            int x = atoi(argv[i + 1]), y = atoi(argv[i + 2]);
            double s = atof(argv[i + 3]);
            i += 3;
            if (x < 0 || y < 0 || x >= cl->width || y >= cl->height)
                return finish(cl, usage());
            uint32_t before = pixel_at(cl, x, y);
            uint64_t b0 = bytes_received(cl), end = now_ns() + (uint64_t)(s * 1e9);
            printf("ready %06x\n", before);
            fflush(stdout);
            bool changed = false;
            while (!changed && now_ns() < end) {
                if (!pump(cl, end, true)) {
                    status = 4;
                    break;
                }
                changed = pixel_at(cl, x, y) != before;
            }
            uint64_t t = now_ns();
            /* The rest of the same change may still be on its way: count it too. */
            pump(cl, now_ns() + 300000000ull, false);
            if (changed)
                printf("changed %06x at %llu ns bytes %llu\n", pixel_at(cl, x, y),
                       (unsigned long long)t, (unsigned long long)(bytes_received(cl) - b0));
            else {
                printf("vncprobe: pixel %d,%d did not change within %.1f s\n", x, y, s);
                status = 4;
            }
        } else if (!strcmp(a, "flood") && i + 1 < argc) {
            int n = atoi(argv[++i]);
            for (int k = 0; k < n; k++) {
                SendPointerEvent(cl, k % cl->width, (k * 7) % cl->height, k & 1);
                SendKeyEvent(cl, XK_Shift_L, (k & 1) == 0);
            }
            SendKeyEvent(cl, XK_Shift_L, FALSE);
            SendPointerEvent(cl, 0, 0, 0);
            if (!pump(cl, now_ns() + 200000000ull, false))
                status = 4;
            printf("flooded %d\n", n);
        } else {
            return finish(cl, usage());
        }
        fflush(stdout);
    }
    return finish(cl, status);
}
