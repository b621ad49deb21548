/* See crashpoint.h. */
#include "core/util/crashpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

void crash_point(const char *point)
{
    /* "POINT" or "POINT:N" (the Nth time the point is reached). */
    static int reached;
    const char *at = getenv("VMWS_CRASH_AT");
    size_t len = strlen(point);
    if (!at || strncmp(at, point, len) != 0 || (at[len] != '\0' && at[len] != ':'))
        return;
    int nth = at[len] == ':' ? atoi(at + len + 1) : 1;
    if (++reached == nth)
        raise(SIGKILL);
}
