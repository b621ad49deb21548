/* The Snapshots panel: the selected VM's snapshot tree drawn with lines (UTF-8, ASCII
 * fallback), the current position marked (the node the VM's present state descends from,
 * with a "now" row under it), each node's label, age and size, and for the highlighted node
 * what deleting it would need (the merge into its children). Up/Down move the highlight that
 * r (revert) and d (delete) act on. */
#include <curses.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ui/dash.h"

static void draw(struct dash *d, const struct rect *r, bool focused)
{
    struct dash_vm *v = dash_selected(d);
    char title[96];
    snprintf(title, sizeof(title), "Snapshots%s%s", v ? ": " : "", v ? v->name : "");
    draw_box(r, title, focused);
    struct rect in = draw_inner(r);
    if (!v || in.h < 1)
        return;
    if (!v->snaps_loaded) {
        draw_text(in.y, in.x, in.w, draw_attr(ROLE_DIM), "loading...");
        return;
    }
    if (!v->snaps_ok) {
        draw_text(in.y, in.x, in.w, draw_attr(ROLE_WARN), "snapshots: not available");
        if (in.h > 1)
            draw_text(in.y + 1, in.x, in.w, draw_attr(ROLE_DIM), v->snaps_err);
        return;
    }
    const struct snap_tree *t = &v->snaps;
    if (t->n == 0 || (t->n == 1 && t->rows[0].is_now)) {
        draw_text(in.y, in.x, in.w, draw_attr(ROLE_DIM), "no snapshots: press t to take one");
        return;
    }
    if (d->snap_cursor >= t->n)
        d->snap_cursor = t->n - 1;
    int detail = in.h >= 4 ? 1 : 0;
    int rows = in.h - detail;
    if (d->snap_cursor < d->snap_top)
        d->snap_top = d->snap_cursor;
    if (d->snap_cursor >= d->snap_top + (size_t)rows)
        d->snap_top = d->snap_cursor - (size_t)rows + 1;
    time_t now = time(NULL);
    for (int i = 0; i < rows && d->snap_top + (size_t)i < t->n; i++) {
        size_t idx = d->snap_top + (size_t)i;
        const struct snap_row *s = &t->rows[idx];
        int y = in.y + i;
        bool sel = idx == d->snap_cursor;
        int attr = sel ? draw_attr(focused ? ROLE_SELECTED : ROLE_TITLE) : 0;
        if (sel) {
            attron(attr);
            draw_blank(y, in.x, in.w);
            attroff(attr);
        }
        char prefix[4 * SNAPTREE_DEPTH_MAX * 4];
        snaptree_prefix(s, draw_utf8, prefix, sizeof(prefix));
        int x = in.x;
        x += draw_text(y, x, in.w, sel ? attr : draw_attr(ROLE_BORDER), prefix);
        if (s->is_now) {
            draw_text(y, x, in.x + in.w - x, sel ? attr : draw_attr(ROLE_OK),
                      draw_utf8 ? "\u25b6 now (you are here)" : "> now (you are here)");
            continue;
        }
        const char *mark = s->is_current ? (draw_utf8 ? "\u25cf " : "* ") : "";
        x += draw_text(y, x, in.x + in.w - x, sel ? attr : draw_attr(ROLE_OK), mark);
        char label[96], age[16], size[16];
        snprintf(label, sizeof(label), "%s%s", s->label, s->is_auto ? " (auto)" : "");
        fmt_age(age, sizeof(age), s->created ? (int64_t)(now - s->created) : 0);
        fmt_bytes(size, sizeof(size), s->memory_bytes + s->state_bytes + s->disk_bytes);
        char tail[48];
        snprintf(tail, sizeof(tail), " %4s %6s", s->created ? age : "-", size);
        int tailw = (int)strlen(tail);
        int labelw = in.x + in.w - x - tailw;
        if (labelw < 4) { /* deep trees on narrow panels: the label matters most */
            draw_text(y, x, in.x + in.w - x, attr, label);
            continue;
        }
        draw_textf(y, x, labelw, attr | (s->is_auto ? draw_attr(ROLE_DIM) : 0), "%-*s", labelw,
                   label);
        draw_text(y, x + labelw, tailw, attr, tail);
    }
    if (!detail)
        return;
    const struct snap_row *s = &t->rows[d->snap_cursor];
    int y = in.y + in.h - 1;
    if (s->is_now) {
        draw_text(y, in.x, in.w, draw_attr(ROLE_DIM), "t takes a snapshot of now");
        return;
    }
    char need[16], mem[16], disk[16];
    fmt_bytes(need, sizeof(need), s->delete_needs_bytes);
    fmt_bytes(mem, sizeof(mem), s->memory_bytes);
    fmt_bytes(disk, sizeof(disk), s->disk_bytes);
    draw_textf(y, in.x, in.w, draw_attr(ROLE_DIM), "delete %s needs %s (%s%s%s, %s RAM, %s disk)",
               s->label, need, s->vm_state[0] ? s->vm_state : "?", s->quiesced ? ", " : "",
               s->quiesced ? s->quiesced : "", mem, disk);
}

static bool key(struct dash *d, int k)
{
    struct dash_vm *v = dash_selected(d);
    if (!v || !v->snaps_ok || v->snaps.n == 0)
        return false;
    switch (k) {
    case KEY_UP:
    case 'k':
        if (d->snap_cursor > 0)
            d->snap_cursor--;
        return true;
    case KEY_DOWN:
    case 'j':
        if (d->snap_cursor + 1 < v->snaps.n)
            d->snap_cursor++;
        return true;
    case KEY_HOME:
        d->snap_cursor = 0;
        return true;
    case KEY_END:
        d->snap_cursor = v->snaps.n - 1;
        return true;
    }
    return false;
}

const struct panel panel_snapshots = {"Snapshots", true, draw, key};
