/* Figure histories for sparklines (see history.h). */
#include "ui/history.h"

void history_push(struct history *h, double value)
{
    h->v[h->head] = value;
    h->head = (h->head + 1) % HISTORY_LEN;
    if (h->n < HISTORY_LEN)
        h->n++;
}

double history_get(const struct history *h, size_t i)
{
    if (i >= h->n)
        return 0;
    return h->v[(h->head + HISTORY_LEN - 1 - i) % HISTORY_LEN];
}

double history_max(const struct history *h, size_t w)
{
    size_t have = h->n < w ? h->n : w;
    double max = 0;
    for (size_t i = 0; i < have; i++) {
        double v = history_get(h, i);
        if (v > max)
            max = v;
    }
    return max;
}

size_t history_step(size_t w)
{
    const size_t window = 120; /* seconds at one sample per second */
    return w == 0 ? 1 : (window + w - 1) / w;
}

double history_levels(const struct history *h, int *levels, size_t w, size_t step)
{
    if (step == 0)
        step = 1;
    double max = history_max(h, w * step);
    for (size_t c = 0; c < w; c++) {
        size_t first = (w - 1 - c) * step; /* age of the newest sample in column c */
        if (first >= h->n) {
            levels[c] = -1;
            continue;
        }
        double v = 0;
        for (size_t a = first; a < first + step && a < h->n; a++) {
            double x = history_get(h, a);
            if (x > v)
                v = x;
        }
        if (v <= 0 || max <= 0) {
            levels[c] = 0;
        } else {
            int l = (int)(v / max * 8.0 + 0.5);
            levels[c] = l < 1 ? 1 : l > 8 ? 8 : l;
        }
    }
    return max;
}
