/* The little C library the CPL-3 program needs: mem and str functions (the compiler may emit
 * calls to memcpy/memset itself, so they must exist), a printf subset (%d %u %x %s %c with
 * width, zero padding and l/ll/z) and decimal parsing. String moves use `rep movsb/stosb`,
 * which run natively at CPL 3. */
#include "assets/guest/user/guest.h"

void *memcpy(void *dst, const void *src, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + n)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

char *strncpy_z(char *dst, const char *src, size_t size)
{
    size_t i = 0;
    if (!size)
        return dst;
    for (; i + 1 < size && src[i]; i++)
        dst[i] = src[i];
    dst[i] = 0;
    return dst;
}

bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* Output cursor for vsnprintf: counts everything, stores what fits. */
struct out {
    char *buf;
    size_t size, len;
};

static void out_char(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_padded(struct out *o, const char *s, size_t n, int width, bool left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left)
        while (fill-- > 0)
            out_char(o, pad);
    for (size_t i = 0; i < n; i++)
        out_char(o, s[i]);
    if (left)
        while (fill-- > 0)
            out_char(o, ' ');
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_char(&o, *fmt);
            continue;
        }
        fmt++;
        bool left = false;
        char pad = ' ';
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        int width = 0;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        int longs = 0;
        while (*fmt == 'l' || *fmt == 'z') {
            longs++;
            fmt++;
        }
        char num[24];
        size_t n = 0;
        switch (*fmt) {
        case 'c': {
            char c = (char)va_arg(ap, int);
            out_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            out_padded(&o, s, strlen(s), width, left, ' ');
            break;
        }
        case 'd':
        case 'u':
        case 'x': {
            uint64_t v;
            bool neg = false;
            if (*fmt == 'd') {
                int64_t sv = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
                neg = sv < 0;
                v = neg ? -(uint64_t)sv : (uint64_t)sv;
            } else {
                v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            }
            unsigned base = *fmt == 'x' ? 16 : 10;
            do {
                num[sizeof num - 1 - n++] = "0123456789abcdef"[v % base];
                v /= base;
            } while (v);
            if (neg) {
                if (pad == '0' && width > 0) {
                    out_char(&o, '-');
                    width--;
                } else {
                    num[sizeof num - 1 - n++] = '-';
                }
            }
            out_padded(&o, num + sizeof num - n, n, width, left, pad);
            break;
        }
        case '%':
            out_char(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            out_char(&o, '%');
            out_char(&o, *fmt);
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

void printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    console_write(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
