/* The framebuffer console: a text console on the linear framebuffer the boot loader described
 * in boot_params.screen_info (32 bpp), mirroring everything the shell writes to COM1, with a
 * block cursor, scrolling, and a status line (UTC clock, memory in use) redrawn only when its
 * text changes, so an idle guest leaves the screen, and the VMM's dirty log, untouched.
 * Everything here runs at CPL 3: the framebuffer is ordinary memory in the identity map. */
#include "assets/guest/user/guest.h"

#define SI_ORIG_VIDEO_ISVGA 0x0f
#define SI_LFB_WIDTH 0x12
#define SI_LFB_HEIGHT 0x14
#define SI_LFB_DEPTH 0x16
#define SI_LFB_BASE 0x18
#define SI_LFB_LINELENGTH 0x24
#define SI_EXT_LFB_BASE 0x3a
#define VIDEO_TYPE_VLFB 0x23
#define VIDEO_TYPE_EFI 0x70
#define CELL_W 8
#define CELL_H 16
#define STATUS_MAX 160

#define COLOR_FG 0xd0d0d0
#define COLOR_BG 0x101820
#define COLOR_STATUS_FG 0x000000
#define COLOR_STATUS_BG 0x60a0d0

extern const uint8_t font8x16[128][16];
static bool timer_armable;

static struct {
    uint32_t *base;                /* NULL: no framebuffer */
    unsigned width, height, pitch; /* pitch in pixels */
    unsigned cols, rows;           /* text area, above the status line */
    unsigned cx, cy;
    char status[STATUS_MAX];
} fb;

bool fb_present(void)
{
    return fb.base != NULL;
}

static void fill_rect(unsigned x, unsigned y, unsigned w, unsigned h, uint32_t color)
{
    for (unsigned r = 0; r < h; r++) {
        uint32_t *p = fb.base + (size_t)(y + r) * fb.pitch + x;
        for (unsigned i = 0; i < w; i++)
            p[i] = color;
    }
}

static void draw_glyph(unsigned col, unsigned row_px, char c, uint32_t fg, uint32_t bg)
{
    const uint8_t *g = font8x16[(unsigned char)c & 0x7f];
    for (unsigned r = 0; r < CELL_H; r++) {
        uint32_t *p = fb.base + (size_t)(row_px + r) * fb.pitch + col * CELL_W;
        uint8_t bits = g[r];
        for (unsigned i = 0; i < CELL_W; i++)
            p[i] = (bits & (0x80 >> i)) ? fg : bg;
    }
}

static void draw_cursor(bool on)
{
    uint32_t *p = fb.base + (size_t)(fb.cy * CELL_H + CELL_H - 3) * fb.pitch + fb.cx * CELL_W;
    for (unsigned r = 0; r < 2; r++, p += fb.pitch)
        for (unsigned i = 0; i < CELL_W; i++)
            p[i] = on ? COLOR_FG : COLOR_BG;
}

static void scroll(void)
{
    size_t line = (size_t)fb.pitch * CELL_H;
    memmove(fb.base, fb.base + line, line * (fb.rows - 1) * sizeof(uint32_t));
    fill_rect(0, (fb.rows - 1) * CELL_H, fb.cols * CELL_W, CELL_H, COLOR_BG);
}

static void newline(void)
{
    fb.cx = 0;
    if (fb.cy + 1 < fb.rows)
        fb.cy++;
    else
        scroll();
}

void fb_write(const char *s, size_t n)
{
    if (!fb.base || !n)
        return;
    draw_cursor(false);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\n') {
            newline();
        } else if (c == '\r') {
            fb.cx = 0;
        } else if (c == '\b') {
            if (fb.cx)
                fb.cx--;
        } else if (c == '\t') {
            do
                fb_write(" ", 1);
            while (fb.cx % 8);
        } else if (c >= 0x20 && c < 0x7f) {
            if (fb.cx >= fb.cols)
                newline();
            draw_glyph(fb.cx, fb.cy * CELL_H, c, COLOR_FG, COLOR_BG);
            fb.cx++;
        }
    }
    draw_cursor(true);
}

