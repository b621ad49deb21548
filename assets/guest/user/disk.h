/* The built-in guest's disk: a virtio-blk driver over virtio-pci (user/virtio_blk.c) and a
 * tiny file store on it (user/fs.c), with the shell commands built on them. */
#ifndef VMWS_GUEST_DISK_H
#define VMWS_GUEST_DISK_H

#include "assets/guest/user/guest.h"

#define DISK_SECTOR 512u
#define DISK_MAX_IO 65536u /* bytes per request (the driver's bounce buffer) */

/* --- virtio_blk.c --- */
/* Finds and initialises the device (once; again after it needed a reset). false with a
 * message printed if there is no usable disk. */
bool vblk_ready(void);
uint64_t vblk_sectors(void);
/* 0 on success; -1 after printing what failed (I/O error, timeout, device needs reset). */
int vblk_read(uint64_t sector, void *buf, uint32_t bytes);
int vblk_write(uint64_t sector, const void *buf, uint32_t bytes);
int vblk_flush(void);
/* disk info | stress N SEED | test-garbage [KIND] | bench MODE MIB [START [SPAN]] */
void cmd_disk(int argc, char **argv);

/* --- fs.c --- */
void cmd_ls(void);
void cmd_touch(int argc, char **argv);
void cmd_write(int argc, char **argv);
void cmd_cat(int argc, char **argv);
void cmd_rm(int argc, char **argv);
void cmd_sync(void);

#endif
