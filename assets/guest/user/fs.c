/* A minimal file store on the virtio-blk disk, for the shell's touch/write/cat/rm/ls/sync.
 * Fixed layout in 512-byte sectors, so a host can find a file's bytes in the raw image:
 *   sector 0        superblock: "VMWSFS01", then u32 version 1, entries 64, dir sector 1,
 *                   dir sectors 8, data sector 64, sectors per file 8 (little endian)
 *   sectors 1-8     directory: 64 entries of 64 bytes {char name[48]; u32 size; u32 used;
 *                   u64 reserved}
 *   sector 64 + 8i  file i's data, up to 4 KiB
 * A disk without the magic is formatted on first use. Writes go through to the device, data
 * before the directory; `sync` asks the device to flush. */
#include "assets/guest/user/disk.h"

#define FS_MAGIC "VMWSFS01"
#define FS_ENTRIES 64
#define FS_DIR_SECTOR 1
#define FS_DIR_SECTORS 8
#define FS_DATA_SECTOR 64
#define FS_FILE_SECTORS 8
#define FS_FILE_MAX (FS_FILE_SECTORS * DISK_SECTOR)
#define FS_NAME_MAX 47

struct fs_entry {
    char name[FS_NAME_MAX + 1];
    uint32_t size, used;
    uint64_t reserved;
};
_Static_assert(sizeof(struct fs_entry) == 64, "directory entry is 64 bytes");

static struct fs_entry dir[FS_ENTRIES];
static bool mounted;
static char filebuf[FS_FILE_MAX + 1];

static bool fs_mount(void)
{
    if (mounted && vblk_ready())
        return true;
    if (!vblk_ready())
        return false;
    uint8_t sb[DISK_SECTOR];
    if (vblk_read(0, sb, sizeof(sb)) < 0)
        return false;
    if (memcmp(sb, FS_MAGIC, 8) != 0) {
        if (vblk_sectors() < FS_DATA_SECTOR + FS_ENTRIES * FS_FILE_SECTORS) {
            printf("fs: the disk is too small for the file store (needs 288 KiB)\n");
            return false;
        }
        memset(dir, 0, sizeof(dir));
        if (vblk_write(FS_DIR_SECTOR, dir, sizeof(dir)) < 0)
            return false;
        memset(sb, 0, sizeof(sb));
        memcpy(sb, FS_MAGIC, 8);
        uint32_t fields[6] = {
            1, FS_ENTRIES, FS_DIR_SECTOR, FS_DIR_SECTORS, FS_DATA_SECTOR, FS_FILE_SECTORS};
        memcpy(sb + 8, fields, sizeof(fields));
        if (vblk_write(0, sb, sizeof(sb)) < 0 || vblk_flush() < 0)
            return false;
        printf("fs: formatted the disk (%u files of up to %u bytes)\n", FS_ENTRIES, FS_FILE_MAX);
    } else if (vblk_read(FS_DIR_SECTOR, dir, sizeof(dir)) < 0) {
        return false;
    }
    for (unsigned i = 0; i < FS_ENTRIES; i++)
        dir[i].name[FS_NAME_MAX] = 0;
    mounted = true;
    return true;
}

static int dir_save(unsigned i)
{
    unsigned sector = i * sizeof(struct fs_entry) / DISK_SECTOR;
    return vblk_write(FS_DIR_SECTOR + sector, (uint8_t *)dir + sector * DISK_SECTOR, DISK_SECTOR);
}

static int lookup(const char *name)
{
    for (unsigned i = 0; i < FS_ENTRIES; i++)
        if (dir[i].used && !strcmp(dir[i].name, name))
            return (int)i;
    return -1;
}

static bool name_ok(const char *cmd, const char *name)
{
    if (strlen(name) > FS_NAME_MAX) {
        printf("%s: %s: names are at most %u characters\n", cmd, name, FS_NAME_MAX);
        return false;
    }
    return true;
}

