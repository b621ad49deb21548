/* Shared by the libFuzzer harnesses (tests/fuzz/, `make fuzz`): each parser of untrusted bytes
 * gets its input as the file or directory it reads in real use, in a private temp folder. */
#ifndef VMWS_FUZZ_H
#define VMWS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A folder of our own for the whole run (removed by the OS's tmp cleaning, not by us: the
 * harness may be killed at any input). */
static inline const char *fuzz_dir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/vmws-fuzz.XXXXXX");
        if (!mkdtemp(dir))
            abort();
    }
    return dir;
}

/* Writes DATA to DIR/NAME and returns the path (a static buffer). */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    return path;
}

#endif
