/* File I/O for vmws: whole-buffer reads and writes, and atomic replacement for the files that must
 * survive a crash (vm.conf, the snapshot tree, machine state): written under a temporary name,
 * fsynced, renamed over the real name, and the directory fsynced, so a reader finds the old file
 * or the new one, never a torn one. */
#ifndef VMWS_FSUTIL_H
#define VMWS_FSUTIL_H

#include <stddef.h>

/* Creates PATH.tmp-XXXXXX (a new name, mode 0600) for writing; its name goes to TMP. Returns
 * an fd or -errno. */
int fs_tmp_create(const char *path, char *tmp, size_t tmplen);
/* Finishes what fs_tmp_create started: unless ERROR (a negative errno from writing) is set,
 * fsyncs and closes FD, renames TMP to PATH and fsyncs the directory. On any failure TMP is
 * removed. Returns 0 or -errno. */
int fs_tmp_commit(int fd, const char *tmp, const char *path, int error);
/* Writes LEN bytes at OFFSET, retrying short writes. Returns 0 or -errno. */
int fs_pwrite_all(int fd, const void *buf, size_t len, unsigned long long offset);
/* Reads LEN bytes at OFFSET, retrying short reads; what lies past the end of the file reads as
 * zeroes, like a sparse tail. Returns 0 or -errno. */
int fs_pread_all(int fd, void *buf, size_t len, unsigned long long offset);
/* The whole of BUF as PATH, atomically. Returns 0 or -errno. */
int fs_write_atomic(const char *path, const void *buf, size_t len);
/* fsyncs the directory that holds PATH. Returns 0 or -errno. */
int fs_fsync_dir_of(const char *path);

#endif
