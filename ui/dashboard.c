/* The dashboard's main loop: layout, keys, prompts, the help screen and the jobs that carry
 * out actions. The one idea: a single poll() waits on the keyboard, the console socket, the
 * jobs' pipes and the 1 Hz refresh deadline; every refresh gathers the model once and every
 * panel draws from it, so the screen costs one pass over cheap sources per second and
 * nothing while idle. Actions are `vmws` commands run as children (see jobs.h). */
#include "ui/dashboard.h"

#include <curses.h>
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ui/dash.h"

#define REFRESH_MS 1000
#define SNAPSHOTS_EVERY_MS 60000 /* fallback; changes are noticed at once */
#define LIST_EVERY_MS 60000
#define CTRL(c) ((c)&0x1f)

static const struct panel *const panels[PANEL_COUNT] = {
    [PANEL_VMS] = &panel_vms,         [PANEL_MEMORY] = &panel_memory,
    [PANEL_HOST] = &panel_host,       [PANEL_SNAPSHOTS] = &panel_snapshots,
    [PANEL_CONSOLE] = &panel_console,
};

static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
    (void)sig;
    got_term = 1;
}

/* A crash must not leave the user's terminal in raw mode with the screen half drawn. */
static void on_fatal(int sig)
{
    endwin();
    signal(sig, SIG_DFL);
    raise(sig);
}

struct dash_vm *dash_selected(struct dash *d)
{
    return d->vm_cursor < d->model.n ? d->model.vms[d->vm_cursor] : NULL;
}

void dash_message(struct dash *d, int role, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof(d->message), fmt, ap);
    va_end(ap);
    d->message_role = role;
}

static struct job *free_job(struct dash *d)
{
    for (int i = 0; i < JOBS_MAX; i++) {
        if (!d->jobs[i].used)
            return &d->jobs[i];
    }
    return NULL;
}

static struct job *running_action(struct dash *d)
{
    for (int i = 0; i < JOBS_MAX; i++) {
        if (d->jobs[i].used && d->jobs[i].kind == JOB_ACTION)
            return &d->jobs[i];
    }
    return NULL;
}

void dash_run_action(struct dash *d, const char *desc, const char *const *argv,
                     const char *const *then, const char *then_desc)
{
    struct job *busy = running_action(d);
    if (busy) {
        dash_message(d, ROLE_WARN, "wait: still %s", busy->desc);
        return;
    }
    struct job *j = free_job(d);
    /* the VM it acts on: `vmws CMD NAME ...` or `vmws snapshot CMD NAME ...` */
    const char *vm = strcmp(argv[0], "snapshot") == 0 ? argv[2] : argv[1];
    int rc = j ? job_start(j, JOB_ACTION, vm, desc, argv) : -EBUSY;
    if (rc < 0) {
        dash_message(d, ROLE_ERROR, "cannot run vmws %s: %s", argv[0], strerror(-rc));
        return;
    }
    for (size_t i = 0; then && then[i] && i < JOB_ARGS_MAX - 1; i++)
        snprintf(j->then[i], sizeof(j->then[i]), "%s", then[i]);
    snprintf(j->then_desc, sizeof(j->then_desc), "%s", then_desc ? then_desc : "");
    d->message[0] = '\0';
}

static void start_snapshot_list(struct dash *d, struct dash_vm *v)
{
    if (!v || v->snaps_pending)
        return;
    struct job *j = free_job(d);
    const char *argv[] = {"snapshot", "list", v->name, "--json", NULL};
    if (j && job_start(j, JOB_SNAPSHOTS, v->name, "snapshot list", argv) == 0)
        v->snaps_pending = true;
}

static void start_list(struct dash *d)
{
    for (int i = 0; i < JOBS_MAX; i++) {
        if (d->jobs[i].used && d->jobs[i].kind == JOB_LIST)
            return;
    }
    struct job *j = free_job(d);
    const char *argv[] = {"list", "--json", NULL};
    if (j && job_start(j, JOB_LIST, NULL, "list", argv) == 0)
        d->last_list_ms = model_now_ms();
}

void dash_select(struct dash *d, size_t i)
{
    if (i >= d->model.n)
        return;
    bool changed = strcmp(d->selected, d->model.vms[i]->name) != 0;
    d->vm_cursor = i;
    snprintf(d->selected, sizeof(d->selected), "%s", d->model.vms[i]->name);
    if (!changed)
        return;
    d->snap_cursor = d->snap_top = 0;
    struct dash_vm *v = d->model.vms[i];
    conview_attach(&d->console, v->name, v->paths.console_sock, v->paths.serial_log);
    start_snapshot_list(d, v);
}

