/* End-to-end: sound from the built-in guest through the ES1370 and the PC speaker into a real
 * PulseAudio server. Each test starts its own pulseaudio (null sink, private socket), boots a
 * VM with PULSE_SERVER pointing at it, records the sink's monitor with parec while the guest
 * plays, and measures what was heard: the dominant frequency (Goertzel scan) and how long the
 * sound lasted. Also: no server (one warning, the guest still plays), a server restart (the
 * stream comes back), guest nonsense (the card is marked broken, the VM keeps answering), and
 * a late host (the VMM stopped for 150 ms at a time): the buffer grows until a shorter stall
 * is no longer a gap in what the sink hears. And the PIT behind the speaker as the guest sees
 * it (`pit check`). */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/e2e/e2e.h"

#define BOOT_MS 20000
#define RATE 44100

static char out[1 << 16];

/* A failed assertion ends a test's process at once (check runs each test in a child), so
 * nothing there can clean up: pulseaudio and parec die with it (PR_SET_PDEATHSIG), and each
 * test's home is noted in a file that the runner's unchecked teardown uses to kill the VMMs
 * left under it and remove it. */
static char homes_file[128];

static void test_begin(void)
{
    e2e_setup();
    FILE *f = fopen(homes_file, "a");
    if (f) {
        fprintf(f, "%s\n", e2e_home());
        fclose(f);
    }
}

static void cleanup_homes(void)
{
    FILE *f = fopen(homes_file, "r");
    char home[256], cmd[1024];
    while (f && fgets(home, sizeof(home), f)) {
        home[strcspn(home, "\n")] = 0;
        if (strncmp(home, "/tmp/vmws-test-", 15) || strchr(home, '\''))
            continue;
        snprintf(cmd, sizeof(cmd),
                 "for p in '%s'/*/vmm.pid; do [ -f \"$p\" ] && kill -9 $(cat \"$p\") 2>/dev/null; "
                 "done; rm -rf '%s'",
                 home, home);
        if (system(cmd) != 0)
            fprintf(stderr, "cleanup of %s failed\n", home);
    }
    if (f)
        fclose(f);
    unlink(homes_file);
}

static void die_with_test(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* ---- a private PulseAudio server ---- */

struct pulse {
    pid_t pid;
    char dir[256], socket[300];
};

static bool pulse_answers(const struct pulse *p)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "PULSE_SERVER=unix:%s pactl info >/dev/null 2>&1", p->socket);
    return system(cmd) == 0;
}

static void pulse_start(struct pulse *p, const char *dir)
{
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    snprintf(p->socket, sizeof(p->socket), "%s/native", dir);
    mkdir(dir, 0700);
    char rt[300], log[300], sock_arg[400];
    snprintf(rt, sizeof(rt), "%s/rt", dir);
    mkdir(rt, 0700);
    snprintf(log, sizeof(log), "--log-target=file:%s/pulse.log", dir);
    snprintf(sock_arg, sizeof(sock_arg), "module-native-protocol-unix socket=%s auth-anonymous=1",
             p->socket);
    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        die_with_test();
        setenv("HOME", dir, 1);
        setenv("PULSE_RUNTIME_PATH", rt, 1);
        unsetenv("PULSE_SERVER");
        execlp("pulseaudio", "pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n",
               "--disallow-exit", "--disable-shm", log,
               "--load=module-null-sink sink_name=vmws_test rate=44100", "--load", sock_arg,
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        if (pulse_answers(p))
            return;
        usleep(50000);
    }
    ck_abort_msg("pulseaudio did not answer on %s within 5 s (see %s/pulse.log)", p->socket, dir);
}

static void pulse_stop(struct pulse *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    unlink(p->socket);
}

/* ---- recording the sink's monitor ---- */

struct recording {
    pid_t pid;
    char path[300];
};

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void record_start(struct recording *r, const struct pulse *p, const char *path)
{
    snprintf(r->path, sizeof(r->path), "%s", path);
    char server[400];
    snprintf(server, sizeof(server), "unix:%s", p->socket);
    r->pid = fork();
    ck_assert_int_ge(r->pid, 0);
    if (r->pid == 0) {
        die_with_test();
        FILE *f = freopen(path, "w", stdout);
        if (!f)
            _exit(126);
        execlp("parec", "parec", "--server", server, "-d", "vmws_test.monitor", "--raw",
               "--format=s16le", "--rate=44100", "--channels=1", "--latency-msec=10", (char *)NULL);
        _exit(127);
    }
    /* Wait until samples flow, so nothing the guest plays is missed. */
    for (int i = 0; i < 100 && file_size(path) < 4410; i++)
        usleep(50000);
    ck_assert_msg(file_size(path) >= 4410, "parec recorded nothing within 5 s");
}

