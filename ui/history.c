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

double history_levels(const struct history *h, int *levels, size_t w)
{
    size_t have = h->n < w ? h->n : w;
    double max = history_max(h, w);
    for (size_t c = 0; c < w; c++) {
        size_t age = w - 1 - c; /* column c shows the sample AGE refreshes old */
        if (age >= have) {
            levels[c] = -1;
            continue;
        }
        double v = history_get(h, age);
        if (v <= 0 || max <= 0)
            levels[c] = 0;
        else {
            int l = (int)(v / max * 8.0 + 0.5);
            levels[c] = l < 1 ? 1 : l > 8 ? 8 : l;
        }
    }
    return max;
}