/* After a refresh the VM list may have changed: keep the selection on the same name. */
static void reselect(struct dash *d)
{
    for (size_t i = 0; i < d->model.n; i++) {
        if (strcmp(d->model.vms[i]->name, d->selected) == 0) {
            d->vm_cursor = i;
            return;
        }
    }
    d->selected[0] = '\0';
    if (d->model.n)
        dash_select(d, d->vm_cursor < d->model.n ? d->vm_cursor : d->model.n - 1);
    else
        conview_detach(&d->console);
}

static void refresh_model(struct dash *d)
{
    model_refresh(&d->model, d->selected[0] ? d->selected : NULL);
    reselect(d);
    if (d->select_when_seen[0]) { /* a VM just created with n */
        for (size_t i = 0; i < d->model.n; i++) {
            if (strcmp(d->model.vms[i]->name, d->select_when_seen) == 0) {
                dash_select(d, i);
                d->select_when_seen[0] = '\0';
                break;
            }
        }
    }
    struct dash_vm *v = dash_selected(d);
    if (!v)
        return;
    if (!d->console.connected && v->live)
        conview_attach(&d->console, v->name, v->paths.console_sock, v->paths.serial_log);
    /* The slow queries (child processes) run only when their answer may have changed: the
     * tree file or a stopped VM's directory changed, an action finished, or a minute passed. */
    int64_t now = model_now_ms();
    if (!v->snaps_loaded || v->tree_changed || now - v->snaps_at_ms >= SNAPSHOTS_EVERY_MS) {
        if (v->snaps_pending)
            v->snaps_stale = true;
        else
            start_snapshot_list(d, v);
    }
    bool down_changed = false;
    for (size_t i = 0; i < d->model.n; i++)
        down_changed |= !d->model.vms[i]->live && d->model.vms[i]->dir_changed;
    if (down_changed || now - d->last_list_ms >= LIST_EVERY_MS)
        start_list(d);
}

/* ---- jobs finishing ---------------------------------------------------------------------- */

static void job_finished(struct dash *d, struct job *j, int64_t *next_refresh)
{
    char msg[400];
    job_message(j, msg, sizeof(msg));
    if (j->kind == JOB_LIST) {
        if (j->status == 0)
            model_apply_list(&d->model, j->out);
    } else if (j->kind == JOB_SNAPSHOTS) {
        struct dash_vm *v = model_find(&d->model, j->vm);
        if (v) {
            model_apply_snapshots(v, j->status == 0, j->out, msg);
            if (v->snaps_stale) {
                v->snaps_stale = false;
                start_snapshot_list(d, v);
            }
        }
    } else {
        double secs = (double)(model_now_ms() - j->started_ms) / 1000.0;
        if (j->status == 0) {
            dash_message(d, ROLE_OK, "%s: done in %.1fs%s%s", j->desc, secs, msg[0] ? " - " : "",
                         msg);
        } else {
            dash_message(d, ROLE_ERROR, "%s failed: %s", j->desc, msg[0] ? msg : "(no message)");
        }
        struct dash_vm *v = model_find(&d->model, j->vm);
        if (v) { /* reload its tree, again if a listing is already under way */
            v->snaps_at_ms = -SNAPSHOTS_EVERY_MS;
            v->snaps_stale = v->snaps_pending;
        }
        d->last_list_ms = -LIST_EVERY_MS;
        *next_refresh = model_now_ms(); /* show the result now */
        if (j->status == 0 && j->then[0][0]) {
            /* copies: releasing the job clears its strings */
            static char then[JOB_ARGS_MAX][128];
            const char *argv[JOB_ARGS_MAX + 1];
            size_t n = 0;
            for (; n < JOB_ARGS_MAX && j->then[n][0]; n++) {
                memcpy(then[n], j->then[n], sizeof(then[n]));
                argv[n] = then[n];
            }
            argv[n] = NULL;
            char desc[160];
            snprintf(desc, sizeof(desc), "%s", j->then_desc);
            job_release(j);
            dash_run_action(d, desc, argv, NULL, NULL);
            return;
        }
    }
    job_release(j);
}

/* ---- keys ------------------------------------------------------------------------------- */

