/* A deadline for pthread_cond_timedwait on a condition variable whose clock is CLOCK_MONOTONIC
 * (every timed wait in vmws: a wall-clock step must not shorten or stretch a bound). */
#ifndef VMWS_DEADLINE_H
#define VMWS_DEADLINE_H

#include <time.h>

/* The moment MS milliseconds from now on CLOCK_MONOTONIC. */
static inline struct timespec deadline_in_ms(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

#endif
