/* `vmws volume NAME [0-100|up|down|mute|unmute|toggle] [--json]`: a VM's sound volume and mute
 * (up/down move it by 10; the dashboard's + - m keys use them). A new value is
 * written to [audio] in vm.conf (so it lasts) and, if the VM runs, set in its VMM (control
 * commands set-volume, query-audio), which applies it to the mix before PulseAudio. Without a
 * value it shows the volume and what the sound devices are doing. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/cli.h"

static json_t *audio_execute(const char *name, const struct vm_paths *p, const char *command,
                             json_t *args)
{
    struct ctl_client *c = cli_vm_connect(name, p);
    if (!c) {
        json_decref(args);
        return NULL;
    }
    char err[512];
    json_t *r = ctl_client_execute(c, command, args, 10000, err, sizeof(err));
    ctl_client_close(c);
    json_decref(args);
    if (!r)
        cli_error("VM '%s': %s", name, err);
    return r;
}

static void print_audio(const char *name, json_t *a)
{
    json_t *es = json_object_get(a, "es1370"), *pc = json_object_get(a, "pcspk");
    printf("%s: volume %d%%%s\n", name, (int)json_integer_value(json_object_get(a, "volume")),
           json_is_true(json_object_get(a, "muted")) ? ", muted" : "");
    if (!es)
        return;
    printf("  sound card:  ES1370, %s", json_string_value(json_object_get(es, "state")));
    if (json_object_get(es, "broken"))
        printf(" (%s)", json_string_value(json_object_get(es, "broken")));
    printf(", I/O 0x%llx, IRQ %d\n", (long long)json_integer_value(json_object_get(es, "io_base")),
           (int)json_integer_value(json_object_get(es, "irq")));
    printf("  pc speaker:  %s\n",
           json_is_true(json_object_get(pc, "sounding")) ? "sounding" : "quiet");
    printf("  pulseaudio:  %s, %lld frames played, %lld underruns, %lld ms buffer\n",
           json_string_value(json_object_get(a, "server")),
           (long long)json_integer_value(json_object_get(a, "frames_played")),
           (long long)json_integer_value(json_object_get(a, "underruns")),
           (long long)json_integer_value(json_object_get(a, "buffer_ms")));
}

int cmd_volume(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h')
            return cli_print_help(argv[0]);
        if (c != 'j')
            return EXIT_USAGE;
        json = true;
    }
    int npos = argc - optind;
    if (npos < 1 || npos > 2)
        return cli_usage_error(argv[0], "expected NAME and optionally 0-100, mute or unmute");
    const char *name = argv[optind], *value = npos == 2 ? argv[optind + 1] : NULL;
    struct vm_paths p;
    struct vm_config cfg;
    /* A change reads vm.conf, changes [audio] and writes it back: one process at a time (the
     * lock goes when we close it, or exit). */
    int lock = value && paths_for_vm(name, &p) == 0 ? vmconfig_lock(p.config) : -1;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    json_t *args = NULL;
    if (value) {
        char *end;
        long v = strtol(value, &end, 10);
        if (strcmp(value, "mute") == 0) {
            args = json_pack("{s:b}", "mute", 1);
            cfg.audio.muted = true;
        } else if (strcmp(value, "unmute") == 0) {
            args = json_pack("{s:b}", "mute", 0);
            cfg.audio.muted = false;
        } else if (strcmp(value, "toggle") == 0) {
            cfg.audio.muted = !cfg.audio.muted;
            args = json_pack("{s:b}", "mute", cfg.audio.muted);
        } else if (strcmp(value, "up") == 0 || strcmp(value, "down") == 0) {
            int nv = (int)cfg.audio.volume + (value[0] == 'u' ? 10 : -10);
            nv = nv < 0 ? 0 : nv > 100 ? 100 : nv;
            args = json_pack("{s:i}", "volume", nv);
            cfg.audio.volume = (unsigned)nv;
        } else if (*value && !*end && v >= 0 && v <= 100) {
            args = json_pack("{s:i}", "volume", (int)v);
            cfg.audio.volume = (unsigned)v;
        } else {
            return cli_usage_error(argv[0],
                                   "bad value '%s' (expected 0-100, up, down, mute, unmute or "
                                   "toggle)",
                                   value);
        }
        char volume[8];
        snprintf(volume, sizeof(volume), "%u", cfg.audio.volume);
        const char *keys[] = {"volume", "mute"},
                   *values[] = {volume, cfg.audio.muted ? "yes" : "no"};
        int r = vmconfig_set(p.config, "audio", keys, values, 2);
        if (lock >= 0)
            close(lock);
        if (r < 0) {
            json_decref(args);
            return cli_error("cannot save %s: %s", p.config, strerror(-r));
        }
    }
    struct cli_vm_state st;
    cli_vm_query(&p, &cfg, &st);
    if (!st.running) {
        json_decref(args);
        if (json) {
            json_t *j = json_pack("{s:i, s:b, s:b, s:s}", "volume", (int)cfg.audio.volume, "muted",
                                  cfg.audio.muted, "enabled", cfg.audio.enabled, "state", st.state);
            char *s = json_dumps(j, JSON_INDENT(2));
            puts(s);
            free(s);
            json_decref(j);
        } else {
            printf("%s: volume %u%%%s (%s; in vm.conf, used when it starts)\n", name,
                   cfg.audio.volume, cfg.audio.muted ? ", muted" : "", st.state);
        }
        return 0;
    }
    if (args) {
        json_t *r = audio_execute(name, &p, "set-volume", args);
        if (!r)
            return 1;
        json_decref(r);
        if (!json) { /* a change answers with the new setting, one line */
            printf("%s: volume %u%%%s\n", name, cfg.audio.volume, cfg.audio.muted ? ", muted" : "");
            return 0;
        }
    }
    json_t *a = audio_execute(name, &p, "query-audio", NULL);
    if (!a)
        return 1;
    if (json) {
        char *s = json_dumps(a, JSON_INDENT(2));
        puts(s);
        free(s);
    } else {
        print_audio(name, a);
    }
    json_decref(a);
    return 0;
}