/* The entry for NAME, created empty if missing; -1 if the directory is full or on error. */
static int create(const char *cmd, const char *name)
{
    int i = lookup(name);
    if (i >= 0)
        return i;
    for (unsigned k = 0; k < FS_ENTRIES; k++) {
        if (dir[k].used)
            continue;
        memset(&dir[k], 0, sizeof(dir[k]));
        strncpy_z(dir[k].name, name, sizeof(dir[k].name));
        dir[k].used = 1;
        if (dir_save(k) < 0) {
            dir[k].used = 0;
            return -1;
        }
        return (int)k;
    }
    printf("%s: %s: the file store is full (%u files)\n", cmd, name, FS_ENTRIES);
    return -1;
}

void cmd_ls(void)
{
    if (!fs_mount())
        return;
    unsigned n = 0;
    for (unsigned i = 0; i < FS_ENTRIES; i++) {
        if (!dir[i].used)
            continue;
        printf("%-24s %u\n", dir[i].name, dir[i].size);
        n++;
    }
    printf("%u file%s\n", n, n == 1 ? "" : "s");
}

void cmd_touch(int argc, char **argv)
{
    if (argc != 2) {
        printf("usage: touch NAME\n");
        return;
    }
    if (name_ok("touch", argv[1]) && fs_mount())
        create("touch", argv[1]);
}

void cmd_write(int argc, char **argv)
{
    if (argc < 3) {
        printf("usage: write NAME TEXT\n");
        return;
    }
    if (!name_ok("write", argv[1]) || !fs_mount())
        return;
    size_t len = 0;
    for (int a = 2; a < argc; a++) { /* the words, one space apart, and a newline */
        size_t n = strlen(argv[a]);
        if (len + n + 2 > FS_FILE_MAX) {
            printf("write: %s: text longer than %u bytes\n", argv[1], FS_FILE_MAX - 1);
            return;
        }
        if (a > 2)
            filebuf[len++] = ' ';
        memcpy(filebuf + len, argv[a], n);
        len += n;
    }
    filebuf[len++] = '\n';
    int i = create("write", argv[1]);
    if (i < 0)
        return;
    size_t padded = (len + DISK_SECTOR - 1) / DISK_SECTOR * DISK_SECTOR;
    memset(filebuf + len, 0, padded - len);
    if (vblk_write(FS_DATA_SECTOR + (uint64_t)i * FS_FILE_SECTORS, filebuf, (uint32_t)padded) < 0)
        return;
    dir[i].size = (uint32_t)len;
    dir_save((unsigned)i);
}

void cmd_cat(int argc, char **argv)
{
    if (argc != 2) {
        printf("usage: cat NAME\n");
        return;
    }
    if (!fs_mount())
        return;
    int i = lookup(argv[1]);
    if (i < 0) {
        printf("cat: %s: no such file\n", argv[1]);
        return;
    }
    uint32_t size = dir[i].size > FS_FILE_MAX ? FS_FILE_MAX : dir[i].size;
    if (!size)
        return;
    uint32_t padded = (size + DISK_SECTOR - 1) / DISK_SECTOR * DISK_SECTOR;
    if (vblk_read(FS_DATA_SECTOR + (uint64_t)i * FS_FILE_SECTORS, filebuf, padded) < 0)
        return;
    console_write(filebuf, size);
}

void cmd_rm(int argc, char **argv)
{
    if (argc != 2) {
        printf("usage: rm NAME\n");
        return;
    }
    if (!fs_mount())
        return;
    int i = lookup(argv[1]);
    if (i < 0) {
        printf("rm: %s: no such file\n", argv[1]);
        return;
    }
    memset(&dir[i], 0, sizeof(dir[i]));
    dir_save((unsigned)i);
}

void cmd_sync(void)
{
    if (fs_mount() && vblk_flush() == 0)
        printf("sync: done\n");
}