static void open_prompt(struct dash *d, enum prompt_kind kind, const char *vm, const char *label,
                        const char *initial, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void open_prompt(struct dash *d, enum prompt_kind kind, const char *vm, const char *label,
                        const char *initial, const char *fmt, ...)
{
    d->prompt = kind;
    snprintf(d->prompt_vm, sizeof(d->prompt_vm), "%s", vm ? vm : "");
    snprintf(d->prompt_label, sizeof(d->prompt_label), "%s", label ? label : "");
    snprintf(d->prompt_input, sizeof(d->prompt_input), "%s", initial ? initial : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->prompt_question, sizeof(d->prompt_question), fmt, ap);
    va_end(ap);
}

static bool vm_is(const struct dash_vm *v, const char *state)
{
    return strcmp(v->state, state) == 0;
}

static void act_start_stop(struct dash *d, struct dash_vm *v)
{
    char desc[160];
    if (vm_is(v, "suspended")) {
        snprintf(desc, sizeof(desc), "resuming %s", v->name);
        dash_run_action(d, desc, (const char *[]){"resume", v->name, NULL}, NULL, NULL);
    } else if (model_vm_up(v)) {
        open_prompt(d, PROMPT_STOP, v->name, NULL, NULL,
                    "Power %s off? Its RAM is discarded (s suspends instead) [y/N] ", v->name);
    } else if (!v->cfg_ok) {
        dash_message(d, ROLE_ERROR, "%s: vm.conf has an error (see 'vmws list')", v->name);
    } else {
        snprintf(desc, sizeof(desc), "starting %s", v->name);
        dash_run_action(d, desc, (const char *[]){"start", v->name, NULL}, NULL, NULL);
    }
}

static void act_suspend_resume(struct dash *d, struct dash_vm *v)
{
    char desc[160];
    if (vm_is(v, "suspended")) {
        snprintf(desc, sizeof(desc), "resuming %s", v->name);
        dash_run_action(d, desc, (const char *[]){"resume", v->name, NULL}, NULL, NULL);
    } else if (model_vm_up(v)) {
        snprintf(desc, sizeof(desc), "suspending %s", v->name);
        dash_run_action(d, desc, (const char *[]){"suspend", v->name, NULL}, NULL, NULL);
    } else {
        dash_message(d, ROLE_WARN, "%s is %s: Enter starts it", v->name, v->state);
    }
}

static const struct snap_row *highlighted_snapshot(struct dash *d, struct dash_vm *v)
{
    if (!v->snaps_ok) {
        dash_message(d, ROLE_WARN, "snapshots: not available for %s (%s)", v->name, v->snaps_err);
        return NULL;
    }
    if (d->snap_cursor >= v->snaps.n || v->snaps.rows[d->snap_cursor].is_now) {
        dash_message(d, ROLE_WARN, "select a snapshot first (Tab to the Snapshots panel)");
        return NULL;
    }
    return &v->snaps.rows[d->snap_cursor];
}

static void default_label(struct dash_vm *v, char *out, size_t len)
{
    for (int i = 1;; i++) {
        snprintf(out, len, "snap%d", i);
        bool used = false;
        for (size_t k = 0; v->snaps_ok && k < v->snaps.n; k++)
            used |= strcmp(v->snaps.rows[k].label, out) == 0;
        if (!used)
            return;
    }
}

static void default_new_vm(struct dash *d, char *out, size_t len)
{
    for (int i = 1;; i++) {
        char name[32];
        snprintf(name, sizeof(name), "vm%d", i);
        if (!model_find(&d->model, name)) {
            snprintf(out, len, "%s 1G 1 8G", name);
            return;
        }
    }
}

static void prompt_accept(struct dash *d)
{
    enum prompt_kind kind = d->prompt;
    d->prompt = PROMPT_NONE;
    char desc[512];
    const char *vm = d->prompt_vm;
    switch (kind) {
    case PROMPT_TAKE: {
        const char *label = d->prompt_input;
        if (!*label) {
            dash_message(d, ROLE_WARN, "no label: nothing taken");
            return;
        }
        snprintf(desc, sizeof(desc), "taking snapshot %s of %s", label, vm);
        dash_run_action(d, desc, (const char *[]){"snapshot", "take", vm, label, NULL}, NULL, NULL);
        return;
    }
    case PROMPT_BALLOON: {
        uint64_t bytes;
        if (parse_size(d->prompt_input, &bytes) < 0) {
            dash_message(d, ROLE_WARN, "'%s' is not a size (e.g. 256M, 1G, 0): balloon unchanged",
                         d->prompt_input);
            return;
        }
        snprintf(desc, sizeof(desc), "asking %s to give back %s", vm, d->prompt_input);
        dash_run_action(d, desc, (const char *[]){"mem", vm, "--balloon", d->prompt_input, NULL},
                        NULL, NULL);
        return;
    }
    case PROMPT_NEW: {
        char name[64] = "", mem[32] = "1G", cpus[16] = "1", disk[32] = "8G";
        if (sscanf(d->prompt_input, "%63s %31s %15s %31s", name, mem, cpus, disk) < 1) {
            dash_message(d, ROLE_WARN, "no name: nothing created");
            return;
        }
        snprintf(desc, sizeof(desc), "creating %s (%s, %s vCPU, %s disk)", name, mem, cpus,
                 disk);
        char then_desc[160];
        snprintf(then_desc, sizeof(then_desc), "starting %s", name);
        snprintf(d->select_when_seen, sizeof(d->select_when_seen), "%s", name);
        dash_run_action(d, desc,
                        (const char *[]){"create", name, "--memory", mem, "--cpus", cpus,
                                         "--disk", disk, NULL},
                        (const char *[]){"start", name, NULL}, then_desc);
        return;
    }
    case PROMPT_DELETE:
    case PROMPT_STOP:
        if (d->prompt_input[0] != 'y' && d->prompt_input[0] != 'Y') {
            dash_message(d, ROLE_NORMAL, "cancelled");
            return;
        }
        if (kind == PROMPT_STOP) {
            snprintf(desc, sizeof(desc), "powering %s off", vm);
            dash_run_action(d, desc, (const char *[]){"stop", vm, NULL}, NULL, NULL);
        } else {
            snprintf(desc, sizeof(desc), "deleting snapshot %s of %s", d->prompt_label, vm);
            dash_run_action(
                d, desc, (const char *[]){"snapshot", "delete", vm, d->prompt_label, "--yes", NULL},
                NULL, NULL);
        }
        return;
    case PROMPT_NONE:
        return;
    }
}

static void prompt_key(struct dash *d, int k)
{
    size_t len = strlen(d->prompt_input);
    bool yes_no = d->prompt == PROMPT_DELETE || d->prompt == PROMPT_STOP;
    if (k == 27 || k == CTRL('c') || k == CTRL('g')) {
        d->prompt = PROMPT_NONE;
        dash_message(d, ROLE_NORMAL, "cancelled");
    } else if (k == '\n' || k == '\r' || k == KEY_ENTER) {
        prompt_accept(d);
    } else if (yes_no) {
        d->prompt_input[0] = (char)k;
        d->prompt_input[1] = '\0';
        prompt_accept(d);
    } else if (k == KEY_BACKSPACE || k == 127 || k == 8) {
        if (len)
            d->prompt_input[len - 1] = '\0';
    } else if (k == CTRL('u')) {
        d->prompt_input[0] = '\0';
    } else if (k >= 0x20 && k < 0x7f && len + 1 < sizeof(d->prompt_input)) {
        d->prompt_input[len] = (char)k;
        d->prompt_input[len + 1] = '\0';
    }
}

static void next_focus(struct dash *d, int dir)
{
    static const enum panel_id order[] = {PANEL_VMS, PANEL_SNAPSHOTS, PANEL_CONSOLE};
    int n = 3, i = 0;
    while (i < n && order[i] != d->focus)
        i++;
    d->focus = order[(i + n + dir) % n];
}

static void handle_key(struct dash *d, int k)
{
    if (k == KEY_RESIZE)
        return;
    if (d->prompt != PROMPT_NONE) {
        prompt_key(d, k);
        return;
    }
    if (d->help) {
        if (k == KEY_DOWN || k == 'j' || k == ' ' || k == KEY_NPAGE)
            d->help_top += k == KEY_DOWN || k == 'j' ? 1 : 10;
        else if (k == KEY_UP || k == 'k' || k == KEY_PPAGE)
            d->help_top = d->help_top > (k == KEY_PPAGE ? 10 : 1)
                              ? d->help_top - (k == KEY_PPAGE ? 10 : 1)
                              : 0;
        else
            d->help = false;
        return;
    }
    if (d->focus == PANEL_CONSOLE) {
        if (k == '\t' || k == CTRL(']')) {
            next_focus(d, 1);
            return;
        }
        if (k == KEY_BTAB) {
            next_focus(d, -1);
            return;
        }
        panel_console.key(d, k);
        return;
    }
    const struct panel *p = panels[d->focus];
    if (p->key && p->key(d, k))
        return;
    struct dash_vm *v = dash_selected(d);
    const struct snap_row *s;
    char buf[128];
    switch (k) {
    case 'q':
    case 'Q':
    case CTRL('c'):
        d->quit = true;
        return;
    case '\t':
        next_focus(d, 1);
        return;
    case KEY_BTAB:
        next_focus(d, -1);
        return;
    case '?':
    case KEY_F(1):
    case 'h':
        d->help = true;
        d->help_top = 0;
        return;
    case 'n':
        default_new_vm(d, buf, sizeof(buf));
        open_prompt(d, PROMPT_NEW, NULL, NULL, buf, "New VM (NAME MEMORY CPUS DISK): ");
        return;
    case CTRL('l'):
        clearok(curscr, TRUE);
        return;
    }
    if (!v) {
        if (strchr("strdb\n\r", k) || k == KEY_ENTER)
            dash_message(d, ROLE_WARN, "no VM selected: press n to create one");
        return;
    }
    switch (k) {
    case '\n':
    case '\r':
    case KEY_ENTER:
        act_start_stop(d, v);
        break;
    case 's':
        act_suspend_resume(d, v);
        break;
    case '+':
    case '=':
    case '-':
    case 'm': {
        const char *how = k == 'm' ? "toggle" : k == '-' ? "down" : "up";
        char desc[160];
        snprintf(desc, sizeof(desc), "volume of %s %s", v->name, how);
        dash_run_action(d, desc, (const char *[]){"volume", v->name, how, NULL}, NULL, NULL);
        break;
    }
    case 'b':
        if (!model_vm_up(v)) {
            dash_message(d, ROLE_WARN, "%s is not running: the balloon is a running guest's",
                         v->name);
            break;
        }
        snprintf(buf, sizeof(buf), "%lluM", (unsigned long long)(v->balloon_target >> 20));
        open_prompt(d, PROMPT_BALLOON, v->name, NULL, buf,
                    "Memory %s gives back to the host (e.g. 256M; 0: none): ", v->name);
        break;
    case 't':
        default_label(v, buf, sizeof(buf));
        open_prompt(d, PROMPT_TAKE, v->name, NULL, buf, "Snapshot label for %s: ", v->name);
        break;
    case 'r':
        if ((s = highlighted_snapshot(d, v))) {
            char desc[200];
            snprintf(desc, sizeof(desc), "reverting %s to %s", v->name, s->label);
            dash_run_action(d, desc,
                            (const char *[]){"snapshot", "revert", v->name, s->label, NULL}, NULL,
                            NULL);
        }
        break;
    case 'd':
        if ((s = highlighted_snapshot(d, v))) {
            char need[16];
            fmt_bytes(need, sizeof(need), s->delete_needs_bytes);
            if (s->children == 0)
                open_prompt(d, PROMPT_DELETE, v->name, s->label, NULL,
                            "Delete snapshot %s of %s? No children to merge into (needs %s) "
                            "[y/N] ",
                            s->label, v->name, need);
            else
                open_prompt(d, PROMPT_DELETE, v->name, s->label, NULL,
                            "Delete snapshot %s of %s? Merging it into %zu child%s needs %s "
                            "[y/N] ",
                            s->label, v->name, s->children, s->children == 1 ? "" : "ren", need);
        }
        break;
    }
}

/* ---- drawing ----------------------------------------------------------------------------- */

static void layout(struct dash *d)
{
    int W = COLS, body_y = 1, body_h = LINES - 3;
    int nvms = (int)d->model.n;
    int top_h = nvms + 3;
    int top_max = body_h / 4 > 7 ? body_h / 4 : 7;
    if (top_h < 7)
        top_h = 7;
    if (top_h > top_max)
        top_h = top_max;
    int mid_h;
    if (body_h >= 34) { /* tall: room for the snapshot tree, the rest to the console */
        struct dash_vm *v = dash_selected(d);
        int want = v && v->snaps_ok ? (int)v->snaps.n + 4 : 0;
        mid_h = want > 13 ? want : 13;
        if (mid_h > body_h * 2 / 5)
            mid_h = body_h * 2 / 5;
    } else
        mid_h = body_h - top_h - 5 < 13 ? body_h - top_h - 5 : 13;
    if (mid_h < 4)
        mid_h = 4;
    int con_h = body_h - top_h - mid_h;
    int vms_w = W >= 120 ? W * 11 / 20 : W / 2;
    int mem_w = W * 3 / 5;
    d->rects[PANEL_VMS] = (struct rect){body_y, 0, top_h, vms_w};
    d->rects[PANEL_HOST] = (struct rect){body_y, vms_w, top_h, W - vms_w};
    d->rects[PANEL_MEMORY] = (struct rect){body_y + top_h, 0, mid_h, mem_w};
    d->rects[PANEL_SNAPSHOTS] = (struct rect){body_y + top_h, mem_w, mid_h, W - mem_w};
    d->rects[PANEL_CONSOLE] = (struct rect){body_y + top_h + mid_h, 0, con_h, W};
}

static void draw_header(struct dash *d)
{
    char clock[16];
    time_t t = time(NULL);
    strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&t));
    size_t up = 0;
    for (size_t i = 0; i < d->model.n; i++)
        up += model_vm_up(d->model.vms[i]);
    int attr = draw_attr(ROLE_KEY);
    attron(attr);
    draw_blank(0, 0, COLS);
    attroff(attr);
    /* Without KVM (app/cli_boxed.c) the header says so: VMs run in the KVM box. */
    const char *note = getenv("VMWS_IN_BOX") ? getenv("VMWS_BOX_NOTE") : NULL;
    char left[400];
    int lw = snprintf(left, sizeof(left), " vmws dashboard - %zu VM%s, %zu up%s%s", d->model.n,
                      d->model.n == 1 ? "" : "s", up, note ? " - " : "", note ? note : "");
    draw_text(0, 0, COLS, attr, left);
    char right[96];
    if (COLS >= 100) /* what gathering cost, so nobody has to guess */
        snprintf(right, sizeof(right), "refresh %.1f ms  %s  ? help ",
                 (double)d->model.cost.total / 1000.0, clock);
    else
        snprintf(right, sizeof(right), "%s  ? help ", clock);
    int rw = (int)strlen(right);
    if (COLS > rw + (note ? lw : 34))
        draw_text(0, COLS - rw, rw, attr, right);
}

