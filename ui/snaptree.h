/* A VM's snapshot tree, flattened into rows for drawing: built from the JSON that
 * `vmws snapshot list NAME --json` prints. The one idea: each row carries its depth and, per
 * ancestor level, whether a line continues below it, so any front end can draw the tree with
 * UTF-8 box lines or ASCII from the same rows. A virtual "now" row sits under the current node
 * (where the VM's present state descends from), like a "You are here" marker. No curses here. */
#ifndef VMWS_UI_SNAPTREE_H
#define VMWS_UI_SNAPTREE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SNAPTREE_DEPTH_MAX 32

struct snap_row {
    char id[32];
    char label[64];
    char vm_state[16];
    const char *quiesced; /* "quiesced", "not quiesced" or NULL (the take did not say) */
    time_t created;       /* 0 if unknown */
    bool is_auto;         /* kept automatically by a revert */
    bool is_current;
    bool is_now; /* the virtual "now" row, not a snapshot */
    uint64_t memory_bytes, state_bytes, disk_bytes, pages, delete_needs_bytes;
    size_t children;
    int depth;
    bool last; /* last child of its parent */
    /* more[i]: the ancestor at depth i has a later sibling, so a vertical line passes */
    bool more[SNAPTREE_DEPTH_MAX];
};

struct snap_tree {
    struct snap_row *rows;
    size_t n;
    char current[32]; /* "" when none */
};

/* Builds rows from LIST (the object `snapshot list --json` prints). Children are ordered by
 * creation time, then id. Returns 0, or -1 with ERR saying what is malformed. */
int snaptree_build(json_t *list, struct snap_tree *out, char *err, size_t errlen);
void snaptree_free(struct snap_tree *t);

/* The line-drawing prefix of ROW ("│  ├─ " or "|  +- "), written to BUF (NUL-terminated).
 * Returns the prefix's width in terminal columns. */
int snaptree_prefix(const struct snap_row *row, bool utf8, char *buf, size_t len);

/* "ISO-8601 Z" -> time_t; 0 if unparsable. */
time_t snaptree_parse_time(const char *iso);

#endif
