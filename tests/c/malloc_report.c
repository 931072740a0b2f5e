/* What the allocator says it holds: mallinfo2, mallinfo, malloc_stats and
 * malloc_info, in glibc's formats, describe the memory malloc serves (with
 * the shim, its regions instead of glibc's then empty arena). A conformance
 * check: the same program passes with glibc alone. 64 MiB of 1000-byte
 * blocks and 8 MiB of 512 KiB blocks must show as in use, in every report,
 * and no longer after they are freed and trimmed; with the shim, mallinfo's
 * ints saturate rather than wrap past 2 GiB. */
#include "scenario.h"
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <unistd.h>

/* mallinfo is deprecated for its ints, which is what this checks. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define SMALL_COUNT (64 * 1024 * 1024 / 1000)
#define SMALL_SIZE 1000
#define LARGE_COUNT 16
#define LARGE_SIZE (512 * 1024)
#define MIB (1024L * 1024)

static long problems;

static void expect(const char *what, int ok) {
    if (!ok) {
        printf("wrong: %s\n", what);
        problems++;
    }
}

/* Bytes in use by mallinfo2's account: glibc counts mmapped chunks
 * (its blocks from 128 KiB on) in hblkhd, the shim in uordblks. */
static size_t in_use(struct mallinfo2 m) { return m.uordblks + m.hblkhd; }

/* What `print` writes to `fd` (2 for malloc_stats), read back. */
static char *captured(void (*print)(void), int fd) {
    static char text[16384];
    FILE *tmp = tmpfile();
    if (tmp == NULL) return strcpy(text, "");
    fflush(NULL);
    int saved = dup(fd);
    dup2(fileno(tmp), fd);
    print();
    fflush(NULL);
    dup2(saved, fd);
    close(saved);
    rewind(tmp);
    size_t n = fread(text, 1, sizeof text - 1, tmp);
    text[n] = 0;
    fclose(tmp);
    return text;
}

static FILE *info_stream;
static void print_info(void) { expect("malloc_info(0) returns 0", malloc_info(0, info_stream) == 0); }

/* malloc_info's XML, read back. */
static char *info_text(void) {
    static char text[65536];
    info_stream = tmpfile();
    if (info_stream == NULL) return strcpy(text, "");
    print_info();
    rewind(info_stream);
    size_t n = fread(text, 1, sizeof text - 1, info_stream);
    text[n] = 0;
    fclose(info_stream);
    return text;
}

/* The number after `label` in `text`, or -1. */
static long number_after(const char *text, const char *label) {
    const char *at = strstr(text, label);
    return at ? strtol(at + strlen(label), NULL, 10) : -1;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    struct mallinfo2 before = mallinfo2();
    static char *small[SMALL_COUNT];
    static char *large[LARGE_COUNT];
    for (int i = 0; i < SMALL_COUNT; i++) {
        small[i] = malloc(SMALL_SIZE);
        if (small[i] == NULL) return finish(1);
        memset(small[i], 1, SMALL_SIZE);
    }
    for (int i = 0; i < LARGE_COUNT; i++) {
        large[i] = malloc(LARGE_SIZE);
        if (large[i] == NULL) return finish(1);
        memset(large[i], 2, LARGE_SIZE);
    }
    size_t small_bytes = (size_t)SMALL_COUNT * SMALL_SIZE, large_bytes = (size_t)LARGE_COUNT * LARGE_SIZE;

    struct mallinfo2 full = mallinfo2();
    printf("mallinfo2: arena=%zu uordblks=%zu fordblks=%zu hblkhd=%zu keepcost=%zu\n", full.arena,
           full.uordblks, full.fordblks, full.hblkhd, full.keepcost);
    expect("mallinfo2 counts the small blocks in uordblks",
           full.uordblks >= before.uordblks + small_bytes);
    expect("mallinfo2 counts every block", in_use(full) >= in_use(before) + small_bytes + large_bytes);
    expect("mallinfo2's arena holds what is in use", full.arena >= full.uordblks);

    struct mallinfo old = mallinfo();
    expect("mallinfo agrees with mallinfo2 below 2 GiB",
           (size_t)old.uordblks + 4 * MIB >= full.uordblks && (size_t)old.uordblks <= full.uordblks + 4 * MIB);

    char *stats = captured(malloc_stats, 2);
    expect("malloc_stats writes glibc's layout",
           strstr(stats, "Arena 0:") && strstr(stats, "Total (incl. mmap):") && strstr(stats, "system bytes"));
    const char *total = strstr(stats, "Total (incl. mmap):");
    long stats_in_use = total ? number_after(total, "in use bytes     = ") : -1;
    printf("malloc_stats: in use %ld MiB\n", stats_in_use / MIB);
    expect("malloc_stats counts every block", stats_in_use >= (long)(small_bytes + large_bytes));

    char *info = info_text();
    expect("malloc_info writes glibc's XML",
           strncmp(info, "<malloc version=\"1\">", 20) == 0 && strstr(info, "<heap nr=\"0\">")
               && strstr(info, "<total type=\"rest\"") && strstr(info, "</malloc>\n"));
    /* The process's totals follow the last heap. */
    const char *process = strstr(info, "</heap>\n<total");
    long system = process ? number_after(process, "<system type=\"current\" size=\"") : -1;
    printf("malloc_info: system %ld MiB\n", system / MIB);
    expect("malloc_info holds the small blocks", system >= (long)small_bytes);
    /* glibc returns the error number itself. */
    expect("malloc_info(1) returns EINVAL", malloc_info(1, stdout) == EINVAL);

    for (int i = 0; i < SMALL_COUNT; i++) free(small[i]);
    for (int i = 0; i < LARGE_COUNT; i++) free(large[i]);
    malloc_trim(0);
    struct mallinfo2 after = mallinfo2();
    printf("after free and trim: uordblks=%zu hblkhd=%zu\n", after.uordblks, after.hblkhd);
    expect("mallinfo2 no longer counts freed blocks in use", after.uordblks < before.uordblks + 4 * MIB);

    if (shim_active()) {
        /* 2.2 GiB in use, never touched: glibc's mallinfo would wrap. */
        enum { HUGE = 11 };
        void *huge[HUGE];
        for (int i = 0; i < HUGE; i++) huge[i] = malloc(200 * MIB);
        struct mallinfo wide = mallinfo();
        struct mallinfo2 wide2 = mallinfo2();
        printf("2.2 GiB in use: mallinfo uordblks=%d, mallinfo2 %zu MiB\n", wide.uordblks, wide2.uordblks / MIB);
        expect("mallinfo saturates", wide.uordblks == INT_MAX && wide2.uordblks > (size_t)INT_MAX);
        for (int i = 0; i < HUGE; i++) free(huge[i]);
    }
    return finish(problems);
}
