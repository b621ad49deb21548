/* The Memory panel: the selected VM's memory truth - configured, apparent (the .vmem's size),
 * allocated (its blocks, what ls -s shows), resident, dirty, shared vs private, swapped - as
 * figures and bars on one scale (the largest figure, normally the configured size), then the
 * guest's side (its balloon, and what its driver says it uses), what the host guarantees and
 * allows it (reservation, limit, its cgroup) and dynamic memory's last change with its reason,
 * with sparklines of allocated, resident and the dirty rate over the last minutes. */
#include <curses.h>
#include <stdio.h>
#include <string.h>

#include "ui/dash.h"

struct row {
    const char *label;
    uint64_t value;
    uint64_t value2; /* the private part of "shared/private" */
    int role;
    bool needs_mapping; /* only known while the VMM runs */
    const struct history *spark;
    int spark_role;
};

/* Four lines: the balloon, the guest's own figures, reservation/limit, dynamic memory (the
 * first two when only they fit). */
enum { GUEST_ROWS = 4 };
static void draw_guest(const struct dash_vm *v, int y, const struct rect *in, int labelw)
{
    char a[16], b[16], c[16], e[16], line[160];
    draw_text(y, in->x, labelw, draw_attr(ROLE_TITLE), "balloon");
    fmt_bytes(a, sizeof(a), v->balloon_target);
    fmt_bytes(b, sizeof(b), v->balloon_actual);
    if (v->balloon_driver)
        snprintf(line, sizeof(line), "asked back %s, given %s   (b: set)", a, b);
    else
        snprintf(line, sizeof(line), "asked back %s; no balloon driver in the guest", a);
    draw_text(y, in->x + labelw, in->w - labelw, v->balloon_driver ? 0 : draw_attr(ROLE_DIM), line);
    draw_text(y + 1, in->x, labelw, draw_attr(ROLE_TITLE), "guest says");
    if (!v->guest_stats) {
        draw_text(y + 1, in->x + labelw, in->w - labelw, draw_attr(ROLE_DIM),
                  "-  (no statistics from its balloon driver)");
        return;
    }
    fmt_bytes(a, sizeof(a), v->guest_total > v->guest_free ? v->guest_total - v->guest_free : 0);
    fmt_bytes(b, sizeof(b), v->guest_total);
    fmt_bytes(c, sizeof(c), v->guest_avail);
    fmt_bytes(e, sizeof(e), v->guest_cached);
    snprintf(line, sizeof(line), "uses %s of %s, available %s, cache %s", a, b, c, e);
    draw_text(y + 1, in->x + labelw, in->w - labelw, 0, line);
}

static void draw_management(const struct dash_vm *v, int y, const struct rect *in, int labelw)
{
    char a[16], b[16], c[16], line[240];
    fmt_bytes(a, sizeof(a), v->reservation);
    fmt_bytes(b, sizeof(b), v->limit);
    fmt_bytes(c, sizeof(c), v->cg_current);
    draw_text(y, in->x, labelw, draw_attr(ROLE_TITLE), "host keeps");
    snprintf(line, sizeof(line), "reserved %s, limit %s, shares %u; %s%s", v->reservation ? a : "-",
             v->limit ? b : "-", v->shares,
             v->cg_enforced ? "cgroup holds " : "no cgroup v2 memory: not enforced",
             v->cg_enforced ? c : "");
    draw_text(y, in->x + labelw, in->w - labelw,
              v->cg_enforced || !(v->reservation || v->limit) ? 0 : draw_attr(ROLE_WARN), line);
    draw_text(y + 1, in->x, labelw, draw_attr(ROLE_TITLE), "dynamic");
    if (!v->dynamic) {
        draw_text(y + 1, in->x + labelw, in->w - labelw, draw_attr(ROLE_DIM), "off");
        return;
    }
    fmt_bytes(a, sizeof(a), v->policy_keep);
    if (v->policy_reason[0])
        snprintf(line, sizeof(line), "keeps %s: %s", a, v->policy_reason);
    else
        snprintf(line, sizeof(line), "on, no change yet");
    draw_text(y + 1, in->x + labelw, in->w - labelw, 0, line);
}

