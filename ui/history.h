/* Fixed-size histories of one figure sampled once per refresh, for sparklines. The one idea:
 * a sparkline maps the last W samples onto 8 levels between 0 and the window's maximum, so a
 * flat line means "nothing changes" whatever the magnitude, and the figure beside it gives the
 * magnitude. No curses here: drawing turns levels into glyphs. */
#ifndef VMWS_UI_HISTORY_H
#define VMWS_UI_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define HISTORY_LEN 600 /* 10 minutes at 1 Hz */

struct history {
    double v[HISTORY_LEN];
    size_t head; /* next slot */
    size_t n;    /* samples stored */
};

void history_push(struct history *h, double value);
/* The I-th most recent sample (0 = newest); 0 if there are fewer. */
double history_get(const struct history *h, size_t i);
/* The largest of the last W samples. */
double history_max(const struct history *h, size_t w);
/* Fills LEVELS[0..W) (oldest to newest, right-aligned) with 0..8 (0 = no sample or zero,
 * 1..8 = height); each column is the largest of STEP consecutive samples. Returns the
 * window's maximum. Columns with no samples yet get -1. */
double history_levels(const struct history *h, int *levels, size_t w, size_t step);
/* Samples per column so that W columns span at least the last two minutes. */
size_t history_step(size_t w);

#endif
