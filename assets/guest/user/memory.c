/* Guest RAM from CPL 3: the e820 map, mapping RAM above 4 GiB (the static tables stop there),
 * and the `mem` workload. Allocatable memory is every usable e820 byte above the OS image,
 * kept as a list of ranges; an allocation is simply a prefix of that list, so `mem alloc`
 * grows the prefix and `mem free` resets it. A filled word is hash(pattern) ^ address * K,
 * so a page that comes back at the wrong address fails verification. */
#include "assets/guest/user/guest.h"

#define PTE_ADDR_MASK 0x000ffffffffff000ULL
#define TABLE_FLAGS (PTE_P | PTE_W | PTE_U)
#define LARGE_FLAGS (PTE_P | PTE_W | PTE_U | PTE_PS)
#define ADDR_MUL 0x9e3779b97f4a7c15ULL /* odd: address -> word is one-to-one */
#define LOW_LIMIT (4 * GIB)            /* pgtables.S maps everything below this */

struct range {
    uint64_t start, end;
};

static struct range free_ranges[E820_MAX];
static unsigned nfree;
static uint64_t usable_bytes, free_bytes, allocated_bytes;
static uint64_t high_mapped_end;            /* RAM in [4 GiB, this) that we mapped */
static uint64_t table_pool, table_pool_end; /* pages for page tables, just above the image */

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static uint64_t align_down(uint64_t v, uint64_t a)
{
    return v & ~(a - 1);
}

/* Sorted copy of the RAM entries of the e820 map. */
static unsigned e820_ram(struct range *out)
{
    unsigned n = 0;
    for (unsigned i = 0; i < boot.e820_count; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type != E820_RAM || e->size == 0 || e->addr + e->size < e->addr)
            continue;
        struct range r = {e->addr, e->addr + e->size};
        unsigned j = n++;
        while (j > 0 && out[j - 1].start > r.start) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = r;
    }
    return n;
}

static uint64_t *table_alloc(void)
{
    if (table_pool + PAGE_SIZE > table_pool_end)
        return NULL;
    uint64_t *t = (uint64_t *)(uintptr_t)table_pool;
    table_pool += PAGE_SIZE;
    memset(t, 0, PAGE_SIZE);
    return t;
}

/* The table ENTRY points to, made present (with a fresh zeroed page) if it was not. A
 * not-present entry is never cached by the TLB, so no flush is needed (none is possible
 * from CPL 3 anyway). */
static uint64_t *table_next(uint64_t *entry)
{
    if (!(*entry & PTE_P)) {
        uint64_t *t = table_alloc();
        if (!t)
            return NULL;
        *entry = (uint64_t)(uintptr_t)t | TABLE_FLAGS;
    }
    return (uint64_t *)(uintptr_t)(*entry & PTE_ADDR_MASK);
}

static bool map_2m(uint64_t addr)
{
    uint64_t *pdpt = table_next(&pml4[(addr >> 39) & 511]);
    if (!pdpt)
        return false;
    uint64_t *pd = table_next(&pdpt[(addr >> 30) & 511]);
    if (!pd)
        return false;
    pd[(addr >> 21) & 511] = addr | LARGE_FLAGS;
    return true;
}

bool memory_is_mapped(uint64_t addr, uint64_t len)
{
    uint64_t end = addr + len;
    if (end < addr)
        return false;
    if (addr < PAGE_SIZE)
        return false; /* page 0 is left unmapped on purpose */
    return end <= LOW_LIMIT || (addr >= LOW_LIMIT && end <= high_mapped_end);
}

void memory_init(void)
{
    struct range ram[E820_MAX];
    unsigned n = e820_ram(ram);
    uint64_t os_end = align_up((uint64_t)(uintptr_t)guest_image_end, PAGE_SIZE);

    for (unsigned i = 0; i < n; i++)
        usable_bytes += ram[i].end - ram[i].start;

    /* Page tables for high RAM come from the RAM right after the image. */
    for (unsigned i = 0; i < n; i++) {
        if (ram[i].start <= os_end && os_end < ram[i].end) {
            table_pool = os_end;
            table_pool_end = align_down(ram[i].end, PAGE_SIZE);
        }
    }
    high_mapped_end = LOW_LIMIT;
    for (unsigned i = 0; i < n; i++) {
        if (ram[i].end <= LOW_LIMIT)
            continue;
        uint64_t a = align_down(ram[i].start < LOW_LIMIT ? LOW_LIMIT : ram[i].start, 2 * MIB);
        uint64_t end = align_up(ram[i].end, 2 * MIB);
        for (; a < end; a += 2 * MIB) {
            if (!map_2m(a)) {
                printf("memory: out of page-table space, RAM above 0x%lx unused\n", a);
                ram[i].end = a;
                n = i + 1;
                break;
            }
        }
        if (ram[i].end > high_mapped_end)
            high_mapped_end = ram[i].end;
    }
    if (table_pool > os_end)
        os_end = table_pool;

    /* Everything above the image (and above 1 MiB) is the `mem` command's to use. */
    for (unsigned i = 0; i < n; i++) {
        uint64_t start = align_up(ram[i].start < os_end ? os_end : ram[i].start, PAGE_SIZE);
        uint64_t end = align_down(ram[i].end, PAGE_SIZE);
        if (start < 1 * MIB)
            start = 1 * MIB;
        if (end <= start)
            continue;
        free_ranges[nfree++] = (struct range){start, end};
        free_bytes += end - start;
    }
}

