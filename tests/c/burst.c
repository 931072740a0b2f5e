/* A server's burst: four threads allocate 768 MiB of small and large
 * blocks (16 B to 6 KiB, and 64 KiB to 1 MiB), four other threads free
 * them all. GC objects live in blocks allocated before the burst. Then the
 * memory must go back to the system:
 *   "trim": after malloc_trim(0), which must return 1, RSS is at most what
 *           was resident before the burst plus 16 MiB; the harness also
 *           compares it with glibc's after its own trim;
 *   "idle": without malloc_trim, under light activity (a few allocations a
 *           millisecond), RSS falls below a quarter of its peak within ten
 *           seconds (the shim's purge delay is a quarter of a second).
 * With the shim, its own count of resident bytes (bdwgc_shim_get_stats) must
 * agree with RSS: most of it at the peak, no more than all of it after, also
 * after collections, which read never-written pages of blocks they scan.
 * Prints rss_before, rss_peak and rss_after in KiB. */
#include "scenario.h"
#include <malloc.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4
#define PER_THREAD (192L << 20)
#define MAX_BLOCKS (PER_THREAD / 16 + 1024)

typedef struct { void **blocks; long count; int index; } batch;

#define KEPT 1000

/* The shim's resident bytes in KiB; -1 without the shim. */
static long shim_resident_kib(void) {
    if (!shim_active()) return -1;
    bdwgc_shim_stats stats;
    bdwgc_shim_get_stats(&stats);
    return (long)(stats.bytes_resident >> 10);
}

/* Whether the shim's resident count fits an RSS of `rss` KiB: at least
 * `least` KiB, and never more than the RSS (read before and after it). */
static int resident_agrees(long least, const char *when) {
    long rss = rss_kib(), resident = shim_resident_kib(), rss_after = rss_kib();
    if (resident < 0) return 1;
    if (under_qemu_user()) {
        printf("%s: smaps counts no resident pages under qemu-user; not compared\n", when);
        return 1;
    }
    if (rss_after > rss) rss = rss_after;
    printf("%s: shim resident %ld KiB, RSS %ld KiB\n", when, resident, rss);
    return resident >= least && resident <= rss;
}

static void *allocate_burst(void *arg) {
    batch *b = arg;
    unsigned long x = 0x9e3779b97f4a7c15UL * (unsigned long)(b->index + 1);
    long bytes = 0;
    while (bytes < PER_THREAD) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t size = x % 64 == 0 ? (64u << 10) + (x >> 8) % (960u << 10) : 16 + (x >> 8) % 6144;
        char *p = malloc(size);
        if (p == NULL) { fprintf(stderr, "malloc failed\n"); exit(3); }
        /* Touch every page, as a program filling its buffers would. */
        for (size_t i = 0; i < size; i += 4096) p[i] = 1;
        p[size - 1] = 1;
        b->blocks[b->count++] = p;
        bytes += size;
    }
    return NULL;
}

/* Frees another thread's blocks. */
static void *free_burst(void *arg) {
    batch *b = arg;
    for (long i = 0; i < b->count; i++) free(b->blocks[i]);
    return NULL;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "trim") != 0 && strcmp(mode, "idle") != 0) {
        fprintf(stderr, "usage: %s trim|idle\n", argv[0]);
        return 3;
    }
    GC_INIT();
    print_shim_state();
    long lost = 0;
    static void **kept[KEPT];
    for (int i = 0; i < KEPT; i++) {
        kept[i] = malloc(16 + i % 200);
        *kept[i] = new_tracked((unsigned long)i);
    }
    long before = rss_kib();
    batch batches[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        batches[i] = (batch){.blocks = calloc(MAX_BLOCKS, sizeof(void *)), .index = i};
        pthread_create(&threads[i], NULL, allocate_burst, &batches[i]);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    long peak = rss_kib();
    lost += !resident_agrees(peak / 2, "peak");
    /* Each batch is freed by a thread that did not allocate it. */
    for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, free_burst, &batches[i]);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);

    long after;
    int ok;
    if (strcmp(mode, "trim") == 0) {
        int released = malloc_trim(0);
        after = rss_kib();
        printf("malloc_trim returned %d\n", released);
        ok = released == 1 && after <= before + 16384;
    } else {
        /* Light activity: a few small allocations a millisecond. */
        after = rss_kib();
        for (int ms = 0; ms < 10000 && after >= peak / 4; ms++) {
            for (int i = 0; i < 8; i++) {
                char *volatile p = malloc(32 + i * 64);
                p[0] = 1;
                free(p);
            }
            sleep_ms(1);
            if (ms % 100 == 0) after = rss_kib();
        }
        after = rss_kib();
        ok = after < peak / 4;
    }
    printf("rss_before=%ld rss_peak=%ld rss_after=%ld (KiB)\n", before, peak, after);
    lost += !ok;
    lost += !resident_agrees(0, "after");

    collect_hard();
    lost += !resident_agrees(0, "collected");
    for (int i = 0; i < KEPT; i++) {
        lost += !tracked_ok(*kept[i], (unsigned long)i);
        free(kept[i]);
    }
    for (int i = 0; i < THREADS; i++) free(batches[i].blocks);
    return finish(lost);
}
