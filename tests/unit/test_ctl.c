/* Unit tests for the control socket (core/control/ctl.c) and the console socket
 * (core/control/consolesrv.c): a real server on a Unix socket in a temp dir, driven by raw socket
 * clients that send what a buggy or hostile client might (bad JSON, huge lines, half lines, never
 * reading), checking the exact replies a user of the protocol sees, and that the server keeps
 * serving. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control/consolesrv.h"
#include "core/control/ctl.h"

static char tmpdir[64];
static char sock_path[128];
static struct ctl_server *srv;
static int handler_calls;

static json_t *cmd_echo(void *opaque, json_t *args, struct ctl_error *err)
{
    (void)opaque;
    (void)err;
    handler_calls++;
    return json_incref(args);
}

static json_t *cmd_fail(void *opaque, json_t *args, struct ctl_error *err)
{
    (void)opaque;
    (void)args;
    err->cls = "InvalidArgument";
    snprintf(err->desc, sizeof(err->desc), "no such device 'x'");
    return NULL;
}

static const struct ctl_command cmds[] = {
    {"echo", cmd_echo},
    {"fail", cmd_fail},
};

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-ctl.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(sock_path, sizeof(sock_path), "%s/vm.ctl", tmpdir);
    char err[256];
    json_t *greeting = json_pack("{s:s}", "name", "testvm");
    srv = ctl_server_start(sock_path, greeting, cmds, 2, NULL, err, sizeof(err));
    json_decref(greeting);
    ck_assert_msg(srv != NULL, "server: %s", err);
}

static void teardown(void)
{
    ctl_server_stop(srv);
    struct stat st;
    ck_assert_msg(stat(sock_path, &st) < 0, "socket file left behind after stop");
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void raw_send(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        ck_assert_int_gt(w, 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one line (without the newline) within 5 s; "" on EOF. Caller frees. */
static char *raw_line(int fd)
{
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_msg(poll(&p, 1, 5000) == 1, "no line from the server within 5 s");
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n <= 0 || c == '\n')
            break;
        if (len + 2 > cap)
            buf = realloc(buf, cap *= 2);
        buf[len++] = c;
    }
    buf[len] = '\0';
    return buf;
}

static void expect_line(int fd, const char *want)
{
    char *got = raw_line(fd);
    ck_assert_str_eq(got, want);
    free(got);
}

static int client(void)
{
    int fd = raw_connect(sock_path);
    expect_line(fd, "{\"vmws\":{\"name\":\"testvm\"}}");
    return fd;
}

START_TEST(test_socket_mode)
{
    struct stat st;
    ck_assert_int_eq(lstat(sock_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0600);
}
END_TEST

START_TEST(test_execute_and_errors)
{
    int fd = client();
    raw_send(fd, "{\"execute\":\"echo\",\"arguments\":{\"a\":1}}\n");
    expect_line(fd, "{\"return\":{\"a\":1}}");
    raw_send(fd, "{\"execute\":\"echo\",\"id\":\"req-7\"}\n");
    expect_line(fd, "{\"return\":{},\"id\":\"req-7\"}");
    raw_send(fd, "{\"execute\":\"fail\",\"id\":42}\r\n");
    expect_line(fd, "{\"error\":{\"class\":\"InvalidArgument\",\"desc\":\"no such device "
                    "'x'\"},\"id\":42}");
    raw_send(fd, "{\"execute\":\"nope\",\"id\":[1]}\n");
    expect_line(fd, "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command nope has "
                    "not been found (see query-commands)\"},\"id\":[1]}");
    raw_send(fd, "{\"execute\": \n");
    char *l = raw_line(fd);
    const char *want = "{\"error\":{\"class\":\"GenericError\",\"desc\":\"malformed JSON: ";
    ck_assert_msg(strncmp(l, want, strlen(want)) == 0, "got %s", l);
    free(l);
    raw_send(fd, "[1,2]\n");
    l = raw_line(fd);
    ck_assert_ptr_nonnull(strstr(l, "request must be a JSON object"));
    free(l);
    raw_send(fd, "{\"arguments\":{},\"id\":3}\n");
    l = raw_line(fd);
    ck_assert_ptr_nonnull(strstr(l, "missing \\\"execute\\\""));
    ck_assert_ptr_nonnull(strstr(l, "\"id\":3"));
    free(l);
    raw_send(fd, "{\"execute\":\"echo\",\"arguments\":[1]}\n");
    l = raw_line(fd);
    ck_assert_ptr_nonnull(strstr(l, "\\\"arguments\\\" must be an object"));
    free(l);
    raw_send(fd, "\n   \n{\"execute\":\"query-commands\"}\n"); /* blank lines are ignored */
    expect_line(fd, "{\"return\":[{\"name\":\"echo\"},{\"name\":\"fail\"},"
                    "{\"name\":\"query-commands\"}]}");
    close(fd);
}
END_TEST

START_TEST(test_long_line)
{
    int fd = client();
    size_t n = 100 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, n + 64, "{\"execute\":\"echo\",\"arguments\":{\"s\":\"");
    memset(big + k, 'x', n);
    strcpy(big + k + n, "\"}}\n");
    raw_send(fd, big);
    free(big);
    char *l = raw_line(fd);
    ck_assert_ptr_nonnull(strstr(l, "request line too long (more than 65536 bytes)"));
    free(l);
    /* the rest of the long line was dropped; the next line works */
    raw_send(fd, "{\"execute\":\"echo\",\"id\":1}\n");
    expect_line(fd, "{\"return\":{},\"id\":1}");
    close(fd);
}
END_TEST

