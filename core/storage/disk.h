/* Disk images behind one small interface: raw files and qcow2 (core/storage/qcow2.c), chosen by
 * probing the file's first bytes. Byte offsets and lengths may be anything inside the disk; reads
 * past a qcow2 backing file's end return zeroes. One mutex per disk, so any thread may call in.
 * Functions return 0 / -errno; open says why it failed in err. */
#ifndef VMWS_CORE_DISK_H
#define VMWS_CORE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct disk;

struct disk *disk_open(const char *path, bool read_only, char *err, size_t errlen);
/* format "raw", "qcow2" or NULL (probe); depth is the position in a backing chain (0 = top). */
struct disk *disk_open_format(const char *path, const char *format, bool read_only, unsigned depth,
                              char *err, size_t errlen);
/* A qcow2 image alone, read-only, without its backing file: what it lacks reads as zeroes. */
struct disk *disk_open_layer(const char *path, char *err, size_t errlen);
int disk_read(struct disk *d, uint64_t offset, void *buf, size_t len);
int disk_write(struct disk *d, uint64_t offset, const void *buf, size_t len);
int disk_flush(struct disk *d);
/* Both leave the range reading as zeroes (raw: punched holes, qcow2: zero clusters). */
int disk_discard(struct disk *d, uint64_t offset, uint64_t len);
int disk_write_zeroes(struct disk *d, uint64_t offset, uint64_t len);
uint64_t disk_size(const struct disk *d);
/* "raw" or "qcow2". */
const char *disk_format(const struct disk *d);
int disk_close(struct disk *d);
/* Copies FROM's content (what a guest reads) into TO, which must be at least as large; stretches
 * of zeroes are not written, so a sparse source stays sparse. */
int disk_copy(struct disk *from, struct disk *to);

/* Cluster size of a qcow2 image, 0 for raw (any granule maps it). */
uint32_t disk_granule(const struct disk *d);
/* One bit per GRANULE bytes (a power of two, at most disk_granule() when that is not 0) in
 * BITMAP (zeroed by the caller) where this image itself holds data rather than its backing
 * file: qcow2's allocated and zero clusters, a raw file's data extents. -EBUSY if a request
 * held the image for DISK_LOCK_WAIT_MS (storage that hangs). */
int disk_layer_map(struct disk *d, uint32_t granule, uint64_t *bitmap);
/* How long disk_layer_map waits for a request in flight on the image: -EBUSY after that. */
#define DISK_LOCK_WAIT_MS 1000
/* The backing file name stored in the image at PATH, as written ("" for none or raw). */
int disk_backing_name(const char *path, char *out, size_t len);
/* Makes the qcow2 image at PATH name BACKING (relative to PATH's folder; NULL: none) as its
 * backing file, of BACKING_FORMAT ("raw", "qcow2"; NULL: probed), without touching data
 * (`qemu-img rebase -u`). */
int disk_set_backing(const char *path, const char *backing, const char *backing_format);

/* The size a guest sees of the image at PATH (qcow2: its header's; raw: the file's), read
 * without opening it as a disk, so without its locks: for a running VM's image too. */
int disk_virtual_size(const char *path, uint64_t *size);
/* A shared base image's identity, "SIZE:SECONDS.NANOSECONDS" of its size and modification time:
 * an image rewritten in place, replaced or truncated gets another one. */
int disk_stamp(const char *path, char *out, size_t len);
/* 0 if the base image at PATH still has STAMP; else -ENOENT (missing) or -ESTALE (changed),
 * with a sentence for the user in err. */
int disk_base_check(const char *path, const char *stamp, char *err, size_t errlen);

/* A new qcow2 image (64 KiB clusters); backing may be NULL, its format NULL (probed). size 0
 * with a backing file takes its size. Refuses to overwrite an existing file. */
int disk_create_qcow2(const char *path, uint64_t size, const char *backing,
                      const char *backing_format);
/* A new sparse raw image of SIZE bytes (a multiple of 512) at PATH, mode 0600. Refuses to
 * overwrite an existing file. (`vmws create --disk` makes qcow2; raw is for tests and users.) */
int disk_create_raw(const char *path, uint64_t size);

#endif
