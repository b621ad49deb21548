/* VMM diagnostics: timestamped lines on stderr (which `vmws start` points at the VM's vmm.log).
 * log_once() reports a recurring condition (an unknown port a guest keeps poking) a single time. */
#ifndef VMWS_LOG_H
#define VMWS_LOG_H

#include <stdbool.h>

void vmm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
