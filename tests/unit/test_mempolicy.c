/* Unit tests for memory management's arithmetic and its [memory] keys: dynamic memory's
 * decision (core/vm/mempolicy.c: demand + buffer within min/max, the balloon not counted as
 * demand, a short host taking back by shares, no churn on noise), admission control's sum
 * (core/vm/memcg.c, with its error text) and vm.conf's [memory] section. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config/vmconfig.h"
#include "core/vm/memcg.h"
#include "core/vm/mempolicy.h"

#define MIB ((uint64_t)1 << 20)

static struct mempolicy_input base(void)
{
    return (struct mempolicy_input){
        .ram = 1024 * MIB,
        .buffer_percent = 20,
        .have_guest = true,
        .guest_total = 1000 * MIB,
        .guest_available = 490 * MIB, /* uses 510 */
        .host_total = 8192 * MIB,
        .host_available = 4096 * MIB,
        .psi_some_avg10 = 0.5,
    };
}

START_TEST(test_demand_plus_buffer)
{
    struct mempolicy_input in = base();
    struct mempolicy_decision d;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.demand, 510 * MIB);
    ck_assert_uint_eq(d.keep, 612 * MIB); /* 510 + 20% */
    ck_assert_uint_eq(d.target, (1024 - 612) * MIB);
    ck_assert_str_eq(d.reason, "guest needs 510 MiB + 20% buffer");
    ck_assert(!d.host_short);
    /* Demand rises: the guest keeps more; falls: less. */
    in.guest_available = 290 * MIB;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 852 * MIB);
    in.guest_available = 900 * MIB;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 120 * MIB);
}
END_TEST

START_TEST(test_bounds)
{
    struct mempolicy_input in = base();
    struct mempolicy_decision d;
    in.min = 256 * MIB;
    in.guest_available = 950 * MIB; /* uses 50: keeps its min */
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 256 * MIB);
    ck_assert_str_eq(d.reason, "guest needs 50 MiB + 20% buffer (at min 256 MiB)");
    in.max = 768 * MIB;
    in.guest_available = 100 * MIB; /* uses 900 */
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 768 * MIB);
    ck_assert_uint_eq(d.target, 256 * MIB);
    ck_assert_str_eq(d.reason, "guest needs 900 MiB + 20% buffer (at max 768 MiB)");
    /* max 0 = all RAM; a max above RAM is RAM. */
    in.max = 0;
    in.guest_available = 0;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 1024 * MIB);
    ck_assert_uint_eq(d.target, 0);
    /* No statistics yet: the guest keeps its max, and says so. */
    in.have_guest = false;
    in.max = 512 * MIB;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 512 * MIB);
    ck_assert_str_eq(d.reason, "no statistics from the guest yet: it keeps its max, 512 MiB");
}
END_TEST

/* With deflate-on-OOM Linux keeps MemTotal and counts the balloon's pages as used. */
START_TEST(test_balloon_is_not_demand)
{
    struct mempolicy_input in = base();
    struct mempolicy_decision d;
    in.balloon_actual = 300 * MIB;
    in.guest_available = 190 * MIB; /* 810 "used", 300 of them the balloon's */
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.demand, 510 * MIB);
    /* Without deflate-on-OOM MemTotal shrank by the balloon: nothing to subtract. */
    in.guest_total = 700 * MIB;
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.demand, 510 * MIB);
}
END_TEST