static void draw_message(struct dash *d)
{
    int y = LINES - 2;
    draw_blank(y, 0, COLS);
    if (d->prompt != PROMPT_NONE) {
        int x = draw_text(y, 0, COLS, draw_attr(ROLE_TITLE), d->prompt_question);
        x += draw_text(y, x, COLS - x, 0, d->prompt_input);
        draw_text(y, x, 1, A_REVERSE, " ");
        return;
    }
    struct job *j = running_action(d);
    if (j) {
        static const char *const spin_utf8[] = {"\u280b", "\u2819", "\u2839", "\u2838", "\u283c",
                                                "\u2834", "\u2826", "\u2827", "\u2807", "\u280f"};
        static const char spin_ascii[] = "|/-\\";
        int64_t el = model_now_ms() - j->started_ms;
        char sp[8];
        if (draw_utf8)
            snprintf(sp, sizeof(sp), "%s", spin_utf8[(el / 100) % 10]);
        else
            snprintf(sp, sizeof(sp), "%c", spin_ascii[(el / 100) % 4]);
        char last[256]; /* what the command last said (a progress line), if anything */
        job_message(j, last, sizeof(last));
        draw_textf(y, 0, COLS, draw_attr(ROLE_WARN), "%s %s... %.1fs%s%s", sp, j->desc,
                   (double)el / 1000.0, last[0] ? "  " : "", last);
        return;
    }
    if (d->message[0])
        draw_text(y, 0, COLS, draw_attr(d->message_role), d->message);
}