/* ctl_handle_bytes (tests and fuzzing): the server's replies to what a client sent, no socket. */
START_TEST(test_handle_bytes_without_a_socket)
{
    const char in[] = "{\"execute\":\"echo\",\"arguments\":{\"a\":1},\"id\":7}\r\n\n"
                      "{\"execute\":\"fail\"}\n[1]\n{\"execute\":\"echo\"}"; /* last: no newline */
    size_t len = 0;
    char *out = ctl_handle_bytes(cmds, 2, NULL, in, sizeof(in) - 1, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(out));
    ck_assert_str_eq(out,
                     "{\"return\":{\"a\":1},\"id\":7}\n"
                     "{\"error\":{\"class\":\"InvalidArgument\",\"desc\":\"no such device "
                     "'x'\"}}\n"
                     "{\"error\":{\"class\":\"GenericError\",\"desc\":\"request must be a JSON "
                     "object like {\\\"execute\\\": \\\"query-commands\\\"}\"}}\n");
    free(out);
    out = ctl_handle_bytes(cmds, 2, NULL, "", 0, &len); /* nothing sent: nothing to say */
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, 0);
    free(out);
}
END_TEST

START_TEST(test_bad_clients)
{
    /* A client that closes in the middle of a line. */
    int fd = client();
    raw_send(fd, "{\"execute\":\"ec");
    close(fd);
    /* A client that floods requests and never reads the replies gets dropped ... */
    int hog = client();
    fcntl(hog, F_SETFL, O_NONBLOCK);
    char req[8192];
    int k = snprintf(req, sizeof(req), "{\"execute\":\"echo\",\"arguments\":{\"s\":\"");
    memset(req + k, 'y', 6000);
    strcpy(req + k + 6000, "\"}}\n");
    size_t sent = 0;
    bool dropped = false;
    for (int i = 0; i < 20000 && !dropped; i++) {
        ssize_t w = send(hog, req, strlen(req), MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            usleep(500);
            continue;
        }
        if (w < 0)
            dropped = true; /* EPIPE/ECONNRESET: the server hung up on it */
        else
            sent += (size_t)w;
    }
    ck_assert_msg(dropped, "a client that never reads was not dropped (%zu bytes sent)", sent);
    ck_assert_msg(sent > 1024 * 1024, "dropped after only %zu bytes", sent);
    /* ... while another client is served the whole time. */
    int ok = client();
    raw_send(ok, "{\"execute\":\"echo\",\"id\":9}\n");
    expect_line(ok, "{\"return\":{},\"id\":9}");
    /* The hog's connection was closed by the server: reading reaches EOF after the
     * replies the kernel had buffered. */
    fcntl(hog, F_SETFL, 0);
    char buf[65536];
    ssize_t r;
    size_t total = 0;
    while ((r = read(hog, buf, sizeof(buf))) > 0)
        total += (size_t)r;
    ck_assert_msg(total < 8 * 1024 * 1024, "hog received %zu bytes", total);
    close(hog);
    close(ok);
}
END_TEST

