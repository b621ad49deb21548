/* vm.conf: load, validate and save a VM's configuration (INI, parsed by inih).
 * The one idea: every value is checked where it is read, and the first problem is reported
 * as "PATH:LINE: what is wrong (expected ...)". We feed inih through our own line reader so
 * the handler knows the line number, and so a line longer than inih's fixed buffer is an
 * error instead of being silently split in two. Long `append` values may continue on
 * indented lines (joined with a space); vmconfig_save writes them that way. */
#include "core/config/vmconfig.h"

#include "core/util/crashpoint.h"
#include "core/util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1ULL << 20)
#define VM_MEMORY_MIN (16 * MIB)
#define VM_MEMORY_MAX (1ULL << 40)
#define VM_MEMORY_ALIGN (2 * MIB)
/* inih reads lines into a fixed buffer of INI_MAX_LINE bytes (including the NUL). */
#define CONF_LINE_MAX (INI_MAX_LINE - 2)

static const char *const backend_names[] = {
    [MEM_BACKEND_FILE] = "file",
    [MEM_BACKEND_SHM] = "shm",
    [MEM_BACKEND_ANON] = "anon",
    [MEM_BACKEND_HUGETLBFS] = "hugetlbfs",
};

void vmconfig_defaults(struct vm_config *cfg, const char *name)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->name, sizeof(cfg->name), "%s", name ? name : "");
    cfg->memory_bytes = 1ULL << 30;
    cfg->cpus = 1;
    cfg->backend = MEM_BACKEND_FILE;
    cfg->memory_huge_pages = true;
    snprintf(cfg->append, sizeof(cfg->append), "console=ttyS0");
    vmconfig_display_defaults(&cfg->display);
    vmconfig_audio_defaults(&cfg->audio);
    vmconfig_net_defaults(&cfg->net, cfg->name);
    vmconfig_balloon_defaults(&cfg->balloon);
    vmconfig_memory_defaults(&cfg->memory);
}

const char *mem_backend_name(enum mem_backend b)
{
    if ((unsigned)b < sizeof(backend_names) / sizeof(backend_names[0]))
        return backend_names[b];
    return "unknown";
}