START_TEST(test_host_pressure)
{
    struct mempolicy_input in = base();
    struct mempolicy_decision d;
    ck_assert_uint_eq(mempolicy_host_shortfall(8192 * MIB, 4096 * MIB, 0.5), 0);
    /* MemAvailable below 5% of the host: what is missing. */
    ck_assert_uint_eq(mempolicy_host_shortfall(10000 * MIB, 300 * MIB, 0), 200 * MIB);
    /* Stalls at 12% with RAM getting scarce (under 20%) but no gap yet: half the low mark. */
    ck_assert_uint_eq(mempolicy_host_shortfall(10000 * MIB, 1500 * MIB, 12), 250 * MIB);
    /* Stalls with 40% of the RAM available: a cgroup's own limit, not the host's shortage
     * (seen in the box: a VM at its memory.max made the host's some avg10 11%). */
    ck_assert_uint_eq(mempolicy_host_shortfall(10000 * MIB, 4000 * MIB, 12), 0);
    in.psi_some_avg10 = 11;
    in.reclaim = 0;
    mempolicy_decide(&in, &d);
    ck_assert(!d.host_short);
    ck_assert_uint_eq(d.keep, 612 * MIB);
    in.psi_some_avg10 = 12;
    in.host_available = 4000 * MIB;
    in.reclaim = 80 * MIB;
    mempolicy_decide(&in, &d);
    ck_assert(d.host_short);
    ck_assert_uint_eq(d.keep, (612 - 80) * MIB);
    ck_assert_str_eq(d.reason, "guest needs 510 MiB + 20% buffer; host pressure some avg10=12%, "
                               "MemAvailable 4000 MiB: 80 MiB taken back");
    in.min = 600 * MIB; /* never below min */
    mempolicy_decide(&in, &d);
    ck_assert_uint_eq(d.keep, 600 * MIB);
}
END_TEST

START_TEST(test_should_change)
{
    const uint64_t ram = 1024 * MIB; /* step: max(2% = 20.48 MiB, 16 MiB) */
    ck_assert(!mempolicy_should_change(400 * MIB, 410 * MIB, ram, false));
    ck_assert(!mempolicy_should_change(400 * MIB, 380 * MIB, ram, false));
    ck_assert(mempolicy_should_change(400 * MIB, 430 * MIB, ram, false));
    ck_assert(mempolicy_should_change(10 * MIB, 0, ram, false)); /* a bound, exactly */
    ck_assert(!mempolicy_should_change(0, 0, ram, false));
    ck_assert(mempolicy_should_change(0, 17 * MIB, 256 * MIB, false));
    /* The guest's min or max, exactly: a demand that fell ends there, not a step above. */
    ck_assert(!mempolicy_should_change(410 * MIB, 416 * MIB, 512 * MIB, false));
    ck_assert(mempolicy_should_change(410 * MIB, 416 * MIB, 512 * MIB, true));
    ck_assert(!mempolicy_should_change(416 * MIB, 416 * MIB, 512 * MIB, true));
}
END_TEST

/* Shares: the host takes in proportion to held/shares, never below a floor. */
/* Memory goes to the guest at once; it is taken back only after MEMPOLICY_TAKE_TICKS proposals
 * in a row, and then the least of them; a short host takes at once. */
START_TEST(test_damp)
{
    struct mempolicy_damper dm = {0};
    ck_assert_uint_eq(mempolicy_damp(&dm, 400 * MIB, 100 * MIB, false), 100 * MIB); /* give */
    for (unsigned i = 1; i < MEMPOLICY_TAKE_TICKS; i++) /* take: it waits */
        ck_assert_uint_eq(mempolicy_damp(&dm, 100 * MIB, (300 + i * 10) * MIB, false), 100 * MIB);
    ck_assert_uint_eq(mempolicy_damp(&dm, 100 * MIB, 500 * MIB, false), 310 * MIB); /* least */
    /* A proposal to give in between starts the wait over. */
    for (unsigned i = 1; i < MEMPOLICY_TAKE_TICKS; i++)
        ck_assert_uint_eq(mempolicy_damp(&dm, 100 * MIB, 300 * MIB, false), 100 * MIB);
    ck_assert_uint_eq(mempolicy_damp(&dm, 100 * MIB, 90 * MIB, false), 90 * MIB);
    ck_assert_uint_eq(mempolicy_damp(&dm, 90 * MIB, 300 * MIB, false), 90 * MIB);
    ck_assert_uint_eq(dm.ticks, 1);
    /* A short host does not wait. */
    ck_assert_uint_eq(mempolicy_damp(&dm, 90 * MIB, 300 * MIB, true), 300 * MIB);
    ck_assert_uint_eq(dm.ticks, 0);
}
END_TEST