START_TEST(test_events_and_client_api)
{
    int a = client();
    int b = client();
    char err[256];
    json_t *greeting = NULL;
    struct ctl_client *c = ctl_client_connect(sock_path, &greeting, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(json_string_value(json_object_get(greeting, "name")), "testvm");

    json_t *data = json_pack("{s:s}", "reason", "test");
    ctl_server_event(srv, "SHUTDOWN", data);
    json_decref(data);
    for (int i = 0; i < 2; i++) {
        char *l = raw_line(i ? b : a);
        const char *want = "{\"event\":\"SHUTDOWN\",\"data\":{\"reason\":\"test\"},"
                           "\"timestamp\":{\"seconds\":";
        ck_assert_msg(strncmp(l, want, strlen(want)) == 0, "got %s", l);
        ck_assert_ptr_nonnull(strstr(l, "\"microseconds\":"));
        free(l);
    }
    ctl_server_event(srv, "RESUME", NULL);
    char *l = raw_line(a);
    const char *want = "{\"event\":\"RESUME\",\"data\":{},\"timestamp\":";
    ck_assert_msg(strncmp(l, want, strlen(want)) == 0, "got %s", l);
    free(l);

    /* The client API: a reply is found among the events, which stay queued for later. */
    json_t *args = json_pack("{s:i}", "x", 1);
    json_t *r = ctl_client_execute(c, "echo", args, 5000, err, sizeof(err));
    json_decref(args);
    ck_assert_msg(r != NULL, "%s", err);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "x")), 1);
    json_decref(r);
    json_t *ev = ctl_client_next_event(c, 1000);
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(json_string_value(json_object_get(ev, "event")), "SHUTDOWN");
    json_decref(ev);
    ev = ctl_client_next_event(c, 1000);
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(json_string_value(json_object_get(ev, "event")), "RESUME");
    json_decref(ev);
    ck_assert_ptr_null(ctl_client_next_event(c, 50)); /* nothing more: times out */

    ck_assert_ptr_null(ctl_client_execute(c, "fail", NULL, 5000, err, sizeof(err)));
    ck_assert_str_eq(err, "InvalidArgument: no such device 'x'");
    ck_assert_ptr_null(ctl_client_execute(c, "nope", NULL, 5000, err, sizeof(err)));
    ck_assert_str_eq(err, "CommandNotFound: The command nope has not been found (see "
                          "query-commands)");
    ctl_client_close(c);
    close(a);
    close(b);
}
END_TEST

