/* tree.json, the snapshot tree: any bytes load or are refused as corrupt. */
#include <sys/stat.h>

#include "core/snapshot/snapstore.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char snaps[128];
    snprintf(snaps, sizeof(snaps), "%s/snapshots", fuzz_dir());
    mkdir(snaps, 0700);
    fuzz_file("snapshots/tree.json", data, size);
    struct snap_tree t;
    char err[1024];
    if (snap_tree_load(&t, fuzz_dir(), "/vm/disk.qcow2", err, sizeof(err)) == 0)
        snap_tree_free(&t);
    return 0;
}
