/* Timestamped VMM log lines on stderr; one write() per line so threads don't interleave. */
#include "core/util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void vlog(const char *fmt, va_list ap, unsigned long long repeat)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ ", ts.tv_nsec / 1000000);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    if (repeat >= LOG_REPEAT_FREE) {
        m = snprintf(line + n, sizeof(line) - (size_t)n - 1,
                     " [%llu times so far; after the first %d only the 2^k-th time is logged]",
                     repeat, LOG_REPEAT_FREE);
        n += m > 0 ? m : 0;
        if (n > (int)sizeof(line) - 2)
            n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void vmm_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap, 0);
    va_end(ap);
}

void vmm_log_limited(struct log_limit *l, const char *fmt, ...)
{
    unsigned long long n = atomic_fetch_add(&l->n, 1) + 1;
    if (n > LOG_REPEAT_FREE && (n & (n - 1)) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap, n);
    va_end(ap);
}