static void record_stop(struct recording *r)
{
    usleep(300000); /* what the guest played is at the sink within the stream's latency */
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
}

struct heard {
    double span;    /* from the first to the last loud sample */
    double seconds; /* of that, in 5 ms windows with sound: what the guest played, without the
                     * gaps a late host's underruns add (test_audio's last test checks those) */
    int gap_ms;     /* the longest run of silent 5 ms windows in that span */
    double hz;      /* strongest frequency in that span */
    int peak;
    long samples;
};

static double goertzel_power(const int16_t *x, long n, double hz)
{
    double w = 2 * M_PI * hz / RATE, c = 2 * cos(w), s1 = 0, s2 = 0;
    for (long i = 0; i < n; i++) {
        double s = x[i] + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    return s1 * s1 + s2 * s2 - c * s1 * s2;
}

static struct heard analyse(const char *path)
{
    struct heard h = {0};
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static int16_t x[RATE * 20];
    long n = (long)fread(x, sizeof(int16_t), sizeof(x) / sizeof(x[0]), f);
    fclose(f);
    h.samples = n;
    long first = -1, last = -1;
    for (long i = 0; i < n; i++) {
        int a = abs(x[i]);
        if (a > h.peak)
            h.peak = a;
        if (a > 1000) {
            if (first < 0)
                first = i;
            last = i;
        }
    }
    if (first < 0)
        return h;
    h.span = (double)(last - first) / RATE;
    long len = last - first, w = RATE / 200, loud = 0;
    for (long i = first, silent = 0; i < last; i += w) {
        bool any = false;
        for (long k = i; k < i + w && k < n && !any; k++)
            any = abs(x[k]) > 1000;
        loud += any;
        silent = any ? 0 : silent + 5;
        if (silent > h.gap_ms)
            h.gap_ms = (int)silent;
    }
    h.seconds = loud * 0.005;
    double best = 0, best_hz = 0;
    for (double hz = 50; hz <= 5000; hz += 5) {
        double pw = goertzel_power(x + first, len, hz);
        if (pw > best)
            best = pw, best_hz = hz;
    }
    for (double hz = best_hz - 5; hz <= best_hz + 5; hz += 0.25) {
        double pw = goertzel_power(x + first, len, hz);
        if (pw > best)
            best = pw, best_hz = hz;
    }
    h.hz = best_hz;
    return h;
}

/* ---- VMs ---- */

static json_t *query_audio(const char *name)
{
    json_t *st = vmws_json("volume", name, "--json", NULL);
    ck_assert_msg(st != NULL, "vmws volume %s --json gave no JSON", name);
    return st;
}

static struct console *start_vm(const char *name)
{
    int r = vmws_cmd(out, sizeof(out), 30, "create", name, "--memory", "256M", NULL);
    ck_assert_msg(r == 0, "vmws create %s failed (%d): %s", name, r, out);
    r = vmws_cmd(out, sizeof(out), 60, "start", name, "--display", "none", NULL);
    ck_assert_msg(r == 0, "vmws start %s failed (%d): %s", name, r, out);
    struct console *c = console_open(name);
    ck_assert_ptr_nonnull(c);
    console_send(c, "\n");
    if (!console_expect(c, "vmws> ", BOOT_MS))
        ck_abort_msg("no shell prompt from %s within %d ms; console showed: %s", name, BOOT_MS,
                     console_tail(c));
    return c;
}

static void run(struct console *c, const char *cmd, const char *expect, int timeout_ms)
{
    if (!console_run(c, cmd, expect, timeout_ms))
        ck_abort_msg("'%s': expected '%s' within %d ms; console showed: %s", cmd, expect,
                     timeout_ms, console_tail(c));
}

static int count_log_lines(const char *name, const char *needle)
{
    char path[512], line[2048];
    snprintf(path, sizeof(path), "%s/%s/vmm.log", e2e_home(), name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void use_server(const struct pulse *p)
{
    char server[400];
    snprintf(server, sizeof(server), "unix:%s", p->socket);
    setenv("PULSE_SERVER", server, 1);
}

/* The test's own server, in its home, and the VMs it starts use it. */
static void pulse_start_for_test(struct pulse *p)
{
    char dir[200];
    snprintf(dir, sizeof(dir), "%s/pulse", e2e_home());
    pulse_start(p, dir);
    use_server(p);
}

/* A server address where none answers: the VM plays to nobody. */
static void use_no_server(void)
{
    char server[400];
    snprintf(server, sizeof(server), "unix:%s/no-such-pulse", e2e_home());
    setenv("PULSE_SERVER", server, 1);
}

static void record_path(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s/%s.raw", e2e_home(), what);
}

static void check_heard(const char *what, const struct heard *h, double hz, double seconds,
                        double tolerance)
{
    fprintf(stderr, "%s: heard %.1f Hz for %.0f ms in %.0f ms (peak %d, %ld samples recorded)\n",
            what, h->hz, h->seconds * 1000, h->span * 1000, h->peak, h->samples);
    ck_assert_msg(h->peak > 1000, "%s: the sink heard silence (peak %d in %ld samples)", what,
                  h->peak, h->samples);
    ck_assert_msg(fabs(h->hz - hz) <= hz * 0.02,
                  "%s: dominant frequency %.1f Hz, expected %.0f "
                  "Hz +- 2%%",
                  what, h->hz, hz);
    if (seconds > 0)
        ck_assert_msg(fabs(h->seconds - seconds) <= seconds * tolerance,
                      "%s: sound lasted %.0f ms, expected %.0f ms +- %.0f%%", what,
                      h->seconds * 1000, seconds * 1000, tolerance * 100);
}

START_TEST(tone_and_beep_reach_the_sink)
{
    test_begin();
    struct pulse p;
    char path[400];
    pulse_start_for_test(&p);
    struct console *c = start_vm("snd");
    run(c, "sound info", "sound: ES1370 at 00:05.0", 5000);

    struct recording rec;
    record_path(path, sizeof(path), "tone");
    record_start(&rec, &p, path);
    run(c, "tone 440 500", "tone: done (25 periods, irq)", 5000);
    record_stop(&rec);
    struct heard h = analyse(path);
    json_t *a = query_audio("snd");
    fprintf(stderr, "tone 440 500: %lld underruns, buffer %lld ms, longest gap %d ms\n",
            (long long)json_integer_value(json_object_get(a, "underruns")),
            (long long)json_integer_value(json_object_get(a, "buffer_ms")), h.gap_ms);
    json_decref(a);
    check_heard("tone 440 500", &h, 440, 0.5, 0.10);

    record_path(path, sizeof(path), "beep");
    record_start(&rec, &p, path);
    run(c, "beep 1000 200", "beep: done", 5000);
    record_stop(&rec);
    h = analyse(path);
    check_heard("beep 1000 200", &h, 1000, 0.2, 0.15);

    /* Volume from the command line: muted, the sink hears nothing; unmuted, the tone again. */
    int r = vmws_cmd(out, sizeof(out), 10, "volume", "snd", "mute", NULL);
    ck_assert_msg(r == 0, "vmws volume snd mute failed (%d): %s", r, out);
    record_path(path, sizeof(path), "muted");
    record_start(&rec, &p, path);
    run(c, "tone 880 200", "tone: done", 5000);
    record_stop(&rec);
    h = analyse(path);
    ck_assert_msg(h.peak <= 1000, "muted VM was heard (peak %d)", h.peak);
    r = vmws_cmd(out, sizeof(out), 10, "volume", "snd", "50", NULL);
    ck_assert_msg(r == 0 && strstr(out, "volume 50%"), "vmws volume snd 50 (%d): %s", r, out);
    r = vmws_cmd(out, sizeof(out), 10, "volume", "snd", "unmute", NULL);
    ck_assert_msg(r == 0, "vmws volume snd unmute failed (%d): %s", r, out);
    /* The setting lasts: [audio] in vm.conf. */
    char conf[512], text[4096] = "";
    snprintf(conf, sizeof(conf), "%s/snd/vm.conf", e2e_home());
    FILE *f = fopen(conf, "r");
    ck_assert_ptr_nonnull(f);
    size_t tn = fread(text, 1, sizeof(text) - 1, f);
    text[tn] = 0;
    fclose(f);
    ck_assert_msg(strstr(text, "[audio]") && strstr(text, "volume = 50\n") &&
                      strstr(text, "mute = no\n"),
                  "vm.conf does not keep the volume:\n%s", text);
    /* A `vmws volume` killed with its new vm.conf written but not yet in place leaves the old
     * one whole, comments and all. */
    setenv("VMWS_CRASH_AT", "vmconf-written", 1);
    r = vmws_cmd(out, sizeof(out), 10, "volume", "snd", "20", NULL);
    unsetenv("VMWS_CRASH_AT");
    ck_assert_msg(r != 0, "vmws volume was to be killed at vmconf-written: %s", out);
    char after[4096] = "";
    f = fopen(conf, "r");
    ck_assert_ptr_nonnull(f);
    after[fread(after, 1, sizeof(after) - 1, f)] = 0;
    fclose(f);
    ck_assert_str_eq(after, text);
    record_path(path, sizeof(path), "half");
    record_start(&rec, &p, path);
    run(c, "tone 880 200", "tone: done", 5000);
    record_stop(&rec);
    h = analyse(path);
    check_heard("tone 880 200 at 50%", &h, 880, 0.2, 0.15);
    ck_assert_msg(h.peak > 1000 && h.peak < 16384 / 4,
                  "at 50%% (cubic) the peak should be about "
                  "1/8 of 16384, was %d",
                  h.peak);

    ck_assert_int_eq(count_log_lines("snd", "no PulseAudio server"), 0);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "snd", NULL);
    pulse_stop(&p);
    e2e_teardown();
}
END_TEST

START_TEST(no_server_runs_silent_with_one_warning)
{
    test_begin();
    use_no_server();
    struct console *c = start_vm("mute");
    /* The card keeps its timing without a server: periods and interrupts as usual. */
    run(c, "tone 440 300", "tone: done (15 periods, irq)", 5000);
    run(c, "beep 1000 100", "beep: done", 5000);
    run(c, "tone 440 100", "tone: done", 5000);
    usleep(2500000); /* at least one reconnection attempt, which must stay quiet */
    run(c, "version", "vmws-guest", 5000);
    int warnings = count_log_lines("mute", "no PulseAudio server reachable");
    ck_assert_msg(warnings == 1,
                  "expected exactly one 'no PulseAudio server' warning in vmm.log, "
                  "found %d",
                  warnings);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "mute", NULL);
    e2e_teardown();
}
END_TEST

START_TEST(server_restart_reconnects)
{
    test_begin();
    struct pulse p;
    char path[400];
    pulse_start_for_test(&p);
    struct console *c = start_vm("again");
    pulse_stop(&p);
    run(c, "tone 440 100", "tone: done", 5000); /* while the server is gone */
    pulse_start_for_test(&p); /* the same socket again */
    /* The VMM retries every 2 s. */
    bool back = false;
    for (int i = 0; i < 40 && !back; i++) {
        usleep(200000);
        back = count_log_lines("again", "playing through PulseAudio") >= 2;
    }
    ck_assert_msg(back, "the VMM did not reconnect to the restarted server within 8 s");
    struct recording rec;
    record_path(path, sizeof(path), "again");
    record_start(&rec, &p, path);
    run(c, "tone 660 300", "tone: done", 5000);
    record_stop(&rec);
    struct heard h = analyse(path);
    check_heard("tone 660 300 after a server restart", &h, 660, 0.3, 0.10);
    ck_assert_int_eq(count_log_lines("again", "lost the PulseAudio server"), 1);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "again", NULL);
    pulse_stop(&p);
    e2e_teardown();
}
END_TEST