START_TEST(test_divide_by_shares)
{
    struct mempolicy_peer peers[3] = {
        {.held = 1024 * MIB, .floor = 0, .shares = 1000},
        {.held = 1024 * MIB, .floor = 0, .shares = 2000}, /* twice the priority: half taken */
        {.held = 1024 * MIB, .floor = 1000 * MIB, .shares = 500}, /* 24 MiB above its floor */
    };
    uint64_t r[3];
    mempolicy_divide(300 * MIB, peers, 2, r);
    ck_assert_uint_eq(r[0] + r[1], 300 * MIB);
    ck_assert_uint_eq(r[0], 200 * MIB);
    ck_assert_uint_eq(r[1], 100 * MIB);
    /* The third would take the most (fewest shares) but stops at its floor; the others give
     * the rest in their ratio. */
    mempolicy_divide(300 * MIB, peers, 3, r);
    ck_assert_uint_eq(r[2], 24 * MIB);
    ck_assert_uint_eq(r[0] + r[1] + r[2], 300 * MIB);
    ck_assert(r[0] > r[1]);
    /* More than there is above the floors: all of it, no more. */
    mempolicy_divide(5000 * MIB, peers, 3, r);
    ck_assert_uint_eq(r[0], 1024 * MIB);
    ck_assert_uint_eq(r[1], 1024 * MIB);
    ck_assert_uint_eq(r[2], 24 * MIB);
    mempolicy_divide(0, peers, 3, r);
    ck_assert_uint_eq(r[0] + r[1] + r[2], 0);
}
END_TEST

START_TEST(test_admission)
{
    ck_assert_uint_eq(memcg_host_margin(1024 * MIB), 256 * MIB);
    ck_assert_uint_eq(memcg_host_margin(8192 * MIB), 8192 * MIB / 10);
    ck_assert_uint_eq(memcg_host_margin(64ULL * 1024 * MIB), 2048 * MIB);
    struct memcg_admission a = {.host_total = 8192 * MIB,
                                .others = 2048 * MIB,
                                .others_count = 2,
                                .margin = 1024 * MIB,
                                .want = 5120 * MIB};
    char err[512];
    ck_assert_int_eq(memcg_admit(&a, err, sizeof(err)), 0); /* exactly what is left */
    a.want += MIB;
    ck_assert_int_eq(memcg_admit(&a, err, sizeof(err)), -ENOMEM);
    ck_assert_str_eq(err, "its reservation of 5121 MiB cannot be met: the host has 8192 MiB of "
                          "RAM, 2 running VM(s) reserve 2048 MiB and the host keeps 1024 MiB "
                          "for itself, which leaves 5120 MiB (lower [memory] reservation in "
                          "vm.conf, or stop a VM)");
    a.others = 9000 * MIB; /* over-reserved already: nothing left, no underflow */
    ck_assert_int_eq(memcg_admit(&a, err, sizeof(err)), -ENOMEM);
    ck_assert_ptr_nonnull(strstr(err, "which leaves 0 MiB"));
}
END_TEST

static int load_conf(const char *text, struct vm_config *cfg, char *err, size_t len)
{
    char path[] = "/tmp/vmws-test-mempolicy.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    vmconfig_defaults(cfg, "t");
    int rc = vmconfig_load(path, cfg, err, len);
    unlink(path);
    return rc;
}

