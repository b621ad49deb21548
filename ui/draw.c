/* Clipped drawing, boxes, bars, sparklines, colours (see draw.h). */
#include "ui/draw.h"

#include <curses.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

bool draw_utf8;
bool draw_color;

static int role_attr[ROLE_COUNT];

void draw_setup(void)
{
    draw_color = has_colors() && !getenv("NO_COLOR");
    /* monochrome: bold, reverse and underline carry the meaning */
    int mono[ROLE_COUNT] = {
        [ROLE_TITLE] = A_BOLD,      [ROLE_FOCUS] = A_REVERSE | A_BOLD,
        [ROLE_DIM] = A_DIM,         [ROLE_SELECTED] = A_REVERSE,
        [ROLE_WARN] = A_BOLD,       [ROLE_ERROR] = A_BOLD | A_REVERSE,
        [ROLE_KEY] = A_REVERSE,     [ROLE_ALLOCATED] = A_BOLD,
        [ROLE_DIRTY] = A_UNDERLINE, [ROLE_SWAP] = A_BOLD,
    };
    memcpy(role_attr, mono, sizeof(role_attr));
    if (!draw_color)
        return;
    start_color();
    use_default_colors();
    static const struct {
        enum draw_role role;
        short fg, bg;
        int extra;
    } pairs[] = {
        {ROLE_TITLE, COLOR_CYAN, -1, A_BOLD},
        {ROLE_FOCUS, COLOR_BLACK, COLOR_CYAN, A_BOLD},
        {ROLE_BORDER, COLOR_BLUE, -1, 0},
        {ROLE_DIM, COLOR_WHITE, -1, A_DIM},
        {ROLE_SELECTED, COLOR_BLACK, COLOR_CYAN, 0},
        {ROLE_OK, COLOR_GREEN, -1, A_BOLD},
        {ROLE_WARN, COLOR_YELLOW, -1, A_BOLD},
        {ROLE_ERROR, COLOR_WHITE, COLOR_RED, A_BOLD},
        {ROLE_KEY, COLOR_BLACK, COLOR_CYAN, 0},
        {ROLE_APPARENT, COLOR_BLUE, -1, A_BOLD},
        {ROLE_ALLOCATED, COLOR_GREEN, -1, A_BOLD},
        {ROLE_RESIDENT, COLOR_CYAN, -1, A_BOLD},
        {ROLE_DIRTY, COLOR_YELLOW, -1, A_BOLD},
        {ROLE_SWAP, COLOR_RED, -1, A_BOLD},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        init_pair((short)(i + 1), pairs[i].fg, pairs[i].bg);
        role_attr[pairs[i].role] = (int)COLOR_PAIR(i + 1) | pairs[i].extra;
    }
}

int draw_attr(enum draw_role role)
{
    return role_attr[role];
}

int draw_width(const char *s)
{
    if (!draw_utf8)
        return (int)strlen(s);
    mbstate_t ps;
    memset(&ps, 0, sizeof(ps));
    int cols = 0;
    wchar_t wc;
    size_t n;
    while (*s && (n = mbrtowc(&wc, s, strlen(s), &ps)) > 0 && n < (size_t)-2) {
        int w = wcwidth(wc);
        cols += w > 0 ? w : 0;
        s += n;
    }
    return cols;
}

int draw_text(int y, int x, int w, int attr, const char *s)
{
    if (w <= 0 || y < 0 || y >= LINES || x >= COLS)
        return 0;
    if (x + w > COLS)
        w = COLS - x;
    attron(attr);
    int cols = 0;
    if (draw_utf8) {
        mbstate_t ps;
        memset(&ps, 0, sizeof(ps));
        wchar_t wc;
        size_t n;
        move(y, x);
        while (*s && (n = mbrtowc(&wc, s, strlen(s), &ps)) > 0 && n < (size_t)-2) {
            int cw = wcwidth(wc);
            if (cw < 0)
                cw = 0;
            if (cols + cw > w)
                break;
            wchar_t one[2] = {wc, 0};
            addnwstr(one, 1);
            cols += cw;
            s += n;
        }
    } else {
        for (; *s && cols < w; s++, cols++) {
            unsigned char ch = (unsigned char)*s;
            mvaddch(y, x + cols, ch >= 0x20 && ch < 0x7f ? ch : '?');
        }
    }
    attroff(attr);
    return cols;
}

int draw_textf(int y, int x, int w, int attr, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return draw_text(y, x, w, attr, buf);
}

void draw_blank(int y, int x, int w)
{
    if (y < 0 || y >= LINES)
        return;
    for (int i = 0; i < w && x + i < COLS; i++)
        mvaddch(y, x + i, ' ');
}

