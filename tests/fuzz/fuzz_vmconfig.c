/* vm.conf: any bytes load or are refused with a message, never more. */
#include "core/config/vmconfig.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vm_config cfg;
    char err[1024];
    vmconfig_defaults(&cfg, "fuzz");
    if (vmconfig_load(fuzz_file("vm.conf", data, size), &cfg, err, sizeof(err)) == 0)
        vmconfig_save(fuzz_file("saved.conf", NULL, 0), &cfg); /* what loads also saves */
    return 0;
}
