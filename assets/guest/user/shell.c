/* The guest's program: copy what it needs out of boot_params, bring up the console, memory,
 * ACPI and the other CPUs, print the banner and run the serial shell. The banner lines and
 * command outputs are a contract: vmws's end-to-end tests and tests/qemu/test_guest_qemu.sh match
 * them byte for byte, so change them only together with those tests. */
#include "assets/guest/user/disk.h"
#include "assets/guest/user/guest.h"
#include "assets/guest/user/sound.h"
#include "assets/guest/user/virtio.h"

#define BP_ACPI_RSDP 0x070
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE 0x2d0
#define LINE_MAX 256
#define ARGS_MAX 32 /* `write NAME TEXT` takes the words of TEXT */
#define PATTERN_MAX 32

struct boot_info boot;

static char filled_pattern[PATTERN_MAX + 1]; /* "" = not filled since the last alloc/free */

static void bootinfo_copy(const uint8_t *bp)
{
    unsigned n = bp[BP_E820_ENTRIES];
    if (n > E820_MAX)
        n = E820_MAX;
    memcpy(boot.e820, bp + BP_E820_TABLE, n * sizeof(struct e820_entry));
    boot.e820_count = n;
    memcpy(&boot.acpi_rsdp, bp + BP_ACPI_RSDP, 8);
    uint32_t lo, hi;
    memcpy(&lo, bp + BP_CMD_LINE_PTR, 4);
    memcpy(&hi, bp + BP_EXT_CMD_LINE_PTR, 4);
    uint64_t cmdline = ((uint64_t)hi << 32) | lo;
    if (cmdline >= PAGE_SIZE && cmdline + sizeof boot.cmdline <= 4 * GIB)
        strncpy_z(boot.cmdline, (const char *)(uintptr_t)cmdline, sizeof boot.cmdline);
}

static void cmd_help(void)
{
    console_puts("help                  list the commands\n"
                 "version               show the guest's version\n"
                 "mem alloc N           reserve N MiB of RAM and touch every page\n"
                 "mem fill PATTERN      fill the reserved RAM with PATTERN (1-32 chars)\n"
                 "mem verify [PATTERN]  check the reserved RAM (default: last filled)\n"
                 "mem free              release all reserved RAM\n"
                 "mem stat              show reserved, filled, usable and free RAM\n"
                 "time                  show the RTC date and time (UTC)\n"
                 "cpus                  list the online CPUs\n"
                 "beep FREQ MS          sound the PC speaker\n"
                 "tone FREQ MS          play a sine through the sound card\n"
                 "pit check             PIT channels 1 and 2 and port 0x61 as the guest sees them\n"
                 "sound [info|garbage]  show the sound card; or program nonsense into it\n"
                 "fb test | fill RRGGBB | noise N | clear | info   framebuffer console\n"
                 "ls | touch NAME | write NAME TEXT | cat NAME | rm NAME | sync   files on disk\n"
                 "disk info | stress N SEED | test-garbage [KIND]   the virtio-blk disk\n"
                 "disk bench seq-write|seq-read|rand-write|rand-read MIB [START [SPAN]]   MiB/s\n"
                 "net info | arp | test-garbage [KIND]   the virtio-net card\n"
                 "poweroff              power the machine off\n");
}

static void cmd_mem(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    uint64_t mib = memory_allocated_bytes() / MIB;
    if (!strcmp(sub, "alloc") && argc == 3) {
        uint64_t n;
        if (!parse_u64(argv[2], &n) || n == 0 || n > (1ULL << 40)) {
            printf("mem: bad size '%s': give a whole number of MiB\n", argv[2]);
            return;
        }
        if (memory_alloc(n * MIB) < 0) {
            printf("mem: cannot allocate %lu MiB: only %lu MiB free\n", n,
                   memory_available_bytes() / MIB);
            return;
        }
        filled_pattern[0] = 0;
        printf("allocated %lu MiB\n", n);
    } else if (!strcmp(sub, "fill") && argc == 3) {
        size_t len = strlen(argv[2]);
        if (len > PATTERN_MAX) {
            printf("mem: pattern too long (%u chars, at most %u)\n", (unsigned)len, PATTERN_MAX);
            return;
        }
        if (!mib) {
            console_puts("mem: nothing allocated\n");
            return;
        }
        memory_fill(memory_pattern_seed(argv[2]));
        strncpy_z(filled_pattern, argv[2], sizeof filled_pattern);
        printf("filled %lu MiB with %s\n", mib, filled_pattern);
    } else if (!strcmp(sub, "verify") && argc <= 3) {
        const char *pattern = argc == 3 ? argv[2] : filled_pattern;
        uint64_t addr, expected, found;
        if (!mib) {
            console_puts("mem: nothing allocated\n");
            return;
        }
        if (!*pattern) {
            console_puts("mem: nothing filled yet: give a pattern or run mem fill\n");
            return;
        }
        if (memory_verify(memory_pattern_seed(pattern), &addr, &expected, &found))
            printf("verify OK: %lu MiB match %s\n", mib, pattern);
        else
            printf("verify FAILED at 0x%lx: expected 0x%016lx, found 0x%016lx\n", addr, expected,
                   found);
    } else if (!strcmp(sub, "free") && argc == 2) {
        memory_free_all();
        filled_pattern[0] = 0;
        printf("freed %lu MiB\n", mib);
    } else if (!strcmp(sub, "stat") && argc == 2) {
        printf("allocated: %lu MiB, filled: %s\n", mib, *filled_pattern ? filled_pattern : "none");
        printf("usable: %lu MiB, free: %lu MiB\n", memory_usable_bytes() / MIB,
               memory_available_bytes() / MIB);
    } else {
        console_puts("usage: mem alloc N | mem fill PATTERN | mem verify [PATTERN] | mem free | "
                     "mem stat\n");
    }
}