/* Stops the VMM (every thread: the mixer misses its ticks) for ms, STALLS times, 400 ms apart. */
static void stall_vmm(pid_t pid, int ms, int stalls)
{
    for (int i = 0; i < stalls; i++) {
        usleep(400000);
        ck_assert_int_eq(kill(pid, SIGSTOP), 0);
        usleep((useconds_t)ms * 1000);
        ck_assert_int_eq(kill(pid, SIGCONT), 0);
    }
}

START_TEST(a_late_host_grows_the_buffer_not_the_gaps)
{
    test_begin();
    struct pulse p;
    char path[400];
    pulse_start_for_test(&p);
    struct console *c = start_vm("late");
    pid_t pid = vm_pid("late");
    ck_assert_int_gt(pid, 0);

    /* Stalls longer than what the buffer holds (half of it, once playing): the server runs
     * dry, and the buffer doubles - 40, 80, 160, 320 ms - at the third or later of them. */
    struct recording rec;
    record_path(path, sizeof(path), "late-first");
    record_start(&rec, &p, path);
    console_send(c, "tone 440 6000\n");
    ck_assert_msg(console_expect(c, "tone: playing 440 Hz", 5000), "no tone: %s",
                  console_tail(c));
    json_int_t underruns = 0;
    int buffer_ms = 0, stalls = 0;
    while (buffer_ms < 320 && stalls < 8) {
        stall_vmm(pid, 150, 1);
        stalls++;
        usleep(200000);
        json_t *a = query_audio("late");
        underruns = json_integer_value(json_object_get(a, "underruns"));
        buffer_ms = (int)json_integer_value(json_object_get(a, "buffer_ms"));
        json_decref(a);
    }
    ck_assert_msg(console_expect(c, "tone: done", 10000), "tone did not end: %s",
                  console_tail(c));
    record_stop(&rec);
    fprintf(stderr, "%d stalls of 150 ms: %lld underruns, buffer now %d ms, longest gap %d ms\n",
            stalls, (long long)underruns, buffer_ms, analyse(path).gap_ms);
    ck_assert_msg(underruns >= 3 && buffer_ms == 320,
                  "after %d stalls of 150 ms: %lld underruns, buffer %d ms (expected >= 3 and the "
                  "buffer grown to 320 ms)",
                  stalls, (long long)underruns, buffer_ms);
    int r = vmws_cmd(out, sizeof(out), 10, "volume", "late", NULL);
    ck_assert_msg(r == 0 && strstr(out, "320 ms buffer"), "vmws volume late (%d): %s", r, out);
    ck_assert_int_ge(count_log_lines("late", "PulseAudio ran dry"), 1);

    /* Shorter stalls (60 ms) now: heard as latency, not as silence. */
    record_path(path, sizeof(path), "late-then");
    record_start(&rec, &p, path);
    run(c, "tone 440 2000", "tone: playing 440 Hz", 5000);
    stall_vmm(pid, 60, 3);
    ck_assert_msg(console_expect(c, "tone: done", 10000), "tone did not end: %s",
                  console_tail(c));
    record_stop(&rec);
    struct heard h = analyse(path);
    check_heard("tone 440 2000 with three 60 ms stalls", &h, 440, 2.0, 0.10);
    ck_assert_msg(h.gap_ms < 20, "with a 320 ms buffer, 60 ms stalls still made a gap of %d ms",
                  h.gap_ms);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "late", NULL);
    pulse_stop(&p);
    e2e_teardown();
}
END_TEST