static void draw_keybar(struct dash *d)
{
    static const struct {
        const char *key, *label;
    } keys[] = {
        {"Enter", "start/stop"}, {"s", "suspend"}, {"t", "take"},
        {"r", "revert"},         {"d", "delete"},  {"n", "new"},    {"b", "balloon"},
        {"-=m", "volume"},
        {"Tab", "focus"},        {"?", "help"},    {"q", "quit"},
    };
    const int n = (int)(sizeof(keys) / sizeof(keys[0]));
    int y = LINES - 1;
    draw_blank(y, 0, COLS);
    if (d->focus == PANEL_CONSOLE) {
        draw_text(y, 0, COLS, draw_attr(ROLE_KEY),
                  " console: keys go to the guest  Tab/Ctrl-] leave  PgUp/PgDn scroll ");
        return;
    }
    /* "KEY label" items separated by two spaces, or one when the line is narrow */
    int full = 0;
    for (int i = 0; i < n; i++)
        full += (int)(strlen(keys[i].key) + strlen(keys[i].label) + 3);
    int gap = full - n > COLS ? 1 : 2;
    int x = 0;
    for (int i = 0; i < n && x < COLS; i++) {
        const char *k = keys[i].key;
        if (i == 0 && gap == 1 && COLS < 81)
            k = draw_utf8 ? "\u21b5" : "RET";
        x += draw_text(y, x, COLS - x, draw_attr(ROLE_KEY), k);
        char lab[40];
        snprintf(lab, sizeof(lab), " %s%*s", keys[i].label, gap, "");
        x += draw_text(y, x, COLS - x, 0, lab);
    }
}

