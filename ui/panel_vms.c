/* The VMs panel: one row per VM - name, state, vCPUs, configured memory, uptime, the VNC
 * address when the VMM reports one and, where the panel is wide enough, the network's receive
 * and transmit rates; the selected VM's forwards on a line of their own. Up/Down (or j/k)
 * select the VM the other panels show. */
#include <curses.h>
#include <stdio.h>
#include <string.h>

#include "ui/dash.h"

static int state_role(const char *s)
{
    if (strcmp(s, "running") == 0)
        return ROLE_OK;
    if (strcmp(s, "paused") == 0 || strcmp(s, "suspended") == 0 || strcmp(s, "starting") == 0)
        return ROLE_WARN;
    if (strcmp(s, "off") == 0)
        return ROLE_DIM;
    return ROLE_ERROR; /* crashed, bad-config, unknown */
}

static void fmt_uptime(char *out, size_t len, int64_t ms)
{
    if (ms < 0) {
        snprintf(out, len, "-");
        return;
    }
    int64_t s = ms / 1000;
    if (s < 3600)
        snprintf(out, len, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(out, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
    else
        snprintf(out, len, "%lldd%02lldh", (long long)(s / 86400), (long long)(s / 3600 % 24));
}

/* "1.2M/34K": received and sent per second; "-" without a card. */
static void fmt_rates(char *out, size_t len, const struct dash_vm *v)
{
    char rx[16], tx[16];
    if (!v->net) {
        snprintf(out, len, "-");
        return;
    }
    fmt_bytes(rx, sizeof(rx), (uint64_t)v->rx_rate);
    fmt_bytes(tx, sizeof(tx), (uint64_t)v->tx_rate);
    snprintf(out, len, "%s/%s", rx, tx);
}

static void draw(struct dash *d, const struct rect *r, bool focused)
{
    char title[64];
    snprintf(title, sizeof(title), "VMs (%zu)", d->model.n);
    draw_box(r, title, focused);
    struct rect in = draw_inner(r);
    if (in.h < 1)
        return;
    /* columns: name grows; the rest fixed; VNC only when there is room */
    bool vnc_col = in.w >= 58;
    bool net_col = in.w >= 74;
    int fixed = 1 + 9 + 1 + 3 + 1 + 6 + 1 + 7 + (vnc_col ? 1 + 21 : 0) + (net_col ? 1 + 13 : 0);
    int namew = in.w - fixed;
    if (namew > 20)
        namew = 20;
    if (namew < 4)
        namew = 4;
    char line[256];
    snprintf(line, sizeof(line), "%-*s %-9s %3s %6s %7s%s%s", namew, "NAME", "STATE", "CPU",
             "MEMORY", "UPTIME", vnc_col ? " VNC                  " : "",
             net_col ? " NET RX/TX /s" : "");
    draw_text(in.y, in.x, in.w, draw_attr(ROLE_TITLE), line);
    int rows = in.h - 1;
    if (d->model.n == 0) {
        draw_text(in.y + 1, in.x, in.w, draw_attr(ROLE_DIM), "no VMs yet: press n to create one");
        return;
    }
    /* A note line for the selected VM: why it crashed or has a bad config, else its VNC
     * address (when the column does not fit) and password. */
    struct dash_vm *sel = dash_selected(d);
    bool detail_line = sel && sel->detail[0] && rows >= 3;
    bool vnc_line = !detail_line && sel && sel->vnc[0] && (!vnc_col || sel->vnc_password[0]) &&
                    rows >= 3;
    if (vnc_line || detail_line)
        rows--;
    /* And its network: forwards and rates, when there is a row to spare. */
    bool net_line = sel && sel->net && rows >= 3;
    if (net_line)
        rows--;
    if (rows < 1)
        return;
    if (d->vm_cursor < d->vm_top)
        d->vm_top = d->vm_cursor;
    if (d->vm_cursor >= d->vm_top + (size_t)rows)
        d->vm_top = d->vm_cursor - (size_t)rows + 1;
    for (int i = 0; i < rows && d->vm_top + (size_t)i < d->model.n; i++) {
        size_t idx = d->vm_top + (size_t)i;
        struct dash_vm *v = d->model.vms[idx];
        char mem[16], up[40];
        fmt_bytes(mem, sizeof(mem), v->memory);
        fmt_uptime(up, sizeof(up), v->uptime_ms);
        int y = in.y + 1 + i;
        bool is_sel = idx == d->vm_cursor;
        int attr = is_sel ? draw_attr(focused ? ROLE_SELECTED : ROLE_TITLE) : 0;
        if (is_sel)
            attron(attr);
        draw_blank(y, in.x, in.w);
        if (is_sel)
            attroff(attr);
        int x = in.x;
        snprintf(line, sizeof(line), "%s%-*.*s", is_sel ? ">" : " ", namew - 1, namew - 1, v->name);
        x += draw_text(y, x, in.w, attr, line);
        x += draw_text(y, x, in.x + in.w - x, attr, " ");
        snprintf(line, sizeof(line), "%-9.9s", v->state);
        x +=
            draw_text(y, x, in.x + in.w - x, is_sel ? attr : draw_attr(state_role(v->state)), line);
        snprintf(line, sizeof(line), " %3u %6s %7s", v->cpus, mem, up);
        x += draw_text(y, x, in.x + in.w - x, attr, line);
        if (vnc_col) {
            snprintf(line, sizeof(line), " %-21.21s", v->vnc[0] ? v->vnc : "-");
            x += draw_text(y, x, in.x + in.w - x, attr, line);
        }
        if (net_col) {
            char rates[32];
            fmt_rates(rates, sizeof(rates), v);
            snprintf(line, sizeof(line), " %-13.13s", rates);
            draw_text(y, x, in.x + in.w - x, attr, line);
        }
    }
    if (net_line) {
        char rates[32];
        fmt_rates(rates, sizeof(rates), sel);
        draw_textf(in.y + in.h - 1 - (detail_line || vnc_line), in.x, in.w, draw_attr(ROLE_DIM),
                   "net %s: rx/tx %s per s, forwards %s; guest OS %s", sel->name, rates,
                   sel->forwards[0] ? sel->forwards : "none",
                   sel->guest_os[0] ? sel->guest_os : "unknown (no guest agent)");
    }
    if (detail_line)
        draw_textf(in.y + in.h - 1, in.x, in.w, draw_attr(ROLE_ERROR), "%s: %s", sel->name,
                   sel->detail);
    else if (vnc_line)
        draw_textf(in.y + in.h - 1, in.x, in.w, draw_attr(ROLE_DIM), "VNC %s: %s%s%s", sel->name,
                   sel->vnc, sel->vnc_password[0] ? ", password " : "", sel->vnc_password);
}

static bool key(struct dash *d, int k)
{
    if (d->model.n == 0)
        return false;
    switch (k) {
    case KEY_UP:
    case 'k':
        if (d->vm_cursor > 0)
            dash_select(d, d->vm_cursor - 1);
        return true;
    case KEY_DOWN:
    case 'j':
        if (d->vm_cursor + 1 < d->model.n)
            dash_select(d, d->vm_cursor + 1);
        return true;
    case KEY_HOME:
        dash_select(d, 0);
        return true;
    case KEY_END:
        dash_select(d, d->model.n - 1);
        return true;
    }
    return false;
}

const struct panel panel_vms = {"VMs", true, draw, key};