int mem_backend_parse(const char *s, enum mem_backend *out)
{
    for (size_t i = 0; i < sizeof(backend_names) / sizeof(backend_names[0]); i++) {
        if (strcmp(s, backend_names[i]) == 0) {
            *out = (enum mem_backend)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool vm_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= VM_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Binary units: K, M, G, T with an optional "iB" or "B"; case-insensitive; plain bytes too. */
int parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    case 'b':
    case 'B':
        break;
    case '\0':
        break;
    default:
        return -EINVAL;
    }
    if (shift && (end[0] == 'i' || end[0] == 'I') && (end[1] == 'b' || end[1] == 'B'))
        end += 2;
    else if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------ */

struct conf_parse {
    const char *path;
    FILE *f;
    char *linebuf; /* getline() buffer */
    size_t linecap;
    int lineno;        /* line most recently handed to inih */
    bool continuation; /* that line starts with whitespace (a multi-line value) */
    struct vm_config *cfg;
    const char *dir_name; /* basename of the directory holding the file, or NULL */
    int err_line;         /* first line with a problem we diagnosed, 0 = none */
    char err[512];
    unsigned seen;                        /* bitmask of keys already set, to catch duplicates */
    char last_section[64], last_name[64]; /* the previous handler call's key */
    size_t append_len;
};

static void conf_error(struct conf_parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conf_error(struct conf_parse *p, int line, const char *fmt, ...)
{
    if (p->err_line && p->err_line <= line)
        return;
    p->err_line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof(p->err), fmt, ap);
    va_end(ap);
}

/* fgets() replacement for inih: counts lines and rejects lines inih would split. */
static char *conf_reader(char *str, int num, void *stream)
{
    struct conf_parse *p = stream;
    ssize_t n = getline(&p->linebuf, &p->linecap, p->f);
    if (n < 0)
        return NULL;
    p->lineno++;
    p->continuation = n > 0 && (p->linebuf[0] == ' ' || p->linebuf[0] == '\t');
    if (n > num - 1) {
        size_t len = (size_t)n;
        if (len && p->linebuf[len - 1] == '\n')
            len--;
        conf_error(p, p->lineno,
                   "line too long (%zu characters, at most %d fit; continue a long append "
                   "value on indented lines)",
                   len, num - 2);
        snprintf(str, (size_t)num, "\n");
        return str;
    }
    memcpy(str, p->linebuf, (size_t)n + 1);
    return str;
}

enum conf_key {
    KEY_NAME,
    KEY_MEMORY,
    KEY_CPUS,
    KEY_BACKEND,
    KEY_SHARING,
    KEY_HUGE,
    KEY_KERNEL,
    KEY_INITRD,
    KEY_APPEND,
};

struct conf_key_def {
    const char *section, *name;
    enum conf_key key;
};

static const struct conf_key_def conf_keys[] = {
    {"vm", "name", KEY_NAME},       {"vm", "memory", KEY_MEMORY},
    {"vm", "cpus", KEY_CPUS},       {"vm", "memory_backend", KEY_BACKEND},
    {"vm", "memory_sharing", KEY_SHARING}, {"vm", "memory_huge_pages", KEY_HUGE},
    {"boot", "kernel", KEY_KERNEL}, {"boot", "initrd", KEY_INITRD},
    {"boot", "append", KEY_APPEND},
};

static int conf_set_path(struct conf_parse *p, char *dst, const char *key, const char *value)
{
    if (strlen(value) >= PATH_MAX) {
        conf_error(p, p->lineno, "%s path too long (expected at most %d characters)", key,
                   PATH_MAX - 1);
        return 0;
    }
    if (value[0] && value[0] != '/') {
        conf_error(p, p->lineno, "%s '%s' is not an absolute path (expected /path/to/file%s)", key,
                   value, strcmp(key, "kernel") == 0 ? " or 'builtin'" : " or nothing");
        return 0;
    }
    strcpy(dst, value);
    return 1;
}

static int conf_handler(void *user, const char *section, const char *name, const char *value)
{
    struct conf_parse *p = user;
    struct vm_config *cfg = p->cfg;
    const struct conf_key_def *def = NULL;
    for (size_t i = 0; i < sizeof(conf_keys) / sizeof(conf_keys[0]); i++) {
        if (strcmp(conf_keys[i].section, section) == 0 && strcmp(conf_keys[i].name, name) == 0)
            def = &conf_keys[i];
    }
    /* inih passes an indented line after a key as a continuation of that key. */
    bool continues =
        p->continuation && strcmp(section, p->last_section) == 0 && strcmp(name, p->last_name) == 0;
    snprintf(p->last_section, sizeof(p->last_section), "%s", section);
    snprintf(p->last_name, sizeof(p->last_name), "%s", name);
    if (!def && strcmp(section, "display") == 0) {
        char derr[256];
        if (vmconfig_display_key(&cfg->display, name, value, derr, sizeof(derr)))
            return 1;
        conf_error(p, p->lineno, "%s", derr);
        return 0;
    }
    if (!def && strcmp(section, "audio") == 0) {
        char aerr[256];
        if (vmconfig_audio_key(&cfg->audio, name, value, aerr, sizeof(aerr)))
            return 1;
        conf_error(p, p->lineno, "%s", aerr);
        return 0;
    }
    if (!def && strcmp(section, "net") == 0) {
        char nerr[256];
        if (continues) {
            conf_error(p, p->lineno,
                       "'%s' does not continue on an indented line (expected one "
                       "line '%s = VALUE' per value)",
                       name, name);
            return 0;
        }
        if (vmconfig_net_key(&cfg->net, name, value, nerr, sizeof(nerr)))
            return 1;
        conf_error(p, p->lineno, "%s", nerr);
        return 0;
    }
    if (!def && strcmp(section, "balloon") == 0) {
        char berr[256];
        if (vmconfig_balloon_key(&cfg->balloon, name, value, berr, sizeof(berr)))
            return 1;
        conf_error(p, p->lineno, "%s", berr);
        return 0;
    }
    if (!def && strcmp(section, "memory") == 0) {
        char merr[256];
        if (vmconfig_memory_key(&cfg->memory, name, value, merr, sizeof(merr)))
            return 1;
        conf_error(p, p->lineno, "%s", merr);
        return 0;
    }
    if (!def && strcmp(section, "disk") == 0) {
        if (strcmp(name, "format") == 0) {
            if (strcmp(value, "raw") && strcmp(value, "qcow2")) {
                conf_error(p, p->lineno, "[disk] format '%s' (expected raw or qcow2)", value);
                return 0;
            }
            strcpy(cfg->disk.format, value);
            return 1;
        }
        if (strcmp(name, "base") == 0) {
            if (value[0] != '/' || strlen(value) >= sizeof(cfg->disk.base) || strstr(value, "..")) {
                conf_error(p, p->lineno,
                           "[disk] base '%s' is not usable (expected an absolute path without "
                           "'..')",
                           value);
                return 0;
            }
            strcpy(cfg->disk.base, value);
            return 1;
        }
        if (strcmp(name, "base_stamp") == 0) {
            if (strlen(value) >= sizeof(cfg->disk.base_stamp)) {
                conf_error(p, p->lineno, "[disk] base_stamp '%s' is too long", value);
                return 0;
            }
            strcpy(cfg->disk.base_stamp, value);
            return 1;
        }
        if (strcmp(name, "path") != 0) {
            conf_error(p, p->lineno,
                       "unknown key '%s' in [disk] (expected path, format, base or base_stamp)",
                       name);
            return 0;
        }
        if (!value[0] || strlen(value) >= sizeof(cfg->disk.path) || strstr(value, "..")) {
            conf_error(p, p->lineno,
                       "[disk] path '%s' is not usable (expected a file name in the VM's "
                       "directory, like disk.qcow2, or an absolute path without '..')",
                       value);
            return 0;
        }
        strcpy(cfg->disk.path, value);
        return 1;
    }
    if (!def) {
        if (strcmp(section, "vm") && strcmp(section, "boot"))
            conf_error(p, p->lineno,
                       "unknown section [%s] (expected [vm], [boot], [display], [audio], "
                       "[disk], [net], [balloon] or [memory])",
                       section);
        else if (strcmp(section, "vm") == 0)
            conf_error(p, p->lineno,
                       "unknown key '%s' in [vm] (expected name, memory, cpus, "
                       "memory_backend, memory_sharing or memory_huge_pages)",
                       name);
        else
            conf_error(p, p->lineno,
                       "unknown key '%s' in [boot] (expected kernel, initrd or append)", name);
        return 0;
    }
    if (continues && def->key == KEY_APPEND) {
        /* An indented line continues the append value. */
        size_t add = strlen(value);
        if (p->append_len + 1 + add >= sizeof(cfg->append)) {
            conf_error(p, p->lineno, "append too long (expected at most %zu characters)",
                       sizeof(cfg->append) - 1);
            return 0;
        }
        if (p->append_len && add)
            cfg->append[p->append_len++] = ' ';
        memcpy(cfg->append + p->append_len, value, add + 1);
        p->append_len += add;
        return 1;
    }
    if (continues) {
        conf_error(p, p->lineno,
                   "'%s' does not continue on an indented line (expected one line "
                   "'%s = VALUE')",
                   name, name);
        return 0;
    }
    if (p->seen & (1u << def->key)) {
        conf_error(p, p->lineno, "'%s' is set twice in [%s] (expected it once)", name, section);
        return 0;
    }
    p->seen |= 1u << def->key;

    switch (def->key) {
    case KEY_NAME:
        if (!vm_name_valid(value)) {
            conf_error(p, p->lineno,
                       "bad name '%s' (expected 1-63 of A-Z a-z 0-9 . _ -, not starting "
                       "with . or -)",
                       value);
            return 0;
        }
        if (p->dir_name && strcmp(p->dir_name, value) != 0) {
            conf_error(p, p->lineno,
                       "name '%s' does not match the VM's directory '%s' (expected "
                       "name = %s)",
                       value, p->dir_name, p->dir_name);
            return 0;
        }
        snprintf(cfg->name, sizeof(cfg->name), "%s", value);
        return 1;
    case KEY_MEMORY: {
        uint64_t v;
        if (parse_size(value, &v) < 0) {
            conf_error(p, p->lineno,
                       "bad memory size '%s' (expected a size like 512M, 2G or 1073741824)", value);
            return 0;
        }
        if (v < VM_MEMORY_MIN || v > VM_MEMORY_MAX || v % VM_MEMORY_ALIGN) {
            conf_error(p, p->lineno, "bad memory size '%s' (expected 16M to 1T, a multiple of 2M)",
                       value);
            return 0;
        }
        cfg->memory_bytes = v;
        return 1;
    }
    case KEY_CPUS: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < 1 || v > VM_CPUS_MAX) {
            conf_error(p, p->lineno, "bad cpus '%s' (expected a number from 1 to %d)", value,
                       VM_CPUS_MAX);
            return 0;
        }
        cfg->cpus = (unsigned)v;
        return 1;
    }
    case KEY_BACKEND:
        if (mem_backend_parse(value, &cfg->backend) < 0) {
            conf_error(p, p->lineno,
                       "bad memory_backend '%s' (expected file, shm, anon or hugetlbfs)", value);
            return 0;
        }
        return 1;
    case KEY_SHARING:
    case KEY_HUGE:
        if (vmconfig_parse_bool(value, def->key == KEY_SHARING ? &cfg->memory_sharing
                                                               : &cfg->memory_huge_pages) < 0) {
            conf_error(p, p->lineno, "bad %s '%s' (expected yes or no)", name, value);
            return 0;
        }
        return 1;
    case KEY_KERNEL:
        if (strcmp(value, "builtin") == 0 || value[0] == '\0') {
            cfg->kernel[0] = '\0';
            return 1;
        }
        return conf_set_path(p, cfg->kernel, "kernel", value);
    case KEY_INITRD:
        return conf_set_path(p, cfg->initrd, "initrd", value);
    case KEY_APPEND:
        if (strlen(value) >= sizeof(cfg->append)) {
            conf_error(p, p->lineno, "append too long (expected at most %zu characters)",
                       sizeof(cfg->append) - 1);
            return 0;
        }
        strcpy(cfg->append, value);
        p->append_len = strlen(value);
        return 1;
    }
    return 0;
}

