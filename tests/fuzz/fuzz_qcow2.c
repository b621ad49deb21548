/* qcow2 images: open what the bytes describe (read-write, as a VM's disk), read and write at
 * places the input picks, drop the backing file; a refusal is fine, a crash or a leak is not.
 * Relative backing file names in a fuzzed header resolve beside the image, in the run's own
 * folder. */
#include "core/storage/disk.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("image.qcow2", data, size);
    char err[1024];
    struct disk *d = disk_open_format(path, "qcow2", false, 0, err, sizeof(err));
    if (!d)
        return 0;
    uint64_t at = 0;
    for (size_t i = 0; i < 8 && i < size; i++)
        at = at << 8 | data[i];
    uint8_t buf[4096];
    uint64_t n = disk_size(d);
    if (n) {
        disk_read(d, at % n, buf, n - at % n < sizeof(buf) ? n - at % n : sizeof(buf));
        memset(buf, 0x5a, sizeof(buf));
        disk_write(d, (at >> 7) % n, buf, n - (at >> 7) % n < 512 ? n - (at >> 7) % n : 512);
        disk_flush(d);
    }
    disk_close(d);
    disk_set_backing(path, NULL, NULL);
    return 0;
}