static const char *const help_lines[] = {
    "Keys",
    "  Enter  start the selected VM, or power it off (asks; its RAM is discarded)",
    "  s      suspend the selected VM (state to disk, VMM exits), or resume it",
    "  t      take a snapshot (asks for a label; Enter takes the default)",
    "  r      revert to the highlighted snapshot, no dialog: the present state",
    "         is first kept as an automatic node, so nothing is lost",
    "  d      delete the highlighted snapshot (asks, showing what the merge needs)",
    "  n      new VM (NAME MEMORY CPUS), created and started",
    "  b      balloon: how much RAM the selected VM's guest gives back (asks a size)",
    "  - = m  sound volume of the selected VM down or up by 10 (+ too), mute on/off",
    "  Tab    focus VMs, Snapshots or Console (in the Console keys go to the",
    "         guest; Tab or Ctrl-] leave it, PgUp/PgDn scroll back)",
    "  Up/Dn  select a VM or a snapshot        q  quit (VMs keep running)",
    "",
    "Memory figures (the selected VM)",
    "  configured  the guest RAM size the VM was created with.",
    "  apparent    the .vmem file's size (ls -l); sparse, so it costs nothing.",
    "  allocated   blocks really allocated to the .vmem (ls -s, du): touched RAM.",
    "  resident    guest pages in host RAM now (smaps Rss of the RAM mapping).",
    "  dirty       resident pages changed but not yet written back to the file;",
    "              dirty/s is how fast that figure grows.",
    "  shared/priv pages also mapped by other processes / by this VMM only.",
    "  swapped     guest pages the host swapped out behind the guest's back.",
    "  balloon     what the host asked the guest to give back, and what it gave;",
    "              given pages are punched out of the .vmem (allocated falls), as",
    "              are the free pages the guest reports by itself.",
    "  guest says  the guest's own figures, from its balloon driver: what it",
    "              uses of its RAM, what it could still use, its page cache.",
    "",
    "Host",
    "  free: used  what `free` calls used; it hides MAP_SHARED guest RAM in",
    "              buff/cache. Mapped, Shmem, Cached show where it really is;",
    "              Dirty and Writeback are on their way to disk.",
    "  overcommit  configured RAM of running VMs over the host's RAM.",
    "",
    "Every action is also a command: vmws start|stop|suspend|resume NAME,",
    "vmws snapshot take|revert|delete NAME LABEL, vmws mem NAME --balloon SIZE.",
};

