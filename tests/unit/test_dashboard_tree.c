/* Unit tests for the dashboard's pure parts: the snapshot tree rows built from
 * `vmws snapshot list --json` (branches, the current node and its "now" row, orphans and
 * parent cycles never hidden or drawn twice, the UTF-8 and ASCII line prefixes a user sees),
 * the sparkline levels, and the console scrollback's handling of CR/LF, backspace and
 * escape sequences. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ui/conview.h"
#include "ui/history.h"
#include "ui/snaptree.h"

static struct snap_tree build(const char *json_text)
{
    json_error_t je;
    json_t *j = json_loads(json_text, 0, &je);
    ck_assert_msg(j != NULL, "fixture: %s", je.text);
    struct snap_tree t;
    char err[160];
    ck_assert_msg(snaptree_build(j, &t, err, sizeof(err)) == 0, "%s", err);
    json_decref(j);
    return t;
}

/* "prefix label" per row, as the panel would draw them. */
static void render(const struct snap_tree *t, bool utf8, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < t->n; i++) {
        char p[256];
        snaptree_prefix(&t->rows[i], utf8, p, sizeof(p));
        size_t u = strlen(out);
        snprintf(out + u, len - u, "%s%s%s\n", p, t->rows[i].is_current ? "*" : "",
                 t->rows[i].label);
    }
}

#define NODE(id, label, parent, created)                                                           \
    "{\"id\": \"" id "\", \"label\": \"" label "\", \"parent\": " parent                           \
    ", \"created\": \"2026-11-22T02:5" created ":00Z\", \"auto\": false, \"vm_state\": "           \
    "\"running\", \"memory_bytes\": 1048576, \"state_bytes\": 4096, \"pages\": 256, "              \
    "\"delete_needs_bytes\": 2097152}"

START_TEST(test_branches_and_now)
{
    /* 1 -> {2 -> 4, 3 (current)}; 5 is a second root */
    struct snap_tree t = build("{\"name\": \"vm1\", \"current\": \"3\", \"snapshots\": [" NODE(
        "4", "c", "\"2\"",
        "3") "," NODE("1", "base", "null",
                      "0") "," NODE("2", "a", "\"1\"",
                                    "1") "," NODE("3", "b", "\"1\"",
                                                  "2") "," NODE("5", "other", "null", "4") "]}");
    char out[1024];
    render(&t, false, out, sizeof(out));
    ck_assert_str_eq(out, "base\n"
                          "+-a\n"
                          "| `-c\n"
                          "`-*b\n"
                          "  `-now\n"
                          "other\n");
    render(&t, true, out, sizeof(out));
    ck_assert_str_eq(out, "base\n"
                          "\u251c\u2500a\n"
                          "\u2502 \u2514\u2500c\n"
                          "\u2514\u2500*b\n"
                          "  \u2514\u2500now\n"
                          "other\n");
    ck_assert_str_eq(t.current, "3");
    ck_assert_uint_eq(t.rows[0].children, 2);
    ck_assert_uint_eq(t.rows[3].delete_needs_bytes, 2097152);
    ck_assert(t.rows[4].is_now);
    ck_assert_int_eq((int)t.rows[0].created, (int)snaptree_parse_time("2026-11-22T02:50:00Z"));
    snaptree_free(&t);
}
END_TEST

START_TEST(test_no_current_orphan_and_cycle)
{
    /* no current: "now" is a root of its own; 7's parent is missing; 8 and 9 form a cycle */
    struct snap_tree t =
        build("{\"current\": null, \"snapshots\": [" NODE("7", "orphan", "\"42\"", "0") "," NODE(
            "8", "x", "\"9\"", "1") "," NODE("9", "y", "\"8\"", "2") "]}");
    ck_assert_uint_eq(t.n, 4); /* every node once, plus now */
    int seen7 = 0, seen8 = 0, seen9 = 0, now = 0;
    for (size_t i = 0; i < t.n; i++) {
        seen7 += strcmp(t.rows[i].id, "7") == 0;
        seen8 += strcmp(t.rows[i].id, "8") == 0;
        seen9 += strcmp(t.rows[i].id, "9") == 0;
        now += t.rows[i].is_now;
    }
    ck_assert_int_eq(seen7 + seen8 + seen9 + now, 4);
    ck_assert_int_eq(seen7 * seen8 * seen9 * now, 1);
    snaptree_free(&t);
}
END_TEST

START_TEST(test_empty_and_malformed)
{
    struct snap_tree t = build("{\"current\": null, \"snapshots\": []}");
    ck_assert_uint_eq(t.n, 0);
    snaptree_free(&t);
    json_t *j = json_loads("{\"snapshots\": 3}", 0, NULL);
    char err[160];
    ck_assert_int_eq(snaptree_build(j, &t, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "snapshots"));
    json_decref(j);
    j = json_loads("{\"snapshots\": [{\"label\": \"no id\"}]}", 0, NULL);
    ck_assert_int_eq(snaptree_build(j, &t, err, sizeof(err)), -1);
    json_decref(j);
}
END_TEST

START_TEST(test_sparkline_levels)
{
    struct history h;
    memset(&h, 0, sizeof(h));
    int lv[6];
    history_levels(&h, lv, 6, 1);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(lv[i], -1); /* no samples yet: blank */
    history_push(&h, 0);
    history_push(&h, 64);
    history_push(&h, 128);
    ck_assert(history_levels(&h, lv, 6, 1) == 128);
    ck_assert_int_eq(lv[2], -1);
    ck_assert_int_eq(lv[3], 0);
    ck_assert_int_eq(lv[4], 4);
    ck_assert_int_eq(lv[5], 8);
    /* two samples per column: each column shows the larger of its pair */
    ck_assert(history_levels(&h, lv, 3, 2) == 128);
    ck_assert_int_eq(lv[0], -1);
    ck_assert_int_eq(lv[1], 0);
    ck_assert_int_eq(lv[2], 8);
    ck_assert_uint_eq(history_step(13), 10);
    ck_assert_uint_eq(history_step(200), 1);
    for (int i = 0; i < HISTORY_LEN + 5; i++)
        history_push(&h, i);
    ck_assert(history_get(&h, 0) == HISTORY_LEN + 4);
    ck_assert(history_max(&h, 10) == HISTORY_LEN + 4);
}
END_TEST

START_TEST(test_console_scrollback)
{
    static struct conview c;
    conview_init(&c);
    const char *in = "boot\r\nvmws> mem alx\b \bloc 1\r\n\x1b[2Jallocated\t1\r\nvmws> ";
    conview_feed(&c, in, strlen(in));
    ck_assert_uint_eq(c.count, 4);
    ck_assert_str_eq(conview_line(&c, 0), "boot");
    ck_assert_str_eq(conview_line(&c, 1), "vmws> mem alloc 1");
    ck_assert_str_eq(conview_line(&c, 2), "allocated       1");
    ck_assert_str_eq(conview_line(&c, 3), "vmws> ");
    for (int i = 0; i < CONVIEW_LINES + 10; i++)
        conview_feed(&c, "x\n", 2);
    ck_assert_uint_eq(c.count, CONVIEW_LINES);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dashboard");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_branches_and_now);
    tcase_add_test(tc, test_no_current_orphan_and_cycle);
    tcase_add_test(tc, test_empty_and_malformed);
    tcase_add_test(tc, test_sparkline_levels);
    tcase_add_test(tc, test_console_scrollback);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
