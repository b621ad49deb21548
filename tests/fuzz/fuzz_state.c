/* The machine-state container (suspend and snapshot states): parse, then read every record the
 * way the loaders do. */
#include "core/util/state.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct state_reader r;
    char err[512];
    if (state_reader_parse(&r, buf, size, err, sizeof(err)) == 0) { /* r owns buf */
        uint8_t small[64];
        for (uint32_t tag = 0; tag < 4; tag++)
            state_get_exact(&r, STATE_TAG('R', 'E', 'G', 'S') + tag, 0, small, sizeof(small));
        state_version(&r, STATE_TAG('A', 'C', 'P', 'M'));
        state_reader_free(&r);
    }
    return 0;
}