/* KVM owns the PIT and port 0x61: a rising edge of channel 2's gate leaves the other channels
 * counting (a VMM that rewrote the whole PIT on that edge, as vmws did before issue 14, restarts
 * them all: channel 1 then counted ~50 ticks in 10 ms instead of ~12000), and bit 5 of port
 * 0x61 follows channel 2's 100 Hz square wave. The guest's microseconds come from its TSC,
 * calibrated 1/16 high (so they run a little short); a vCPU preempted for 40 ms would wrap
 * channel 1's 16 bits, so the edge is tried up to five times. */
START_TEST(pit_gate_edge_restarts_no_channel)
{
    test_begin();
    use_no_server();
    struct console *c = start_vm("pit");
    unsigned ticks = 0, changes = 0, reads = 0;
    unsigned long us = 0, wave_us = 0, ns = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        size_t from = c->mark;
        run(c, "pit check", " ns each)", 5000);
        const char *line = strstr(c->buf + from, "pit: channel 1 counted ");
        const char *wave = strstr(c->buf + from, "pit: port 0x61 bit 5 changed ");
        ck_assert_msg(
            line && wave &&
                sscanf(line, "pit: channel 1 counted %u ticks in %lu us", &ticks, &us) == 2 &&
                sscanf(wave, "pit: port 0x61 bit 5 changed %u times in %lu us (%u reads, %lu ns",
                       &changes, &wave_us, &reads, &ns) == 4,
            "unexpected 'pit check' output: %s", c->buf + from);
        fprintf(stderr,
                "pit check: channel 1 counted %u ticks in %lu us; bit 5 changed %u times in %lu "
                "us; %u reads of port 0x61, %lu ns each\n",
                ticks, us, changes, wave_us, reads, ns);
        if (us >= 9000 && us < 40000)
            break;
    }
    ck_assert_msg(us >= 9000 && us < 40000, "the 10 ms delay took %lu us", us);
    /* 1.193182 ticks a microsecond; half of that is far above what a restart leaves. */
    ck_assert_msg(ticks >= us * 1193 / 2000,
                  "channel 1 counted %u ticks in %lu us: the gate edge on channel 2 restarted it",
                  ticks, us);
    /* 100 Hz: a change every 5 ms. Never more than the wave makes (the guest's us run up to
     * 1/16 short); fewer where the vCPU was preempted across whole periods (a loaded host saw
     * 4 in 100 ms, reads 0.8 ms apart), but it must go both ways. */
    unsigned most = (unsigned)(wave_us * 17 / 16 / 5000) + 2;
    ck_assert_msg(changes >= 2 && changes <= most,
                  "port 0x61 bit 5 changed %u times in %lu us; a 100 Hz OUT2 changes every 5 ms",
                  changes, wave_us);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "pit", NULL);
    e2e_teardown();
}
END_TEST

