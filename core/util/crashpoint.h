/* A test hook for crash safety: if $VMWS_CRASH_AT is "POINT" or "POINT:N", the process dies by
 * SIGKILL the first (or Nth) time it reaches crash_point("POINT"). The snapshot and disk code
 * name a point after each step whose interruption must leave files a later run recovers from
 * (tests/e2e/test_snapshot.c kills the VMM at each). Without the variable it costs one getenv(). */
#ifndef VMWS_CRASHPOINT_H
#define VMWS_CRASHPOINT_H

void crash_point(const char *point);

#endif