uint64_t memory_usable_bytes(void)
{
    return usable_bytes;
}

uint64_t memory_available_bytes(void)
{
    return free_bytes - allocated_bytes;
}

uint64_t memory_allocated_bytes(void)
{
    return allocated_bytes;
}

/* Calls FN on the allocated bytes in [from, to) of the prefix, one range at a time. */
typedef bool (*chunk_fn)(uint64_t start, uint64_t end, void *ctx);
static bool for_each_chunk(uint64_t from, uint64_t to, chunk_fn fn, void *ctx)
{
    uint64_t pos = 0;
    for (unsigned i = 0; i < nfree && pos < to; i++) {
        uint64_t len = free_ranges[i].end - free_ranges[i].start;
        uint64_t lo = from > pos ? from - pos : 0;
        uint64_t hi = to - pos < len ? to - pos : len;
        if (lo < hi && !fn(free_ranges[i].start + lo, free_ranges[i].start + hi, ctx))
            return false;
        pos += len;
    }
    return true;
}

static bool touch_chunk(uint64_t start, uint64_t end, void *ctx)
{
    (void)ctx;
    for (uint64_t a = start; a < end; a += PAGE_SIZE)
        *(volatile uint64_t *)(uintptr_t)a = 0;
    return true;
}

int memory_alloc(uint64_t bytes)
{
    if (bytes > memory_available_bytes())
        return -1;
    for_each_chunk(allocated_bytes, allocated_bytes + bytes, touch_chunk, NULL);
    allocated_bytes += bytes;
    return 0;
}

void memory_free_all(void)
{
    allocated_bytes = 0;
}

uint64_t memory_pattern_seed(const char *pattern)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a splitmix64 finalizer */
    for (const char *p = pattern; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static bool fill_chunk(uint64_t start, uint64_t end, void *ctx)
{
    uint64_t seed = *(const uint64_t *)ctx;
    uint64_t *p = (uint64_t *)(uintptr_t)start, *e = (uint64_t *)(uintptr_t)end;
    uint64_t m = start * ADDR_MUL;
    const uint64_t step = 8 * ADDR_MUL;
    for (; p + 4 <= e; p += 4, m += 4 * step) {
        p[0] = seed ^ m;
        p[1] = seed ^ (m + step);
        p[2] = seed ^ (m + 2 * step);
        p[3] = seed ^ (m + 3 * step);
    }
    for (; p < e; p++, m += step)
        *p = seed ^ m;
    return true;
}

void memory_fill(uint64_t seed)
{
    for_each_chunk(0, allocated_bytes, fill_chunk, &seed);
}

struct verify_ctx {
    uint64_t seed, bad_addr, expected, found;
};

static bool verify_chunk(uint64_t start, uint64_t end, void *ctx)
{
    struct verify_ctx *v = ctx;
    const uint64_t *p = (const uint64_t *)(uintptr_t)start, *e = (const uint64_t *)(uintptr_t)end;
    uint64_t m = start * ADDR_MUL;
    const uint64_t step = 8 * ADDR_MUL;
    for (; p + 4 <= e; p += 4, m += 4 * step) {
        uint64_t diff = (p[0] ^ v->seed ^ m) | (p[1] ^ v->seed ^ (m + step)) |
                        (p[2] ^ v->seed ^ (m + 2 * step)) | (p[3] ^ v->seed ^ (m + 3 * step));
        if (diff)
            break; /* find the exact word below */
    }
    for (; p < e; p++, m += step) {
        if (*p != (v->seed ^ m)) {
            v->bad_addr = (uint64_t)(uintptr_t)p;
            v->expected = v->seed ^ m;
            v->found = *p;
            return false;
        }
    }
    return true;
}

bool memory_verify(uint64_t seed, uint64_t *bad_addr, uint64_t *expected, uint64_t *found)
{
    struct verify_ctx v = {seed, 0, 0, 0};
    if (for_each_chunk(0, allocated_bytes, verify_chunk, &v))
        return true;
    *bad_addr = v.bad_addr;
    *expected = v.expected;
    *found = v.found;
    return false;
}