static void clear_text(void)
{
    fill_rect(0, 0, fb.width, fb.rows * CELL_H, COLOR_BG);
    fb.cx = fb.cy = 0;
}

/* The LAPIC timer, one-shot, wakes the shell at the next minute so the clock moves on an
 * idle guest too (the kernel's handler only counts the interrupt). Its rate is measured once
 * against the ACPI PM timer (3.579545 MHz; two port reads around a 20 ms spin); a first wake
 * a second before the minute absorbs what error is left, then a short one lands just after. */
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
#define LAPIC_DIV_128 0x0a
#define LVT_MASKED (1u << 16)
#define PM_TIMER_HZ 3579545ULL
#define CALIBRATE_US 20000

static uint64_t lapic_ticks_per_ms;

static void calibrate_lapic_timer(uint64_t lapic)
{
    uint32_t mask = acpi.pm_tmr_32bit ? 0xffffffffu : 0xffffffu;
    mmio_write32(lapic + LAPIC_TIMER_DIV, LAPIC_DIV_128);
    mmio_write32(lapic + LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
    uint32_t p0 = acpi.pm_tmr ? inl(acpi.pm_tmr) & mask : 0;
    mmio_write32(lapic + LAPIC_TIMER_INIT, 0xffffffffu);
    delay_us(CALIBRATE_US);
    uint64_t ticks = 0xffffffffu - mmio_read32(lapic + LAPIC_TIMER_CUR);
    uint32_t p1 = acpi.pm_tmr ? inl(acpi.pm_tmr) & mask : 0;
    mmio_write32(lapic + LAPIC_TIMER_INIT, 0);
    uint64_t pm = (p1 - p0) & mask;
    /* Without a PM timer, trust the delay (it runs long: the clock then wakes late). */
    lapic_ticks_per_ms = pm ? ticks * PM_TIMER_HZ / pm / 1000 : ticks * 1000 / CALIBRATE_US;
    if (!lapic_ticks_per_ms)
        lapic_ticks_per_ms = 1;
}

static void arm_minute_timer(unsigned sec)
{
    uint64_t lapic = acpi.lapic_addr ? acpi.lapic_addr : LAPIC_DEFAULT;
    if (!lapic_ticks_per_ms)
        calibrate_lapic_timer(lapic);
    unsigned left_ms = (60 - sec % 60) * 1000;
    uint64_t ms = left_ms > 3000 ? left_ms - 1000 : left_ms + 30;
    uint64_t ticks = ms * lapic_ticks_per_ms;
    mmio_write32(lapic + LAPIC_LVT_TIMER, VEC_TIMER); /* one-shot, unmasked */
    mmio_write32(lapic + LAPIC_TIMER_INIT, ticks > 0xffffffffu ? 0xffffffffu : (uint32_t)ticks);
}

/* The status line: redrawn only if its text changed (or FORCE). */
static void status_draw(bool force)
{
    char text[STATUS_MAX];
    struct rtc_time t;
    uint64_t used = memory_usable_bytes() - memory_available_bytes();
    bool have_time = rtc_read(&t);
    if (have_time)
        snprintf(text, sizeof text,
                 " vmws-guest  %04u-%02u-%02u %02u:%02u UTC  mem %lu MiB in use of %lu MiB", t.year,
                 t.month, t.day, t.hour, t.min, used / MIB, memory_usable_bytes() / MIB);
    else
        snprintf(text, sizeof text, " vmws-guest  mem %lu MiB in use of %lu MiB", used / MIB,
                 memory_usable_bytes() / MIB);
    if (have_time && timer_armable)
        arm_minute_timer(t.sec);
    if (!force && !strcmp(text, fb.status))
        return;
    strncpy_z(fb.status, text, sizeof fb.status);
    unsigned y = fb.height - CELL_H;
    size_t len = strlen(text);
    for (unsigned c = 0; c < fb.cols; c++)
        draw_glyph(c, y, c < len ? text[c] : ' ', COLOR_STATUS_FG, COLOR_STATUS_BG);
}

void fb_idle(void)
{
    if (fb.base) {
        timer_armable = true; /* by now the LAPIC is set up (smp_start) */
        status_draw(false);
    }
}

void fb_init(const uint8_t *bp)
{
    uint8_t type = bp[SI_ORIG_VIDEO_ISVGA];
    uint16_t w, h, depth, line;
    uint32_t lo, hi = 0;
    memcpy(&w, bp + SI_LFB_WIDTH, 2);
    memcpy(&h, bp + SI_LFB_HEIGHT, 2);
    memcpy(&depth, bp + SI_LFB_DEPTH, 2);
    memcpy(&line, bp + SI_LFB_LINELENGTH, 2);
    memcpy(&lo, bp + SI_LFB_BASE, 4);
    memcpy(&hi, bp + SI_EXT_LFB_BASE, 4);
    uint64_t base = ((uint64_t)hi << 32) | lo;
    if ((type != VIDEO_TYPE_VLFB && type != VIDEO_TYPE_EFI) || depth != 32 || !base || w < 160 ||
        h < 3 * CELL_H || line < w * 4u || base + (uint64_t)line * h > 4 * GIB)
        return;
    fb_init_raw(base, w, h, line);
}

void fb_init_raw(uint64_t base, unsigned width, unsigned height, unsigned pitch_bytes)
{
    fb.base = (uint32_t *)(uintptr_t)base;
    fb.width = width;
    fb.height = height;
    fb.pitch = pitch_bytes / 4;
    fb.cols = width / CELL_W;
    fb.rows = height / CELL_H - 1;
    clear_text();
    fill_rect(0, fb.rows * CELL_H, fb.width, fb.height - fb.rows * CELL_H, COLOR_STATUS_BG);
    fb.status[0] = 0;
    status_draw(true);
}

/* `fb test`: eight vertical colour bars (white, yellow, cyan, green, magenta, red, blue,
 * black) over the text area but its last two lines, which then hold the report and the
 * prompt, so nothing scrolls the pattern away until the next command. */
static const uint32_t test_bars[8] = {0xffffff, 0xffff00, 0x00ffff, 0x00ff00,
                                      0xff00ff, 0xff0000, 0x0000ff, 0x000000};

static void cmd_test(void)
{
    unsigned h = (fb.rows - 2) * CELL_H, bar = fb.width / 8;
    for (unsigned i = 0; i < 8; i++)
        fill_rect(i * bar, 0, i == 7 ? fb.width - 7 * bar : bar, h, test_bars[i]);
    fill_rect(0, h, fb.width, 2 * CELL_H, COLOR_BG);
    fb.cx = 0;
    fb.cy = fb.rows - 2;
    printf("fb test: 8 bars of %u px, %ux%u\n", bar, fb.width, fb.height);
}

static bool parse_hex24(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    unsigned n = 0;
    for (; *s; s++, n++) {
        char c = *s;
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d > 15)
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return n == 6;
}

/* `fb fill RRGGBB`: the whole screen, status line included, in one colour (a full-screen
 * change for benchmarks); the console restarts at the top left. */
static void cmd_fill(const char *arg)
{
    uint32_t color;
    if (!parse_hex24(arg, &color)) {
        printf("fb: bad colour '%s' (expected RRGGBB)\n", arg);
        return;
    }
    fill_rect(0, 0, fb.width, fb.height, color);
    fb.cx = fb.cy = 0;
    fb.status[0] = 0;
    printf("fb fill: %06x\n", color);
}

/* `fb noise SEED`: every pixel from a xorshift generator, the worst case for a VNC encoder
 * (benchmarks); like fill, the console restarts at the top left. */
static void cmd_noise(const char *arg)
{
    uint64_t x;
    if (!parse_u64(arg, &x)) {
        printf("fb: bad seed '%s' (expected a number)\n", arg);
        return;
    }
    x = x * 0x9e3779b97f4a7c15ULL + 1;
    for (unsigned y = 0; y < fb.height; y++) {
        uint32_t *p = fb.base + (size_t)y * fb.pitch;
        for (unsigned i = 0; i < fb.width; i += 2) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = (uint32_t)x & 0xffffff;
            if (i + 1 < fb.width)
                p[i + 1] = (uint32_t)(x >> 32) & 0xffffff;
        }
    }
    fb.cx = fb.cy = 0;
    fb.status[0] = 0;
    printf("fb noise: %s\n", arg);
}