START_TEST(test_config)
{
    struct vm_config cfg;
    char err[512];
    ck_assert_msg(load_conf("[vm]\nmemory = 1G\n", &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(cfg.memory.shares, 1000);
    ck_assert_uint_eq(cfg.memory.buffer_percent, 20);
    ck_assert(!cfg.memory.dynamic);
    ck_assert_int_eq(load_conf("[vm]\nmemory = 1G\n[memory]\nlimit = 768M\n"
                               "reservation = 512M\nshares = 2000\ndynamic = yes\nmin = 256M\n"
                               "max = 1G\nbuffer = 25%\n",
                               &cfg, err, sizeof(err)),
                     0);
    ck_assert_uint_eq(cfg.memory.reservation, 512 * MIB);
    ck_assert_uint_eq(cfg.memory.limit, 768 * MIB);
    ck_assert_uint_eq(cfg.memory.shares, 2000);
    ck_assert(cfg.memory.dynamic);
    ck_assert_uint_eq(cfg.memory.min, 256 * MIB);
    ck_assert_uint_eq(cfg.memory.max, 1024 * MIB);
    ck_assert_uint_eq(cfg.memory.buffer_percent, 25);
    /* Saved and loaded again: the same. */
    char path[] = "/tmp/vmws-test-mempolicy-save.XXXXXX";
    close(mkstemp(path));
    ck_assert_int_eq(vmconfig_save(path, &cfg), 0);
    struct vm_config again;
    vmconfig_defaults(&again, "t");
    ck_assert_int_eq(vmconfig_load(path, &again, err, sizeof(err)), 0);
    unlink(path);
    ck_assert_mem_eq(&again.memory, &cfg.memory, sizeof(cfg.memory));

    struct {
        const char *text, *err;
    } bad[] = {
        {"[memory]\nreservation = 2G\n", "reservation 2048 MiB is more than the VM's 1024 MiB"},
        {"[memory]\nreservation = 512M\nlimit = 256M\n",
         "reservation 512 MiB is above the limit 256 MiB"},
        {"[memory]\nlimit = 1M\n", "limit 1 MiB is below 16 MiB"},
        {"[memory]\nmin = 600M\nmax = 500M\n", "min 600 MiB is above max 500 MiB"},
        {"[memory]\nshares = 0\n", "bad memory shares '0'"},
        {"[memory]\nbuffer = 150%\n", "bad memory buffer '150%'"},
        {"[memory]\ndynamic = perhaps\n", "bad memory dynamic 'perhaps'"},
        {"[memory]\nswap = 1G\n", "unknown key 'swap' in [memory]"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "[vm]\nmemory = 1G\n%s", bad[i].text);
        ck_assert_int_eq(load_conf(text, &cfg, err, sizeof(err)), -1);
        ck_assert_msg(strstr(err, bad[i].err), "'%s' does not say '%s'", err, bad[i].err);
    }
}
END_TEST

/* Where cgroup v2 has no memory controller (this machine: cgroup v1 hybrid) or none is
 * writable, memcg_enter says so in one sentence and leaves the process where it was. */
START_TEST(test_enter_unavailable)
{
    setenv("VMWS_CGROUP_PARENT", "/nonexistent/vmws", 1);
    struct memcg cg;
    ck_assert_int_lt(memcg_enter(&cg, "t", 0, 0), 0);
    ck_assert(!cg.enforced);
    const char *prefix = "cgroup v2 memory controller not available: ";
    ck_assert_msg(!strncmp(cg.why, prefix, strlen(prefix)), "%s", cg.why);
    json_t *j = memcg_json(&cg);
    ck_assert(json_is_false(json_object_get(j, "enforced")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "why")), cg.why);
    json_decref(j);
    memcg_leave(&cg); /* nothing to do */
    unsetenv("VMWS_CGROUP_PARENT");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mempolicy");
    TCase *tc = tcase_create("mempolicy");
    tcase_add_test(tc, test_demand_plus_buffer);
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_balloon_is_not_demand);
    tcase_add_test(tc, test_host_pressure);
    tcase_add_test(tc, test_should_change);
    tcase_add_test(tc, test_damp);
    tcase_add_test(tc, test_divide_by_shares);
    tcase_add_test(tc, test_admission);
    tcase_add_test(tc, test_config);
    tcase_add_test(tc, test_enter_unavailable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
