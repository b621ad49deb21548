/* Drawing helpers shared by the panels: clipped UTF-8 text, boxes with titles, bars and
 * sparklines, colour roles with a monochrome fallback, and byte formatting. The one idea:
 * every write is clipped to a rectangle in terminal columns, so a panel can never draw over
 * its neighbour whatever the terminal size; glyphs fall back to ASCII when the locale is not
 * UTF-8 (or VMWS_ASCII=1). */
#ifndef VMWS_UI_DRAW_H
#define VMWS_UI_DRAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ui/history.h"

struct rect {
    int y, x, h, w;
};

enum draw_role {
    ROLE_NORMAL,
    ROLE_TITLE,
    ROLE_FOCUS,
    ROLE_BORDER,
    ROLE_DIM,
    ROLE_SELECTED,
    ROLE_OK,
    ROLE_WARN,
    ROLE_ERROR,
    ROLE_KEY,
    ROLE_APPARENT,
    ROLE_ALLOCATED,
    ROLE_RESIDENT,
    ROLE_DIRTY,
    ROLE_SWAP,
    ROLE_COUNT
};

extern bool draw_utf8;  /* box lines, blocks and sparklines in UTF-8 */
extern bool draw_color; /* the terminal has colours and NO_COLOR is not set */

void draw_setup(void); /* after initscr() */
int draw_attr(enum draw_role role);

/* Text at (Y, X) clipped to W columns; returns the columns used. */
int draw_text(int y, int x, int w, int attr, const char *s);
int draw_textf(int y, int x, int w, int attr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Terminal columns S occupies. */
int draw_width(const char *s);
/* Fills W columns with spaces. */
void draw_blank(int y, int x, int w);
/* A box around R with TITLE on its top edge; clears the inside. */
void draw_box(const struct rect *r, const char *title, bool focused);
/* The inside of a box. */
struct rect draw_inner(const struct rect *r);
/* A horizontal bar of W columns filled to FRAC (0..1), eighth-cell precision in UTF-8. */
void draw_bar(int y, int x, int w, double frac, int attr);
/* The last W samples of H as a sparkline. */
void draw_sparkline(int y, int x, int w, const struct history *h, int attr);

/* "1.2G", "130.0M", "512K", "0" */
void fmt_bytes(char *out, size_t len, uint64_t bytes);
/* "3s", "4m", "2h", "5d" */
void fmt_age(char *out, size_t len, int64_t seconds);

#endif