static void cmd_time(void)
{
    struct rtc_time t;
    if (!rtc_read(&t)) {
        console_puts("time: the RTC did not give a stable reading\n");
        return;
    }
    printf("%04u-%02u-%02u %02u:%02u:%02u UTC\n", t.year, t.month, t.day, t.hour, t.min, t.sec);
}

static void cmd_cpus(void)
{
    uint32_t ids[MAX_CPUS];
    unsigned n = smp_online(ids, MAX_CPUS);
    printf("cpus: %u online (apic ids", n);
    for (unsigned i = 0; i < n; i++)
        printf(" %u", ids[i]);
    console_puts(")\n");
}

static void cmd_poweroff(void)
{
    console_puts("powering off\n");
    console_flush();
    acpi_poweroff();
    delay_us(500000);
    printf("poweroff: writing SLP_EN to port 0x%x did not power off\n", acpi.pm1a_cnt);
}

static void run_command(char *line)
{
    char *argv[ARGS_MAX];
    int argc = 0;
    for (char *p = line; *p;) {
        while (*p == ' ' || *p == '\t')
            *p++ = 0;
        if (!*p)
            break;
        if (argc == ARGS_MAX)
            break;
        argv[argc++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    if (!argc)
        return;
    if (!strcmp(argv[0], "help"))
        cmd_help();
    else if (!strcmp(argv[0], "version"))
        console_puts(GUEST_VERSION_LINE "\n");
    else if (!strcmp(argv[0], "mem"))
        cmd_mem(argc, argv);
    else if (!strcmp(argv[0], "time"))
        cmd_time();
    else if (!strcmp(argv[0], "cpus"))
        cmd_cpus();
    else if (!strcmp(argv[0], "poweroff"))
        cmd_poweroff();
    else if (!strcmp(argv[0], "fb"))
        fb_command(argc, argv);
    else if (!strcmp(argv[0], "beep"))
        cmd_beep(argc, argv);
    else if (!strcmp(argv[0], "tone"))
        cmd_tone(argc, argv);
    else if (!strcmp(argv[0], "pit"))
        cmd_pit(argc, argv);
    else if (!strcmp(argv[0], "sound"))
        cmd_sound(argc, argv);
    else if (!strcmp(argv[0], "ls"))
        cmd_ls();
    else if (!strcmp(argv[0], "touch"))
        cmd_touch(argc, argv);
    else if (!strcmp(argv[0], "write"))
        cmd_write(argc, argv);
    else if (!strcmp(argv[0], "cat"))
        cmd_cat(argc, argv);
    else if (!strcmp(argv[0], "rm"))
        cmd_rm(argc, argv);
    else if (!strcmp(argv[0], "sync"))
        cmd_sync();
    else if (!strcmp(argv[0], "disk"))
        cmd_disk(argc, argv);
    else if (!strcmp(argv[0], "net"))
        cmd_net(argc, argv);
    else
        printf("unknown command: %s (try help)\n", argv[0]);
}

/* Escape sequences (arrow and function keys from a terminal) are swallowed whole: ESC, then
 * '[' or 'O', then parameters up to a final byte in 0x40-0x7e. */
enum esc_state { ESC_NONE, ESC_START, ESC_SEQ };

static bool swallow_escape(enum esc_state *st, int c)
{
    switch (*st) {
    case ESC_START:
        *st = (c == '[' || c == 'O') ? ESC_SEQ : ESC_NONE;
        return true;
    case ESC_SEQ:
        if (c >= 0x40 && c <= 0x7e)
            *st = ESC_NONE;
        return true;
    default:
        if (c != 0x1b)
            return false;
        *st = ESC_START;
        return true;
    }
}

/* Line editing: echo, backspace/delete, ^C to drop the line, and CR, LF or CRLF as one
 * Enter. */
static void shell_run(void)
{
    char line[LINE_MAX];
    size_t len = 0;
    bool after_cr = false;
    enum esc_state esc = ESC_NONE;
    console_puts("vmws> ");
    for (;;) {
        int c = console_getc();
        if (c == '\n' && after_cr) {
            after_cr = false;
            continue;
        }
        after_cr = c == '\r';
        if (swallow_escape(&esc, c))
            continue;
        if (c == '\r' || c == '\n') {
            console_puts("\n");
            line[len] = 0;
            run_command(line);
            len = 0;
            console_puts("vmws> ");
        } else if (c == 0x03) {
            console_puts("^C\nvmws> ");
            len = 0;
        } else if (c == 0x08 || c == 0x7f) {
            if (len) {
                len--;
                console_puts("\b \b");
            }
        } else if (c >= 0x20 && c < 0x7f && len + 1 < sizeof line) {
            line[len++] = (char)c;
            char ch = (char)c;
            console_write(&ch, 1);
        }
    }
}

void guest_main(const uint8_t *boot_params)
{
    bootinfo_copy(boot_params);
    fb_init(boot_params);
    fb_probe_bochs();
    console_init();
    kbd_init();
    console_puts(GUEST_VERSION_LINE "\n");
    memory_init();
    printf("memory: %lu MiB usable\n", memory_usable_bytes() / MIB);
    acpi_init();
    timer_init();
    smp_start();
    printf("cpus: %u online\n", cpus_online);
    shell_run();
}
