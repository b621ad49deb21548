/* PS/2 keyboard through the i8042, feeding the same shell as the serial line. The kernel's
 * IRQ-1 stub only counts the interrupt (as COM1's does), which wakes console_getc(); the
 * scancodes (set 1, the controller translates) are read and turned into characters here at
 * CPL 3: US layout, Shift, Ctrl, Caps Lock; arrows become the ESC [ A.. a terminal sends. */
#include "assets/guest/user/guest.h"

#define I8042_DATA 0x60
#define I8042_STATUS 0x64
#define I8042_CMD 0x64
#define STAT_OBF 0x01
#define STAT_AUX 0x20
#define CMD_WRITE_CONFIG 0x60
/* Keyboard interrupt, system flag, aux port disabled, translation to set 1. */
#define CONFIG_BYTE 0x65

#define SC_LSHIFT 0x2a
#define SC_RSHIFT 0x36
#define SC_CTRL 0x1d
#define SC_ALT 0x38
#define SC_CAPS 0x3a

/* clang-format off */
static const char plain[0x3a] = {
    0,    0x1b, '1', '2', '3', '4', '5', '6', '7', '8', '9', '0', '-', '=', 0x7f, '\t',
    'q',  'w',  'e', 'r', 't', 'y', 'u', 'i', 'o', 'p', '[', ']', '\r', 0,   'a',  's',
    'd',  'f',  'g', 'h', 'j', 'k', 'l', ';', '\'', '`', 0,  '\\', 'z', 'x', 'c', 'v',
    'b',  'n',  'm', ',', '.', '/', 0,   '*', 0,   ' ',
};
/* clang-format on */
/* clang-format off */
static const char shifted[0x3a] = {
    0,    0x1b, '!', '@', '#', '$', '%', '^', '&', '*', '(', ')', '_', '+', 0x7f, '\t',
    'Q',  'W',  'E', 'R', 'T', 'Y', 'U', 'I', 'O', 'P', '{', '}', '\r', 0,   'A',  'S',
    'D',  'F',  'G', 'H', 'J', 'K', 'L', ':', '"', '~', 0,   '|', 'Z', 'X', 'C', 'V',
    'B',  'N',  'M', '<', '>', '?', 0,   '*', 0,   ' ',
};
/* clang-format on */

static struct {
    bool present, shift_l, shift_r, ctrl, caps, e0;
    char pending[4]; /* the rest of an escape sequence */
    unsigned npending;
} kbd;

void kbd_init(void)
{
    outb(I8042_CMD, CMD_WRITE_CONFIG);
    outb(I8042_DATA, CONFIG_BYTE);
    for (int i = 0; i < 64 && (inb(I8042_STATUS) & STAT_OBF); i++)
        inb(I8042_DATA); /* stale bytes */
    kbd.present = true;
}

static void queue_escape(char final)
{
    kbd.pending[0] = '[';
    kbd.pending[1] = final;
    kbd.npending = 2;
}

/* One scancode byte -> a character, or -1. */
static int translate(uint8_t sc)
{
    if (sc == 0xe0) {
        kbd.e0 = true;
        return -1;
    }
    bool e0 = kbd.e0, up = sc & 0x80;
    kbd.e0 = false;
    sc &= 0x7f;
    switch (sc) {
    case SC_LSHIFT:
        if (!e0)
            kbd.shift_l = !up;
        return -1; /* E0 2A: fake shift */
    case SC_RSHIFT:
        kbd.shift_r = !up;
        return -1;
    case SC_CTRL:
        kbd.ctrl = !up;
        return -1;
    case SC_ALT:
        return -1;
    case SC_CAPS:
        if (!up)
            kbd.caps = !kbd.caps;
        return -1;
    }
    if (up)
        return -1;
    if (e0) {
        switch (sc) {
        case 0x48:
            queue_escape('A');
            return 0x1b;
        case 0x50:
            queue_escape('B');
            return 0x1b;
        case 0x4d:
            queue_escape('C');
            return 0x1b;
        case 0x4b:
            queue_escape('D');
            return 0x1b;
        case 0x1c:
            return '\r'; /* keypad Enter */
        case 0x35:
            return '/';
        case 0x53:
            return 0x7f; /* Delete */
        default:
            return -1;
        }
    }
    if (sc >= sizeof plain)
        return -1;
    bool shift = kbd.shift_l || kbd.shift_r;
    char c = shift ? shifted[sc] : plain[sc];
    if (kbd.caps && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
        c ^= 0x20;
    if (kbd.ctrl && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
        return c & 0x1f;
    return c ? c : -1;
}

int kbd_getc(void)
{
    if (!kbd.present)
        return -1;
    if (kbd.npending) {
        char c = kbd.pending[0];
        for (unsigned i = 1; i < kbd.npending; i++)
            kbd.pending[i - 1] = kbd.pending[i];
        kbd.npending--;
        return (unsigned char)c;
    }
    for (;;) {
        uint8_t st = inb(I8042_STATUS);
        if (!(st & STAT_OBF))
            return -1;
        uint8_t sc = inb(I8042_DATA);
        if (st & STAT_AUX)
            continue; /* a mouse byte: nobody here wants it */
        int c = translate(sc);
        if (c >= 0)
            return c;
    }
}
