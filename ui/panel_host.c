/* The Host panel: what `free` calls used next to MemFree, and the figures `free` hides
 * (Mapped, Shmem, Cached, Dirty, Writeback - seed 000's lesson: MAP_SHARED guest RAM sits in
 * buff/cache, not in "used"), then the sum of the VMs' configured vs allocated memory and the
 * overcommit ratio (configured RAM of running VMs over the host's RAM), what they reserved and
 * what their balloons hold. */
#include <curses.h>
#include <stdio.h>

#include "ui/dash.h"

static void pair(int y, int x, int w, const char *label, uint64_t v, int role)
{
    char b[16];
    fmt_bytes(b, sizeof(b), v);
    int lw = w - 8;
    if (lw < 4)
        lw = 4;
    draw_text(y, x, lw, draw_attr(ROLE_TITLE), label);
    draw_textf(y, x + lw, w - lw, draw_attr(role), "%7s", b);
}

static void draw(struct dash *d, const struct rect *r, bool focused)
{
    draw_box(r, d->model.boxed ? "Host (outside the KVM box)" : "Host", focused);
    struct rect in = draw_inner(r);
    if (in.h < 1)
        return;
    if (!d->model.host_ok) {
        draw_text(in.y, in.x, in.w, draw_attr(ROLE_ERROR), "cannot read /proc/meminfo");
        return;
    }
    const struct memtruth_host *h = &d->model.host;
    struct {
        const char *label;
        uint64_t v;
        int role;
    } items[] = {
        {"free: used", h->free_used, ROLE_WARN}, {"MemFree", h->free, ROLE_OK},
        {"Mapped", h->mapped, ROLE_RESIDENT},    {"Shmem", h->shmem, ROLE_RESIDENT},
        {"Cached", h->cached, ROLE_NORMAL},      {"Dirty", h->dirty, ROLE_DIRTY},
        {"Writeback", h->writeback, ROLE_DIRTY}, {"MemTotal", h->total, ROLE_NORMAL},
    };
    const int n = (int)(sizeof(items) / sizeof(items[0]));
    int cols = in.w >= 60 ? 3 : 2;
    if (in.w < 36)
        cols = 1;
    int colw = in.w / cols;
    /* the last line(s) are for the VMs' totals: two when the grid leaves room */
    int needed = (n + cols - 1) / cols;
    int vm_lines = in.h - needed >= 2 ? 2 : 1;
    int grid_rows = in.h - vm_lines;
    for (int i = 0; i < n; i++) {
        int row = i / cols, col = i % cols;
        if (row >= grid_rows)
            break;
        pair(in.y + row, in.x + col * colw, colw - 1, items[i].label, items[i].v, items[i].role);
    }
    char conf[16], alloc[16], resv[16], ball[16];
    fmt_bytes(conf, sizeof(conf), d->model.sum_configured);
    fmt_bytes(alloc, sizeof(alloc), d->model.sum_allocated);
    fmt_bytes(resv, sizeof(resv), d->model.sum_reserved);
    fmt_bytes(ball, sizeof(ball), d->model.sum_balloon);
    double ratio = h->total ? (double)d->model.sum_configured / (double)h->total : 0;
    double used = h->total ? (double)d->model.sum_allocated / (double)h->total : 0;
    int y = in.y + in.h - vm_lines;
    if (d->model.boxed && d->model.box_rss) {
        /* The box's QEMU holds the VMs' memory and its own overhead (its kernel, page tables,
         * the VMMs): both are the host's RAM, so both are shown, on the last line. */
        char rss[16], over[16];
        uint64_t vms =
            d->model.sum_allocated < d->model.box_rss ? d->model.sum_allocated : d->model.box_rss;
        fmt_bytes(rss, sizeof(rss), d->model.box_rss);
        fmt_bytes(over, sizeof(over), d->model.box_rss - vms);
        draw_textf(y + vm_lines - 1, in.x, in.w, draw_attr(ROLE_WARN),
                   "KVM box (QEMU) %s = VMs %s + overhead %s", rss, alloc, over);
        if (vm_lines == 2)
            draw_textf(y, in.x, in.w, draw_attr(ratio > 1 ? ROLE_WARN : ROLE_NORMAL),
                       "VMs %s cfg / %s alloc = %.2fx RAM", conf, alloc, ratio);
        return;
    }
    if (vm_lines == 2) {
        draw_textf(y, in.x, in.w, 0, "%zu VM%s up: configured %s, allocated %s", d->model.holding,
                   d->model.holding == 1 ? "" : "s", conf, alloc);
        draw_textf(y + 1, in.x, in.w, draw_attr(ratio > 1 ? ROLE_WARN : ROLE_NORMAL),
                   "overcommit %.2fx of RAM (allocated %.2fx), reserved %s, balloons %s", ratio,
                   used, resv, ball);
    } else {
        draw_textf(y, in.x, in.w, draw_attr(ratio > 1 ? ROLE_WARN : ROLE_NORMAL),
                   "VMs %s cfg / %s alloc = %.2fx RAM, resv %s, balloons %s", conf, alloc, ratio,
                   resv, ball);
    }
}

const struct panel panel_host = {"Host", false, draw, NULL};