START_TEST(guest_nonsense_breaks_the_card_not_the_vm)
{
    test_begin();
    use_no_server();
    struct console *c = start_vm("bad");
    /* The interrupt line register is the OS's note: written, it moves no interrupt. */
    run(c, "sound irqline 3", "interrupt line register set to 3", 5000);
    run(c, "tone 440 100", "tone: done (5 periods, irq)", 5000);
    run(c, "sound garbage", "sound: programmed nonsense", 5000);
    run(c, "version", "vmws-guest", 5000);
    /* The mixer thread finds the nonsense at its next tick (every 5 ms; later on a busy host). */
    int broken = 0;
    for (int i = 0; i < 40 && broken == 0; i++, usleep(50000))
        broken = count_log_lines("bad", "es1370: device broken");
    ck_assert_msg(broken == 1, "expected one 'es1370: device broken' line in vmm.log, found %d",
                  broken);
    ck_assert_int_eq(count_log_lines("bad", "705600 Hz"), 1);
    /* A broken card stays silent and interrupt-free; the guest's driver gives up in time. */
    run(c, "tone 440 100", "tone: timed out", 5000);
    run(c, "mem alloc 4", "allocated 4 MiB", 5000);
    json_t *st = vmws_json("status", "bad", "--json", NULL);
    ck_assert_ptr_nonnull(st);
    const char *state = json_string_value(json_object_get(st, "state"));
    ck_assert_msg(state && !strcmp(state, "running"), "VM state after the nonsense: %s", state);
    json_decref(st);
    int r = vmws_cmd(out, sizeof(out), 10, "volume", "bad", NULL);
    ck_assert_msg(r == 0 && strstr(out, "broken (DAC2 programmed to 705600 Hz"),
                  "vmws volume bad should show the broken card (%d): %s", r, out);
    ck_assert_int_eq(count_log_lines("bad", "es1370: device broken"), 1);
    console_close(c);
    vmws_cmd(out, sizeof(out), 20, "kill", "bad", NULL);
    e2e_teardown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("audio");
    snprintf(homes_file, sizeof(homes_file), "/tmp/vmws-test-audio-homes.%d", (int)getpid());
    TCase *tc = tcase_create("e2e");
    tcase_add_unchecked_fixture(tc, NULL, cleanup_homes);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tone_and_beep_reach_the_sink);
    tcase_add_test(tc, no_server_runs_silent_with_one_warning);
    tcase_add_test(tc, server_restart_reconnects);
    tcase_add_test(tc, guest_nonsense_breaks_the_card_not_the_vm);
    tcase_add_test(tc, a_late_host_grows_the_buffer_not_the_gaps);
    tcase_add_test(tc, pit_gate_edge_restarts_no_channel);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