START_TEST(test_live_and_stale_socket)
{
    char err[256];
    /* A second server on a live socket is refused and leaves the first one working. */
    struct ctl_server *s2 = ctl_server_start(sock_path, NULL, cmds, 2, NULL, err, sizeof(err));
    ck_assert_ptr_null(s2);
    ck_assert_msg(strstr(err, "already listening"), "got %s", err);
    int fd = client();
    close(fd);

    /* A stale socket (its owner died) is replaced. */
    char stale[100];
    snprintf(stale, sizeof(stale), "%s/stale.ctl", tmpdir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", stale);
    int dead = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(dead, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(dead);
    s2 = ctl_server_start(stale, NULL, cmds, 2, NULL, err, sizeof(err));
    ck_assert_msg(s2 != NULL, "%s", err);
    struct ctl_client *c = ctl_client_connect(stale, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ctl_client_close(c);
    ctl_server_stop(s2);

    /* A regular file in the way is not deleted. */
    FILE *f = fopen(stale, "w");
    fclose(f);
    s2 = ctl_server_start(stale, NULL, cmds, 2, NULL, err, sizeof(err));
    ck_assert_ptr_null(s2);
    ck_assert_msg(strstr(err, "exists and is not a socket"), "got %s", err);

    /* Connecting to nothing says what failed on what. */
    snprintf(stale, sizeof(stale), "%s/none.ctl", tmpdir);
    ck_assert_ptr_null(ctl_client_connect(stale, NULL, err, sizeof(err)));
    ck_assert_msg(strstr(err, "none.ctl: No such file or directory"), "got %s", err);
}
END_TEST

/* ---- console server ------------------------------------------------------------------- */

static pthread_mutex_t input_lock = PTHREAD_MUTEX_INITIALIZER;
static char input_seen[256];
static size_t input_len;

static void on_input(void *opaque, const unsigned char *buf, size_t len)
{
    (void)opaque;
    pthread_mutex_lock(&input_lock);
    if (input_len + len < sizeof(input_seen)) {
        memcpy(input_seen + input_len, buf, len);
        input_len += len;
    }
    pthread_mutex_unlock(&input_lock);
}

/* Reads exactly N bytes within 5 s. */
static void read_exact(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_msg(poll(&p, 1, 5000) == 1, "console output did not arrive");
        ssize_t r = read(fd, buf + got, n - got);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
}

/* A guest that prints forever does not fill the disk: at CONSOLE_LOG_MAX the serial log moves
 * to serial.log.1 (replacing an older one) and a new one starts with a line saying so
 * (issue 14, finding 7). */
START_TEST(test_console_log_is_capped)
{
    char csock[128], log[128], old[160], err[256];
    snprintf(csock, sizeof(csock), "%s/vm.console", tmpdir);
    snprintf(log, sizeof(log), "%s/serial.log", tmpdir);
    snprintf(old, sizeof(old), "%s.1", log);
    int fd = open(log, O_WRONLY | O_CREAT, 0600); /* a log already at the cap (sparse) */
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, CONSOLE_LOG_MAX), 0);
    close(fd);
    struct console_server *cs = console_server_start(csock, log, on_input, NULL, err, sizeof(err));
    ck_assert_msg(cs != NULL, "%s", err);
    console_server_output(cs, (const unsigned char *)"after the cap\n", 14);
    char text[512] = "";
    for (int i = 0; i < 500 && !strstr(text, "after the cap"); i++) {
        usleep(10000);
        FILE *f = fopen(log, "r");
        size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
        text[n] = '\0';
        if (f)
            fclose(f);
    }
    console_server_stop(cs);
    ck_assert_msg(strstr(text, "after the cap\n"), "serial.log holds: %s", text);
    ck_assert_msg(strstr(text, "serial.log.1"), "no note of the move in: %s", text);
    ck_assert_uint_lt(strlen(text), 512 - 1);
    struct stat st;
    ck_assert_int_eq(stat(old, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, CONSOLE_LOG_MAX);
}
END_TEST

START_TEST(test_console)
{
    char csock[128], log[128], err[256];
    snprintf(csock, sizeof(csock), "%s/vm.console", tmpdir);
    snprintf(log, sizeof(log), "%s/serial.log", tmpdir);
    struct console_server *cs = console_server_start(csock, log, on_input, NULL, err, sizeof(err));
    ck_assert_msg(cs != NULL, "%s", err);
    struct stat st;
    ck_assert_int_eq(lstat(csock, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);

    int a = raw_connect(csock), b = raw_connect(csock);
    usleep(100000); /* let the server accept both before the output */
    console_server_output(cs, (const unsigned char *)"login: ", 7);
    char buf[64];
    read_exact(a, buf, 7);
    ck_assert(memcmp(buf, "login: ", 7) == 0);
    read_exact(b, buf, 7);
    ck_assert(memcmp(buf, "login: ", 7) == 0);

    raw_send(a, "mem stat\n");
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&input_lock);
        bool done = input_len >= 9;
        pthread_mutex_unlock(&input_lock);
        if (done)
            break;
        usleep(10000);
    }
    pthread_mutex_lock(&input_lock);
    ck_assert_uint_eq(input_len, 9);
    ck_assert(memcmp(input_seen, "mem stat\n", 9) == 0);
    pthread_mutex_unlock(&input_lock);

    /* b stops reading; 2 MiB of output later it has lost bytes and is told so, while a
     * (which reads) gets everything. The producer never blocks. */
    static char chunk[4096];
    memset(chunk, 'z', sizeof(chunk));
    size_t total = 0;
    char *abuf = malloc(65536);
    size_t a_got = 0;
    for (int i = 0; i < 512; i++) {
        console_server_output(cs, (unsigned char *)chunk, sizeof(chunk));
        total += sizeof(chunk);
        ssize_t r;
        while ((r = recv(a, abuf, 65536, MSG_DONTWAIT)) > 0)
            a_got += (size_t)r;
        usleep(200);
    }
    while (a_got < total) {
        struct pollfd p = {.fd = a, .events = POLLIN};
        ck_assert_msg(poll(&p, 1, 5000) == 1, "a got only %zu of %zu bytes", a_got, total);
        ssize_t r = read(a, abuf, 65536);
        ck_assert_int_gt(r, 0);
        a_got += (size_t)r;
    }
    ck_assert_uint_eq(a_got, total);
    /* Read what b was sent: it includes the marker. */
    fcntl(b, F_SETFL, O_NONBLOCK);
    size_t cap = 4 << 20, b_got = 0;
    char *bbuf = malloc(cap);
    for (int idle = 0; idle < 50 && b_got < cap - 1;) {
        ssize_t r = read(b, bbuf + b_got, cap - 1 - b_got);
        if (r > 0) {
            b_got += (size_t)r;
            idle = 0;
        } else {
            usleep(10000);
            idle++;
        }
    }
    bbuf[b_got] = '\0';
    ck_assert_msg(strstr(bbuf, "bytes of console output lost]"), "no loss marker in %zu bytes",
                  b_got);
    free(abuf);
    free(bbuf);

    console_server_stop(cs);
    ck_assert_int_eq(lstat(csock, &st), -1);
    /* Every byte went to the log too, and the log is private. */
    ck_assert_int_eq(stat(log, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_uint_eq((size_t)st.st_size, 7 + total);
    /* the clients see EOF */
    ck_assert_int_eq(read(a, buf, sizeof(buf)), 0);
    close(a);
    close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ctl");
    TCase *tc = tcase_create("ctl");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_socket_mode);
    tcase_add_test(tc, test_execute_and_errors);
    tcase_add_test(tc, test_long_line);
    tcase_add_test(tc, test_handle_bytes_without_a_socket);
    tcase_add_test(tc, test_bad_clients);
    tcase_add_test(tc, test_events_and_client_api);
    tcase_add_test(tc, test_live_and_stale_socket);
    tcase_add_test(tc, test_console);
    tcase_add_test(tc, test_console_log_is_capped);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