static void draw_help(struct dash *d)
{
    const int n = (int)(sizeof(help_lines) / sizeof(help_lines[0]));
    int w = COLS < 80 ? COLS : 80, h = LINES - 3 < n + 2 ? LINES - 3 : n + 2;
    struct rect r = {1 + (LINES - 3 - h) / 2, (COLS - w) / 2, h, w};
    int rows = h - 2;
    if (d->help_top > n - rows)
        d->help_top = n - rows > 0 ? n - rows : 0;
    char title[80];
    snprintf(title, sizeof(title), "Help%s",
             rows < n ? " - Up/Down scroll, other keys close" : " - any key closes");
    draw_box(&r, title, true);
    struct rect in = draw_inner(&r);
    for (int i = 0; i < in.h && d->help_top + i < n; i++) {
        const char *l = help_lines[d->help_top + i];
        draw_text(in.y + i, in.x + 1, in.w - 1, l[0] != ' ' && l[0] ? draw_attr(ROLE_TITLE) : 0, l);
    }
    if (d->help_top + rows < n)
        draw_text(r.y + r.h - 1, r.x + r.w - 9, 7, draw_attr(ROLE_TITLE), " more ");
}

static void draw_all(struct dash *d)
{
    erase();
    layout(d);
    draw_header(d);
    for (int i = 0; i < PANEL_COUNT; i++) {
        if (d->rects[i].h >= 2 && d->rects[i].w >= 4)
            panels[i]->draw(d, &d->rects[i], d->focus == (enum panel_id)i);
    }
    if (d->help)
        draw_help(d);
    draw_message(d);
    draw_keybar(d);
    refresh();
}

