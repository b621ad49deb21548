/* Snapshot tree rows (see snaptree.h). Nodes come as a flat list with parent ids; we sort
 * them, link children to parents and walk depth-first, recording for every row which ancestor
 * levels still have siblings to come - that is all a drawing needs. A node whose parent is
 * missing from the list is treated as a root rather than dropped, so nothing is hidden. */
#include "ui/snaptree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    struct snap_row row;
    char parent[32];
    size_t *kids;
    size_t nkids;
    bool emitted;
};

time_t snaptree_parse_time(const char *iso)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!iso || !strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    return timegm(&tm);
}

static void copy_str(char *dst, size_t len, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s && json_is_integer(v)) { /* ids should be strings; accept numbers too */
        snprintf(dst, len, "%lld", (long long)json_integer_value(v));
        return;
    }
    snprintf(dst, len, "%s", s ? s : "");
}

static uint64_t get_u64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* Older first; ties by numeric id, then by id text. */
static int node_order(const struct node *a, const struct node *b)
{
    if (a->row.created != b->row.created)
        return a->row.created < b->row.created ? -1 : 1;
    long ia = strtol(a->row.id, NULL, 10), ib = strtol(b->row.id, NULL, 10);
    if (ia != ib)
        return ia < ib ? -1 : 1;
    return strcmp(a->row.id, b->row.id);
}

static struct node *sort_nodes;
static int kid_cmp(const void *a, const void *b)
{
    return node_order(&sort_nodes[*(const size_t *)a], &sort_nodes[*(const size_t *)b]);
}

struct walk {
    struct node *nodes;
    struct snap_tree *out;
    bool now_placed;
};

static void emit(struct walk *w, const struct snap_row *row, int depth, bool last, const bool *more)
{
    struct snap_row *r = &w->out->rows[w->out->n++];
    *r = *row;
    r->depth = depth;
    r->last = last;
    memcpy(r->more, more, sizeof(r->more));
}

static void walk_node(struct walk *w, size_t i, int depth, bool last, bool *more)
{
    struct node *nd = &w->nodes[i];
    nd->emitted = true;
    emit(w, &nd->row, depth, last, more);
    int d = depth < SNAPTREE_DEPTH_MAX - 1 ? depth : SNAPTREE_DEPTH_MAX - 1;
    bool saved = more[d];
    more[d] = !last;
    size_t nkids = nd->nkids + (nd->row.is_current ? 1 : 0);
    for (size_t k = 0; k < nd->nkids; k++) {
        if (!w->nodes[nd->kids[k]].emitted) /* a parent cycle: each node is drawn once */
            walk_node(w, nd->kids[k], depth + 1, k + 1 == nkids, more);
    }
    if (nd->row.is_current) {
        struct snap_row now;
        memset(&now, 0, sizeof(now));
        now.is_now = true;
        snprintf(now.label, sizeof(now.label), "now");
        emit(w, &now, depth + 1, true, more);
        w->now_placed = true;
    }
    more[d] = saved;
}

