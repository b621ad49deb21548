/* Machine state files: a versioned, checksummed container of tagged records, used by suspend,
 * snapshots and revert. A record is (tag, instance, bytes): e.g. ('LAPI', vCPU 1, kvm_lapic_state)
 * or ('UART', 0, the serial model's fields). Readers look records up by tag and instance and
 * must check sizes: a truncated, corrupt or wrong-version file is refused as a whole before any
 * of it is applied. Each device saves and loads its own records (see devices.h). */
#ifndef VMWS_STATE_H
#define VMWS_STATE_H

#include <stddef.h>
#include <stdint.h>

#define STATE_FORMAT_VERSION 1
#define STATE_TAG(a, b, c, d)                                                                      \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

struct state_writer {
    uint8_t *buf;
    size_t len, cap;
    int error; /* first error (-ENOMEM); later puts are ignored */
};

struct state_record {
    uint32_t tag, instance;
    const uint8_t *data;
    uint64_t len;
};

struct state_reader {
    uint8_t *buf; /* whole file */
    size_t len;
    struct state_record *records;
    size_t nrecords;
};

void state_writer_init(struct state_writer *w);
void state_put(struct state_writer *w, uint32_t tag, uint32_t instance, const void *data,
               size_t len);
/* Serialises header + records into a malloc'd buffer (*OUT, *OUTLEN). Returns 0 or -errno. */
int state_writer_finish(struct state_writer *w, uint8_t **out, size_t *outlen);
/* finish + write PATH atomically (temp file, fsync, rename, fsync dir). */
int state_writer_save(struct state_writer *w, const char *path);
void state_writer_free(struct state_writer *w);

/* Parses a state image held in BUF (takes ownership of the malloc'd BUF, and frees it when it
 * refuses it). Returns 0 or -EINVAL with ERR saying what is wrong (bad magic, version, length,
 * checksum, record layout); after a failure R holds nothing (state_reader_free is harmless). */
int state_reader_parse(struct state_reader *r, uint8_t *buf, size_t len, char *err, size_t errlen);
int state_reader_load(struct state_reader *r, const char *path, char *err, size_t errlen);
const struct state_record *state_get(const struct state_reader *r, uint32_t tag, uint32_t instance);
/* Copies a record of exactly LEN bytes into DST; -ENOENT if absent, -EINVAL if sized wrong. */
int state_get_exact(const struct state_reader *r, uint32_t tag, uint32_t instance, void *dst,
                    size_t len);
void state_reader_free(struct state_reader *r);

/* Record versions: a device whose record layout changed writes the version it saved with
 * state_put_version() (a 'VERS' record whose instance is the record's tag); state_version()
 * reads it back, 1 for files written before versions existed. */
#define STATE_TAG_VERSION STATE_TAG('V', 'E', 'R', 'S')
void state_put_version(struct state_writer *w, uint32_t tag, uint32_t version);
uint32_t state_version(const struct state_reader *r, uint32_t tag);

#endif
