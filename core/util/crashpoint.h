/* Test hooks for crash safety and liveness. crash_point: if $VMWS_CRASH_AT is "POINT" or
 * "POINT:N", the process dies by SIGKILL the first (or Nth) time it reaches crash_point("POINT").
 * The snapshot and disk code name a point after each step whose interruption must leave files a
 * later run recovers from (tests/e2e/test_snapshot.c kills the VMM at each). stall_point: if
 * $VMWS_STALL_AT is "POINT:FILE", the calling thread blocks at stall_point("POINT") for as long
 * as FILE exists - storage that hangs, for tests/e2e/test_liveness.c. Without the variables each
 * costs one getenv(). */
#ifndef VMWS_CRASHPOINT_H
#define VMWS_CRASHPOINT_H

void crash_point(const char *point);
void stall_point(const char *point);

#endif