int snaptree_build(json_t *list, struct snap_tree *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    json_t *arr = json_object_get(list, "snapshots");
    if (!json_is_object(list) || !json_is_array(arr)) {
        snprintf(err, errlen, "no \"snapshots\" array in the snapshot list");
        return -1;
    }
    copy_str(out->current, sizeof(out->current), json_object_get(list, "current"));
    size_t n = json_array_size(arr);
    struct node *nodes = calloc(n ? n : 1, sizeof(*nodes));
    out->rows = calloc(n + 1, sizeof(*out->rows));
    if (!nodes || !out->rows) {
        free(nodes);
        snaptree_free(out);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        struct snap_row *r = &nodes[i].row;
        if (!json_is_object(o)) {
            snprintf(err, errlen, "snapshot %zu is not an object", i);
            goto fail;
        }
        copy_str(r->id, sizeof(r->id), json_object_get(o, "id"));
        copy_str(r->label, sizeof(r->label), json_object_get(o, "label"));
        copy_str(r->vm_state, sizeof(r->vm_state), json_object_get(o, "vm_state"));
        const char *q = json_string_value(json_object_get(o, "quiesced"));
        r->quiesced = !q ? NULL : strcmp(q, "quiesced") == 0 ? "quiesced" : "not quiesced";
        copy_str(nodes[i].parent, sizeof(nodes[i].parent), json_object_get(o, "parent"));
        r->created = snaptree_parse_time(json_string_value(json_object_get(o, "created")));
        r->is_auto = json_is_true(json_object_get(o, "auto"));
        r->memory_bytes = get_u64(o, "memory_bytes");
        r->state_bytes = get_u64(o, "state_bytes");
        r->disk_bytes = get_u64(o, "disk_bytes"); /* the node's frozen disk image */
        r->pages = get_u64(o, "pages");
        r->delete_needs_bytes = get_u64(o, "delete_needs_bytes");
        r->is_current = out->current[0] && strcmp(r->id, out->current) == 0;
        if (!r->id[0]) {
            snprintf(err, errlen, "snapshot %zu has no id", i);
            goto fail;
        }
    }
    /* Link children; a missing parent (or a cycle's entry) makes a root. */
    size_t *roots = calloc(n ? n : 1, sizeof(*roots));
    size_t nroots = 0;
    for (size_t i = 0; i < n; i++) {
        size_t p = n;
        for (size_t j = 0; nodes[i].parent[0] && j < n; j++) {
            if (j != i && strcmp(nodes[j].row.id, nodes[i].parent) == 0) {
                p = j;
                break;
            }
        }
        if (p == n) {
            roots[nroots++] = i;
            continue;
        }
        size_t *k = realloc(nodes[p].kids, (nodes[p].nkids + 1) * sizeof(*k));
        if (!k) {
            free(roots);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        nodes[p].kids = k;
        k[nodes[p].nkids++] = i;
        nodes[p].row.children++;
    }
    sort_nodes = nodes;
    if (nroots > 1) /* qsort(NULL, 0) is undefined */
        qsort(roots, nroots, sizeof(*roots), kid_cmp);
    for (size_t i = 0; i < n; i++)
        if (nodes[i].nkids > 1)
            qsort(nodes[i].kids, nodes[i].nkids, sizeof(size_t), kid_cmp);

    struct walk w = {.nodes = nodes, .out = out};
    bool more[SNAPTREE_DEPTH_MAX] = {false};
    bool now_is_root = !out->current[0];
    for (size_t i = 0; i < nroots; i++)
        walk_node(&w, roots[i], 0, i + 1 == nroots && !now_is_root, more);
    /* Nodes only reachable through a parent cycle never got a row: list them as roots. */
    for (size_t i = 0; i < n; i++) {
        if (!nodes[i].emitted)
            walk_node(&w, i, 0, false, more);
    }
    if (!w.now_placed && n > 0) {
        struct snap_row now;
        memset(&now, 0, sizeof(now));
        now.is_now = true;
        snprintf(now.label, sizeof(now.label), "now");
        emit(&w, &now, 0, true, more);
    }
    free(roots);
    for (size_t i = 0; i < n; i++)
        free(nodes[i].kids);
    free(nodes);
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free(nodes[i].kids);
    free(nodes);
    snaptree_free(out);
    return -1;
}

void snaptree_free(struct snap_tree *t)
{
    free(t->rows);
    t->rows = NULL;
    t->n = 0;
}

int snaptree_prefix(const struct snap_row *row, bool utf8, char *buf, size_t len)
{
    const char *pipe = utf8 ? "\u2502 " : "| ";
    const char *tee = utf8 ? "\u251c\u2500" : "+-";
    const char *elbow = utf8 ? "\u2514\u2500" : "`-";
    size_t used = 0;
    int cols = 0;
    buf[0] = '\0';
    int depth = row->depth < SNAPTREE_DEPTH_MAX ? row->depth : SNAPTREE_DEPTH_MAX;
    /* Roots have no connector; level i (1..depth-1) draws the line of ancestor depth i. */
    for (int i = 1; i < depth; i++) {
        used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s",
                                 row->more[i] ? pipe : "  ");
        cols += 2;
    }
    if (depth > 0) {
        used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s",
                                 row->last ? elbow : tee);
        cols += 2;
    }
    if (used >= len && len)
        buf[len - 1] = '\0';
    return cols;
}
