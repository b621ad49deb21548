/* qcow2 version 3 images: read, write, create (QEMU's docs/interop/qcow2.txt).
 * The one idea: a crash must never leave an image `qemu-img check` calls corrupt, so every
 * allocation raises (and flushes) a refcount before anything points at the cluster, and every
 * free removes (and flushes) the pointer before the refcount drops. At worst clusters leak.
 * All functions return 0 / -errno; open and create say why in `err`. Not thread-safe: the
 * caller (core/storage/disk.c) holds one lock per image. */
#ifndef VMWS_CORE_QCOW2_H
#define VMWS_CORE_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qcow2;

#define QCOW2_MIN_CLUSTER_SIZE 512u
#define QCOW2_MAX_CLUSTER_SIZE (2u << 20)
#define QCOW2_DEFAULT_CLUSTER_SIZE (64u << 10)
/* Backing chains longer than this are refused (and so are loops). */
#define QCOW2_MAX_CHAIN_DEPTH 16

/* True when buf (at least 4 bytes) starts with the qcow2 magic. */
bool qcow2_probe(const void *buf, size_t len);

/* Opens path; its backing file (if any) is opened read-only through core/storage/disk.c. depth
 * counts the images above this one in the chain (0 for the top); QCOW2_ALONE opens the image
 * without its backing file (what it lacks reads as zeroes). */
#define QCOW2_ALONE 0xffffffffu
struct qcow2 *qcow2_open(const char *path, bool read_only, unsigned depth, char *err,
                         size_t errlen);
int qcow2_read(struct qcow2 *q, uint64_t offset, void *buf, size_t len);
int qcow2_write(struct qcow2 *q, uint64_t offset, const void *buf, size_t len);
/* Both leave the range reading as zeroes; whole clusters are released (zero flag). */
int qcow2_write_zeroes(struct qcow2 *q, uint64_t offset, uint64_t len);
int qcow2_discard(struct qcow2 *q, uint64_t offset, uint64_t len);
/* Metadata is written through, so flush is fdatasync. */
int qcow2_flush(struct qcow2 *q);
uint64_t qcow2_size(const struct qcow2 *q);
uint32_t qcow2_cluster_size(const struct qcow2 *q);
/* Returns unused reserved clusters, flushes, closes; returns the first error met. */
int qcow2_close(struct qcow2 *q);

/* Creates a new image (refuses to overwrite: -EEXIST). size is rounded up to 512 bytes; 0 with a
 * backing file takes the backing file's size. backing_format is "qcow2", "raw" or NULL (probe the
 * backing file). A relative backing path is stored as given and resolved against the new image's
 * folder. */
int qcow2_create(const char *path, uint64_t size, uint32_t cluster_size, const char *backing_path,
                 const char *backing_format);

/* Sets one bit per GRANULE bytes (a power of two, at most the cluster size) in BITMAP (zeroed by
 * the caller, one bit per granule of the disk) where this image itself holds the data: an
 * allocated, compressed or zero cluster. Unset bits read from the backing file. */
int qcow2_layer_map(struct qcow2 *q, uint32_t granule, uint64_t *bitmap);
/* The backing file name stored in the (closed) image at PATH; "" when it has none. */
int qcow2_backing_name(const char *path, char *out, size_t len);
/* Points the (closed) image at PATH to another backing file (NULL: none), resolved like
 * qcow2_create's; the data is untouched, so the caller makes sure the new backing file reads
 * the same wherever this image lacks clusters (`qemu-img rebase -u`). */
int qcow2_set_backing(const char *path, const char *backing_path, const char *backing_format);

/* Test hook for crash simulation: called before every write (with its bytes and offset), every
 * change of the file's size (offset = the new size) and every fdatasync the image does, so a
 * test can rebuild the file as any crash would leave it. */
enum qcow2_io_kind { QCOW2_IO_WRITE, QCOW2_IO_EXTEND, QCOW2_IO_SYNC };
typedef void (*qcow2_io_hook_fn)(void *opaque, enum qcow2_io_kind kind, const void *buf, size_t len,
                                 uint64_t offset);
void qcow2_set_io_hook(struct qcow2 *q, qcow2_io_hook_fn hook, void *opaque);

#endif