int vmconfig_load(const char *path, struct vm_config *cfg, char *err, size_t errlen)
{
    struct conf_parse p = {.path = path, .cfg = cfg};
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    char *dir = dirname(dirbuf);
    char *base = basename(dir);
    char dir_name[VM_NAME_MAX] = "";
    if (vm_name_valid(base)) {
        snprintf(dir_name, sizeof(dir_name), "%s", base);
        p.dir_name = dir_name;
        if (!cfg->name[0] || strcmp(cfg->name, dir_name) != 0)
            snprintf(cfg->name, sizeof(cfg->name), "%s", dir_name);
    }

    p.f = fopen(path, "re");
    if (!p.f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(conf_reader, &p, conf_handler, &p);
    fclose(p.f);
    free(p.linebuf);
    if (rc == -2) {
        snprintf(err, errlen, "%s: out of memory while parsing", path);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot be read", path);
        return -1;
    }
    if (rc > 0 && (!p.err_line || rc < p.err_line)) {
        snprintf(err, errlen,
                 "%s:%d: cannot parse this line (expected '[section]', 'key = value' or a "
                 "# comment)",
                 path, rc);
        return -1;
    }
    if (p.err_line) {
        snprintf(err, errlen, "%s:%d: %s", path, p.err_line, p.err);
        return -1;
    }
    if (!vm_name_valid(cfg->name)) {
        snprintf(err, errlen, "%s: no valid VM name (expected name = NAME in [vm])", path);
        return -1;
    }
    if (!cfg->net.mac_set) { /* the name's MAC, whatever name the defaults were made with */
        struct vm_net_config d;
        vmconfig_net_defaults(&d, cfg->name);
        memcpy(cfg->net.mac, d.mac, sizeof(d.mac));
    }
    char merr[256];
    if (vmconfig_memory_check(&cfg->memory, cfg->memory_bytes, merr, sizeof(merr)) < 0) {
        snprintf(err, errlen, "%s: %s", path, merr);
        return -1;
    }
    if (cfg->initrd[0] && !cfg->kernel[0]) {
        snprintf(err, errlen,
                 "%s: initrd is set but kernel is the built-in guest (expected kernel = "
                 "/path/to/bzImage, or no initrd)",
                 path);
        return -1;
    }
    return 0;
}

/* ---- saving ------------------------------------------------------------------------------- */

/* Writes "append = ..." wrapped at spaces so that no line exceeds inih's buffer. */
static int write_append(FILE *f, const char *append)
{
    const char *prefix = "append = ";
    size_t room = CONF_LINE_MAX - strlen(prefix);
    const char *s = append;
    bool first = true;
    do {
        size_t n = strlen(s);
        if (n > room) {
            size_t cut = room;
            while (cut > 0 && s[cut] != ' ')
                cut--;
            if (cut == 0)
                return -E2BIG; /* one word longer than a line */
            n = cut;
        }
        fprintf(f, "%s%.*s\n", first ? prefix : "    ", (int)n, s);
        s += n;
        while (*s == ' ')
            s++;
        first = false;
        room = CONF_LINE_MAX - 4;
    } while (*s);
    return 0;
}

int vmconfig_save(const char *path, const struct vm_config *cfg)
{
    if (!vm_name_valid(cfg->name) || cfg->cpus < 1 || cfg->cpus > VM_CPUS_MAX)
        return -EINVAL;
    if (strlen(cfg->kernel) > CONF_LINE_MAX - 9 || strlen(cfg->initrd) > CONF_LINE_MAX - 9)
        return -ENAMETOOLONG;
    if (strpbrk(cfg->kernel, "\n;") || strpbrk(cfg->initrd, "\n;") || strchr(cfg->append, '\n'))
        return -EINVAL;

    char tmp[PATH_MAX];
    int fd = fs_tmp_create(path, tmp, sizeof(tmp));
    if (fd < 0)
        return fd;
    FILE *f = fdopen(dup(fd), "w");
    if (!f)
        return fs_tmp_commit(fd, tmp, path, -errno);
    fprintf(f, "# vmws VM configuration (edit while the VM is off)\n");
    fprintf(f, "[vm]\n");
    fprintf(f, "name = %s\n", cfg->name);
    uint64_t m = cfg->memory_bytes;
    if (m && m % (1ULL << 30) == 0)
        fprintf(f, "memory = %" PRIu64 "G\n", m >> 30);
    else if (m && m % MIB == 0)
        fprintf(f, "memory = %" PRIu64 "M\n", m >> 20);
    else
        fprintf(f, "memory = %" PRIu64 "\n", m);
    fprintf(f, "cpus = %u\n", cfg->cpus);
    fprintf(f, "memory_backend = %s\n", mem_backend_name(cfg->backend));
    fprintf(f, "memory_sharing = %s\n", cfg->memory_sharing ? "yes" : "no");
    fprintf(f, "memory_huge_pages = %s\n", cfg->memory_huge_pages ? "yes" : "no");
    fprintf(f, "[boot]\n");
    fprintf(f, "kernel = %s\n", cfg->kernel[0] ? cfg->kernel : "builtin");
    fprintf(f, "initrd = %s\n", cfg->initrd);
    int rc = write_append(f, cfg->append);
    if (rc == 0)
        vmconfig_display_write(f, &cfg->display);
    if (rc == 0)
        vmconfig_audio_write(f, &cfg->audio);
    if (rc == 0)
        vmconfig_balloon_write(f, &cfg->balloon);
    if (rc == 0)
        vmconfig_memory_write(f, &cfg->memory);
    if (rc == 0 && cfg->disk.path[0])
        fprintf(f, "[disk]\npath = %s\n", cfg->disk.path);
    if (rc == 0 && cfg->disk.path[0] && cfg->disk.format[0])
        fprintf(f, "format = %s\n", cfg->disk.format);
    if (rc == 0 && cfg->disk.path[0] && cfg->disk.base[0])
        fprintf(f, "base = %s\nbase_stamp = %s\n", cfg->disk.base, cfg->disk.base_stamp);
    if (rc == 0)
        vmconfig_net_write(f, &cfg->net);
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return fs_tmp_commit(fd, tmp, path, rc);
}

/* ---- editing in place ---- */

int vmconfig_lock(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* The name of the section a line opens ("[audio]" -> "audio", length in *LEN), or NULL. */
static const char *section_of(const char *line, size_t *len)
{
    line += strspn(line, " \t");
    const char *end = *line == '[' ? strchr(line, ']') : NULL;
    if (!end)
        return NULL;
    *len = (size_t)(end - line - 1);
    return line + 1;
}

/* Whether LINE sets KEY ("  key = ..."). */
static bool sets_key(const char *line, const char *key)
{
    line += strspn(line, " \t");
    size_t k = strlen(key);
    return strncmp(line, key, k) == 0 && line[k + strspn(line + k, " \t")] == '=';
}

/* The keys of the section being left that it did not set: where the section ends (before the
 * next section's header, or at the end of the file). */
static void write_missing(FILE *out, const char *const *keys, const char *const *values, size_t n,
                          bool *done)
{
    for (size_t i = 0; i < n; i++)
        if (!done[i]) {
            fprintf(out, "%s = %s\n", keys[i], values[i]);
            done[i] = true;
        }
}

int vmconfig_set(const char *path, const char *section, const char *const *keys,
                 const char *const *values, size_t n)
{
    bool done[VMCONFIG_SET_MAX] = {false}, in_section = false, seen = false;
    if (n > VMCONFIG_SET_MAX)
        return -E2BIG;
    FILE *in = fopen(path, "re");
    if (!in)
        return -errno;
    char tmp[PATH_MAX];
    int fd = fs_tmp_create(path, tmp, sizeof(tmp));
    FILE *out = fd >= 0 ? fdopen(dup(fd), "w") : NULL;
    if (!out) {
        int e = fd < 0 ? fd : -errno;
        fclose(in);
        return fd < 0 ? e : fs_tmp_commit(fd, tmp, path, e);
    }
    char line[CONF_LINE_MAX + 2];
    unsigned blanks = 0; /* blank lines held back: a missing key goes before a section's tail */
    bool ended = true;   /* the last line written ended with a newline */
    while (fgets(line, sizeof(line), in)) {
        size_t slen;
        const char *name = section_of(line, &slen);
        if (in_section && strcmp(line, "\n") == 0) {
            blanks++;
            continue;
        }
        if (name && in_section)
            write_missing(out, keys, values, n, done);
        for (; blanks; blanks--)
            fputc('\n', out);
        if (name) {
            in_section = slen == strlen(section) && strncmp(name, section, slen) == 0;
            seen |= in_section;
        }
        size_t i = 0;
        while (in_section && !name && i < n && !sets_key(line, keys[i]))
            i++;
        if (in_section && !name && i < n) {
            fprintf(out, "%s = %s\n", keys[i], values[i]);
            done[i] = true;
        } else {
            fputs(line, out);
            ended = line[strlen(line) - 1] == '\n';
        }
    }
    if (!ended)
        fputc('\n', out);
    if (in_section)
        write_missing(out, keys, values, n, done);
    for (; blanks; blanks--)
        fputc('\n', out);
    if (!seen) {
        fprintf(out, "[%s]\n", section);
        write_missing(out, keys, values, n, done);
    }
    int rc = ferror(in) ? -EIO : 0;
    fclose(in);
    if (fclose(out) != 0 && rc == 0)
        rc = -errno;
    crash_point("vmconf-written"); /* the new file whole, not yet in vm.conf's place */
    return fs_tmp_commit(fd, tmp, path, rc);
}
