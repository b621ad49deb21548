/* See crashpoint.h. */
#include "core/util/crashpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

void stall_point(const char *point)
{
    /* "POINT:FILE": wait while FILE exists, polling every 10 ms. */
    const char *at = getenv("VMWS_STALL_AT");
    size_t len = strlen(point);
    if (!at || strncmp(at, point, len) != 0 || at[len] != ':' || !at[len + 1])
        return;
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (access(at + len + 1, F_OK) == 0)
        nanosleep(&tick, NULL);
}