void fb_command(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!fb.base) {
        console_puts("fb: no framebuffer (the boot loader gave no 32-bpp linear framebuffer)\n");
        return;
    }
    if (!strcmp(sub, "test") && argc == 2)
        cmd_test();
    else if (!strcmp(sub, "fill") && argc == 3)
        cmd_fill(argv[2]);
    else if (!strcmp(sub, "noise") && argc == 3)
        cmd_noise(argv[2]);
    else if (!strcmp(sub, "clear") && argc == 2) {
        clear_text();
        status_draw(true);
    } else if (!strcmp(sub, "info") && argc == 2)
        printf("fb: %ux%u, 32 bpp, pitch %u, at 0x%lx, console %ux%u\n", fb.width, fb.height,
               fb.pitch * 4, (uint64_t)(uintptr_t)fb.base, fb.cols, fb.rows);
    else
        console_puts("usage: fb test | fb fill RRGGBB | fb noise SEED | fb clear | fb info\n");
}

/* No framebuffer from the boot loader (QEMU's -kernel path sets no VESA mode): if a Bochs
 * VBE display (PCI 1234:1111, QEMU's -vga std) is there, set 1024x768x32 through its DISPI
 * ports and use its BAR 0, which the firmware assigned. */
#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc
#define DISPI_INDEX 0x1ce
#define DISPI_DATA 0x1cf
#define DISPI_ID 0
#define DISPI_ID0 0xb0c0
#define DISPI_ID5 0xb0c5
#define DISPI_XRES 1
#define DISPI_YRES 2
#define DISPI_BPP 3
#define DISPI_ENABLE 4
#define DISPI_ENABLED 0x01
#define DISPI_LFB_ENABLED 0x40