static void draw(struct dash *d, const struct rect *r, bool focused)
{
    struct dash_vm *v = dash_selected(d);
    char title[128];
    if (v)
        snprintf(title, sizeof(title), "Memory: %s (%s)", v->name, v->backend);
    else
        snprintf(title, sizeof(title), "Memory");
    draw_box(r, title, focused);
    struct rect in = draw_inner(r);
    if (!v || in.h < 1)
        return;
    if (!v->mem_ok) {
        draw_text(in.y, in.x, in.w, draw_attr(ROLE_WARN),
                  v->mem_err[0] ? v->mem_err : "measuring...");
        return;
    }
    const struct memtruth_vm *m = &v->mem;
    bool live = v->mem_from_vmm && m->from_mapping;
    struct row rows[] = {
        {"configured", m->configured, 0, ROLE_NORMAL, false, NULL, 0},
        {"apparent", m->apparent, 0, ROLE_APPARENT, false, NULL, 0},
        {"allocated", v->allocated ? v->allocated : m->allocated, 0, ROLE_ALLOCATED, false,
         &v->h_allocated, ROLE_ALLOCATED},
        /* not running: what is left of its RAM in the host is the file's page cache */
        {live ? "resident" : "page cache", m->resident, 0, ROLE_RESIDENT, false, &v->h_resident,
         ROLE_RESIDENT},
        {"dirty", m->dirty, 0, ROLE_DIRTY, true, &v->h_dirty_rate, ROLE_DIRTY},
        {"shared/priv", m->shared, m->private_, ROLE_RESIDENT, true, NULL, 0},
        {"swapped", m->swapped, 0, ROLE_SWAP, true, NULL, 0},
        {"huge/KSM", m->huge, m->ksm_merged, ROLE_RESIDENT, true, NULL, 0},
    };
    const int nrows = (int)(sizeof(rows) / sizeof(rows[0]));
    uint64_t scale = 1;
    for (int i = 0; i < nrows; i++) {
        uint64_t t = rows[i].value + rows[i].value2;
        if (t > scale)
            scale = t;
    }
    const int labelw = 12, valuew = 13;
    int barx = in.x + labelw + valuew + 1;
    int room = in.x + in.w - barx;
    /* The guest's rows when there is room; sparklines get their own rows when the panel is
     * tall enough, else share the line. */
    int guest_rows = !v->balloon_ok || in.h < nrows + 2 ? 0
                     : in.h < nrows + GUEST_ROWS        ? 2
                                                        : GUEST_ROWS;
    bool spark_rows = in.h >= nrows + guest_rows + 4;
    int barw = spark_rows ? room : room * 2 / 5;
    int sparkx = barx + barw + 1, sparkw = in.x + in.w - sparkx;
    if (!spark_rows && sparkw < 6) {
        barw = room;
        sparkw = 0;
    }
    for (int i = 0; i < nrows && i < in.h; i++) {
        int y = in.y + i;
        const struct row *rw = &rows[i];
        draw_text(y, in.x, labelw, draw_attr(ROLE_TITLE), rw->label);
        char val[48], a[16], b[16];
        if (rw->needs_mapping && !live) {
            draw_text(y, in.x + labelw, in.w - labelw, draw_attr(ROLE_DIM),
                      "-  (known while the VM runs)");
            continue;
        }
        fmt_bytes(a, sizeof(a), rw->value);
        if (i == 5 || i == 7) {
            fmt_bytes(b, sizeof(b), rw->value2);
            snprintf(val, sizeof(val), "%s/%s", a, b);
        } else if (i == 4 && v->h_dirty_rate.n) {
            fmt_bytes(b, sizeof(b), (uint64_t)history_get(&v->h_dirty_rate, 0));
            snprintf(val, sizeof(val), "%s +%s/s", a, b);
        } else {
            snprintf(val, sizeof(val), "%s", a);
        }
        draw_textf(y, in.x + labelw, valuew, 0, "%*s", valuew - 1, val);
        if (barw > 0) {
            if (i == 5) { /* shared then private, on the same scale */
                int ws = (int)((double)rw->value / (double)scale * barw + 0.5);
                draw_bar(y, barx, barw, (double)(rw->value + rw->value2) / (double)scale,
                         draw_attr(ROLE_APPARENT));
                if (ws > 0)
                    draw_bar(y, barx, ws, 1.0, draw_attr(ROLE_RESIDENT));
            } else {
                draw_bar(y, barx, barw, (double)rw->value / (double)scale, draw_attr(rw->role));
            }
        }
        if (!spark_rows && sparkw > 0 && rw->spark)
            draw_sparkline(y, sparkx, sparkw, rw->spark, draw_attr(rw->spark_role));
    }
    if (guest_rows) {
        draw_guest(v, in.y + nrows, &in, labelw);
        if (guest_rows == GUEST_ROWS)
            draw_management(v, in.y + nrows + 2, &in, labelw);
    }
    if (!spark_rows)
        return;
    /* Sparkline rows: one column per refresh (1 s), newest on the right. */
    int y = in.y + nrows + guest_rows;
    int span = in.w - labelw - 1;
    int spw = span - 8 > 1 ? span - 8 : 1;
    int secs = spw * (int)history_step((size_t)spw);
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "last %d:%02d, %zu s per column, scale 0..max", secs / 60, secs % 60,
             history_step((size_t)spw));
    draw_text(y++, in.x + labelw, in.w - labelw, draw_attr(ROLE_DIM), hdr);
    const struct {
        const char *label;
        const struct history *h;
        int role;
    } sp[] = {{"allocated", &v->h_allocated, ROLE_ALLOCATED},
              {"resident", &v->h_resident, ROLE_RESIDENT},
              {"dirty/s", &v->h_dirty_rate, ROLE_DIRTY}};
    for (int i = 0; i < 3 && y < in.y + in.h; i++, y++) {
        /* label, sparkline, and the window's maximum (the top of the sparkline's scale) */
        double max = history_max(sp[i].h, (size_t)spw * history_step((size_t)spw));
        char top[16];
        fmt_bytes(top, sizeof(top), (uint64_t)max);
        draw_text(y, in.x, labelw, draw_attr(ROLE_TITLE), sp[i].label);
        draw_sparkline(y, in.x + labelw, spw, sp[i].h, draw_attr(sp[i].role));
        draw_textf(y, in.x + labelw + spw, 8, draw_attr(ROLE_DIM), " %6s", top);
    }
}

const struct panel panel_memory = {"Memory", false, draw, NULL};
