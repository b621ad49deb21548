/* Error messages into the caller's buffer (see errfmt.h). */
#include "core/util/errfmt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int err_set_errno(char *err, size_t errlen, const char *fmt, ...)
{
    int e = errno;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, ": %s", strerror(e));
    }
    errno = e;
    return -e;
}