static uint32_t pci_read32(unsigned slot, unsigned off)
{
    syscall3(SYS_OUT32, PCI_CONFIG_ADDRESS, (long)(0x80000000u | slot << 11 | off), 0);
    return inl(PCI_CONFIG_DATA);
}

static void dispi_write(uint16_t index, uint16_t value)
{
    outw(DISPI_INDEX, index);
    outw(DISPI_DATA, value);
}

void fb_probe_bochs(void)
{
    if (fb.base)
        return;
    /* The DISPI id register first (two syscalls), so machines without the device, or where
     * the loader gave us a framebuffer, never pay for a PCI scan (CPL-0 syscalls). */
    outw(DISPI_INDEX, DISPI_ID);
    uint16_t id = inw(DISPI_DATA);
    if (id < DISPI_ID0 || id > DISPI_ID5)
        return;
    for (unsigned slot = 0; slot < 32; slot++) {
        if (pci_read32(slot, 0) != 0x11111234)
            continue;
        uint32_t bar0 = pci_read32(slot, 0x10) & ~0xfu;
        if (!bar0)
            return;
        dispi_write(DISPI_ENABLE, 0);
        dispi_write(DISPI_XRES, 1024);
        dispi_write(DISPI_YRES, 768);
        dispi_write(DISPI_BPP, 32);
        dispi_write(DISPI_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED);
        fb_init_raw(bar0, 1024, 768, 1024 * 4);
        return;
    }
}