/* ---- main loop ------------------------------------------------------------------------- */

static void loop(struct dash *d)
{
    int64_t next_refresh = 0;
    while (!d->quit && !got_term) {
        int64_t now = model_now_ms();
        if (now >= next_refresh) {
            refresh_model(d);
            next_refresh = now + REFRESH_MS;
        }
        draw_all(d);

        struct pollfd pfd[2 + 2 * JOBS_MAX];
        struct job *owner[2 + 2 * JOBS_MAX];
        int n = 0;
        pfd[n] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
        owner[n++] = NULL;
        int con = -1;
        if (d->console.fd >= 0) {
            con = n;
            pfd[n] = (struct pollfd){.fd = d->console.fd, .events = POLLIN};
            owner[n++] = NULL;
        }
        for (int i = 0; i < JOBS_MAX; i++) {
            int k = job_pollfds(&d->jobs[i], &pfd[n]);
            for (int m = 0; m < k; m++)
                owner[n + m] = &d->jobs[i];
            n += k;
        }
        int64_t timeout = next_refresh - model_now_ms();
        if (running_action(d) && timeout > 100)
            timeout = 100; /* animate the progress line */
        if (timeout < 0)
            timeout = 0;
        int pr = poll(pfd, (nfds_t)n, (int)timeout);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr > 0 && con >= 0 && pfd[con].revents)
            conview_read(&d->console);
        for (int i = 0; pr > 0 && i < n; i++) {
            if (owner[i] && pfd[i].revents && owner[i]->used && !owner[i]->done &&
                job_service(owner[i]))
                job_finished(d, owner[i], &next_refresh);
        }
        int k;
        while ((k = getch()) != ERR)
            handle_key(d, k);
    }
}

int dashboard_run(const char *select)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "vmws: the dashboard needs a terminal (see 'vmws list', 'vmws console "
                        "NAME' and 'vmws help')\n");
        return 1;
    }
    setlocale(LC_ALL, "");
    const char *ascii = getenv("VMWS_ASCII");
    draw_utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0 && !(ascii && *ascii == '1');
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGHUP, on_term);
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        signal(fatal[i], on_fatal);

    static struct dash d; /* large (console scrollback): not on the stack */
    memset(&d, 0, sizeof(d));
    conview_init(&d.console);
    for (int i = 0; i < JOBS_MAX; i++)
        d.jobs[i].out_fd = d.jobs[i].err_fd = -1;
    d.last_list_ms = -LIST_EVERY_MS;
    d.model.memory_for_all = getenv("VMWS_DASHBOARD_MEMORY_ALL") != NULL;

    if (!initscr()) {
        fprintf(stderr, "vmws: cannot initialise the terminal (is TERM set?)\n");
        return 1;
    }
    raw();
    noecho();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    curs_set(0);
    draw_setup();

    model_refresh(&d.model, NULL);
    const char *want = select ? select : "default";
    size_t pick = 0;
    for (size_t i = 0; i < d.model.n; i++) {
        if (strcmp(d.model.vms[i]->name, want) == 0)
            pick = i;
    }
    if (d.model.n)
        dash_select(&d, pick);
    loop(&d);

    /* An action still running (a suspend, a snapshot) finishes before we go: killing it
     * half-way, or closing the pipes it writes to, could leave a VM half-done. */
    struct job *j;
    while ((j = running_action(&d))) {
        dash_message(&d, ROLE_WARN, "waiting for %s to finish before quitting", j->desc);
        draw_message(&d);
        refresh();
        struct pollfd pfd[2];
        int n = job_pollfds(j, pfd);
        if (n == 0 || poll(pfd, (nfds_t)n, 200) < 0 || job_service(j))
            job_release(j);
    }
    endwin();
    for (int i = 0; i < JOBS_MAX; i++)
        job_release(&d.jobs[i]);
    conview_detach(&d.console);
    model_free(&d.model);
    return 0;
}
