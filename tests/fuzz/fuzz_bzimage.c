/* The bzImage setup header: any bytes parse or are refused with a message. */
#include "core/boot/linuxboot.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bzimage_info info;
    char err[512];
    bzimage_parse(data, size, &info, err, sizeof(err));
    return 0;
}
