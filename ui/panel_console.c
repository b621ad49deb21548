/* The Console panel: the selected VM's serial console with scrollback. When focused, keys go
 * to the guest (Enter as CR, Backspace as DEL, arrows as ANSI sequences), except Tab and
 * Ctrl-] which leave the console, and PgUp/PgDn which scroll back. */
#include <curses.h>
#include <stdio.h>
#include <string.h>

#include "ui/dash.h"

static void draw(struct dash *d, const struct rect *r, bool focused)
{
    struct dash_vm *v = dash_selected(d);
    struct conview *c = &d->console;
    char title[128];
    snprintf(title, sizeof(title), "Console%s%s%s%s", v ? ": " : "", v ? v->name : "",
             focused ? " - typing goes to the guest, Tab leaves" : "",
             c->scroll ? " [scrolled back]" : "");
    draw_box(r, title, focused);
    struct rect in = draw_inner(r);
    if (!v || in.h < 1)
        return;
    int rows = in.h;
    bool note = !c->connected;
    if (note)
        rows--;
    /* the last ROWS lines, minus what the user scrolled back */
    size_t total = c->count;
    /* a trailing empty line is where the cursor is: show it only when focused */
    if (total > 1 && !focused && conview_line(c, total - 1)[0] == '\0')
        total--;
    int maxscroll = (int)total > rows ? (int)total - rows : 0;
    if (c->scroll > maxscroll)
        c->scroll = maxscroll;
    size_t end = total - (size_t)c->scroll;
    size_t start = end > (size_t)rows ? end - (size_t)rows : 0;
    for (size_t i = start; i < end; i++)
        draw_text(in.y + (int)(i - start), in.x, in.w, 0, conview_line(c, i));
    if (focused && c->scroll == 0 && end > start) { /* a block cursor after the last line */
        const char *last = conview_line(c, end - 1);
        int cx = draw_width(last);
        if (c->col < cx)
            cx = c->col;
        if (cx < in.w)
            draw_text(in.y + (int)(end - 1 - start), in.x + cx, 1, A_REVERSE, " ");
    }
    if (note)
        draw_text(in.y + in.h - 1, in.x, in.w, draw_attr(ROLE_DIM),
                  model_vm_up(v)                       ? "[console not connected - retrying]"
                  : strcmp(v->state, "suspended") == 0 ? "[VM suspended - s resumes it]"
                                                       : "[VM not running - Enter starts it]");
}

static bool key(struct dash *d, int k)
{
    struct conview *c = &d->console;
    char buf[8];
    size_t n = 0;
    switch (k) {
    case KEY_PPAGE:
        c->scroll += 10;
        return true;
    case KEY_NPAGE:
        c->scroll = c->scroll > 10 ? c->scroll - 10 : 0;
        return true;
    case KEY_ENTER:
    case '\n':
    case '\r':
        buf[n++] = '\r';
        break;
    case KEY_BACKSPACE:
    case 127:
    case 8:
        buf[n++] = 0x7f;
        break;
    case KEY_UP:
        n = (size_t)snprintf(buf, sizeof(buf), "\x1b[A");
        break;
    case KEY_DOWN:
        n = (size_t)snprintf(buf, sizeof(buf), "\x1b[B");
        break;
    case KEY_RIGHT:
        n = (size_t)snprintf(buf, sizeof(buf), "\x1b[C");
        break;
    case KEY_LEFT:
        n = (size_t)snprintf(buf, sizeof(buf), "\x1b[D");
        break;
    default:
        if (k >= 0 && k < 256)
            buf[n++] = (char)k;
        else
            return false;
    }
    c->scroll = 0;
    if (conview_send(c, buf, n) < 0)
        dash_message(d, ROLE_ERROR, "console: not connected to %s", c->vm[0] ? c->vm : "a VM");
    return true;
}

const struct panel panel_console = {"Console", true, draw, key};
