/* VMM diagnostics: timestamped lines on stderr (which `vmws start` points at the VM's vmm.log).
 * log_once() reports a recurring condition (an unknown port a guest keeps poking) a single time. */
#ifndef VMWS_LOG_H
#define VMWS_LOG_H

#include <stdbool.h>

void vmm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A line a guest can make the VMM repeat at will (a device it breaks and resets, a sleep state
 * it keeps asking for, a BAR it keeps misplacing): the first LOG_REPEAT_FREE times in full, then
 * only the 2^k-th time, with the count; so vmm.log grows by at most about 70 lines per call site
 * whatever the guest does. vmm_log_repeating() keeps the count per call site. */
#define LOG_REPEAT_FREE 5
struct log_limit {
    _Atomic unsigned long long n;
};
void vmm_log_limited(struct log_limit *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define vmm_log_repeating(...)                                                                     \
    do {                                                                                           \
        static struct log_limit vmm_log_limit_;                                                    \
        vmm_log_limited(&vmm_log_limit_, __VA_ARGS__);                                             \
    } while (0)

#endif