struct rect draw_inner(const struct rect *r)
{
    struct rect in = {r->y + 1, r->x + 1, r->h - 2, r->w - 2};
    if (in.h < 0)
        in.h = 0;
    if (in.w < 0)
        in.w = 0;
    return in;
}

void draw_box(const struct rect *r, const char *title, bool focused)
{
    if (r->h < 2 || r->w < 2)
        return;
    int battr = focused ? draw_attr(ROLE_TITLE) : draw_attr(ROLE_BORDER);
    for (int y = r->y + 1; y < r->y + r->h - 1; y++)
        draw_blank(y, r->x + 1, r->w - 2);
    /* Explicit characters rather than the terminal's alternate charset: the same glyphs on
     * every terminal, and plain ASCII when the locale is not UTF-8. */
    const char *h = draw_utf8 ? "\u2500" : "-", *v = draw_utf8 ? "\u2502" : "|";
    const char *tl = draw_utf8 ? "\u250c" : "+", *tr = draw_utf8 ? "\u2510" : "+";
    const char *bl = draw_utf8 ? "\u2514" : "+", *br = draw_utf8 ? "\u2518" : "+";
    int right = r->x + r->w - 1, bottom = r->y + r->h - 1;
    for (int x = r->x + 1; x < right; x++) {
        draw_text(r->y, x, 1, battr, h);
        draw_text(bottom, x, 1, battr, h);
    }
    for (int y = r->y + 1; y < bottom; y++) {
        draw_text(y, r->x, 1, battr, v);
        draw_text(y, right, 1, battr, v);
    }
    draw_text(r->y, r->x, 1, battr, tl);
    draw_text(r->y, right, 1, battr, tr);
    draw_text(bottom, r->x, 1, battr, bl);
    draw_text(bottom, right, 1, battr, br);
    if (title && r->w > 6) {
        char t[128];
        snprintf(t, sizeof(t), " %s ", title);
        draw_text(r->y, r->x + 2, r->w - 4, focused ? draw_attr(ROLE_FOCUS) : draw_attr(ROLE_TITLE),
                  t);
    }
}

void draw_bar(int y, int x, int w, double frac, int attr)
{
    static const char *const eighths[] = {"",       "\u258f", "\u258e", "\u258d", "\u258c",
                                          "\u258b", "\u258a", "\u2589", "\u2588"};
    if (w <= 0)
        return;
    if (frac < 0)
        frac = 0;
    if (frac > 1)
        frac = 1;
    int cells8 = (int)(frac * w * 8 + 0.5);
    if (frac > 0 && cells8 == 0)
        cells8 = 1; /* anything at all shows */
    int full = cells8 / 8, part = cells8 % 8;
    for (int i = 0; i < w; i++) {
        if (i < full)
            draw_text(y, x + i, 1, attr, draw_utf8 ? eighths[8] : "#");
        else if (i == full && part)
            draw_text(y, x + i, 1, attr, draw_utf8 ? eighths[part] : "#");
        else
            draw_text(y, x + i, 1, draw_attr(ROLE_DIM), draw_utf8 ? "\u00b7" : ".");
    }
}

void draw_sparkline(int y, int x, int w, const struct history *h, int attr)
{
    static const char *const blocks[] = {"\u2581", "\u2581", "\u2582", "\u2583", "\u2584",
                                         "\u2585", "\u2586", "\u2587", "\u2588"};
    static const char ascii[] = "_.,-:=+*#";
    if (w <= 0)
        return;
    int *lv = calloc((size_t)w, sizeof(int));
    if (!lv)
        return;
    history_levels(h, lv, (size_t)w, history_step((size_t)w));
    for (int i = 0; i < w; i++) {
        if (lv[i] < 0) {
            draw_text(y, x + i, 1, 0, " ");
        } else if (draw_utf8) {
            draw_text(y, x + i, 1, lv[i] ? attr : draw_attr(ROLE_DIM), blocks[lv[i]]);
        } else {
            char s[2] = {ascii[lv[i]], 0};
            draw_text(y, x + i, 1, lv[i] ? attr : draw_attr(ROLE_DIM), s);
        }
    }
    free(lv);
}

void fmt_bytes(char *out, size_t len, uint64_t b)
{
    static const char units[] = "KMGTP";
    if (b < 1024) {
        snprintf(out, len, "%" PRIu64 "B", b);
        return;
    }
    double v = (double)b / 1024;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, len, v >= 100 ? "%.0f%c" : "%.1f%c", v, units[u]);
}

void fmt_age(char *out, size_t len, int64_t s)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(out, len, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, len, "%" PRId64 "m", s / 60);
    else if (s < 86400)
        snprintf(out, len, "%" PRId64 "h", s / 3600);
    else
        snprintf(out, len, "%" PRId64 "d", s / 86400);
}
