/* Allocation workloads for the benchmark runner. argv[1] names one, argv[2]
 * is its thread count (for "live", the live set in MiB) where it has one.
 * Prints the seconds taken (for "pause", the median collection pause; for
 * "live", the replacements alone) and the peak RSS in KiB (for "burst", the
 * RSS at the end): "SECONDS KIB". Built with -DDIRECT, malloc/free become
 * GC_malloc_uncollectable/GC_free (what the old Crystal shard did). */
#define GC_THREADS
#include <gc.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef DIRECT
#define ALLOC(n) GC_malloc_uncollectable(n)
#define FREE(p) GC_free(p)
#define CALLOC(n, size) GC_malloc_uncollectable((n) * (size)) /* zeroed */
#define FREE_ALIGNED(p) GC_free(GC_base(p))
#define REALLOC(p, n) GC_realloc(p, n)
/* What the shim did before its regions served aligned blocks: a larger
 * object and an aligned pointer inside it (freed through GC_base). */
static void *aligned_direct(size_t align, size_t n) {
    char *base = GC_malloc_uncollectable(n + align - 16);
    return base + ((size_t)-(GC_word)base & (align - 1));
}
#define ALIGNED(a, n) aligned_direct(a, n)
#else
#define ALLOC(n) malloc(n)
#define FREE(p) free(p)
#define REALLOC(p, n) realloc(p, n)
#define ALIGNED(a, n) aligned_alloc(a, n)
#define FREE_ALIGNED(p) free(p)
#define CALLOC(n, size) calloc(n, size)
#endif
/* Threads: with the shim or glibc, plain pthread_create (the shim registers
 * them); for direct libgc calls, libgc's own. */
#ifndef DIRECT
#undef pthread_create
#undef pthread_join
#endif

static unsigned long next(unsigned long *x) { *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17; return *x; }

/* 256 slots, blocks of 4 KiB to 1 MiB, 20,000 replacements. */
static void *large_churn(void *arg) {
    void *slots[256] = {0};
    unsigned long x = 88172645463325252UL + (unsigned long)arg;
    for (int i = 0; i < 20000; i++) {
        int s = next(&x) % 256;
        FREE(slots[s]);
        size_t size = 4096 << (next(&x) % 9);
        slots[s] = ALLOC(size);
        ((volatile char *)slots[s])[size - 1] = 1;
    }
    for (int s = 0; s < 256; s++) FREE(slots[s]);
    return NULL;
}

/* 256 slots, 500,000 replacements by blocks of 16 B-4 KiB aligned to 32 B-
 * 4 KiB (as Rust's allocator asks for types aligned above 16, C++ for
 * over-aligned new). */
static void *aligned_churn(void *arg) {
    void *slots[256] = {0};
    unsigned long x = 362436069UL + (unsigned long)arg;
    for (int i = 0; i < 500000; i++) {
        int s = next(&x) % 256;
        FREE_ALIGNED(slots[s]);
        size_t align = (size_t)32 << (next(&x) % 8);
        size_t size = align * (1 + next(&x) % 4) / 2;
        if (size > 4096) size = 4096;
        slots[s] = ALIGNED(align, size);
        ((volatile char *)slots[s])[0] = 1;
    }
    for (int s = 0; s < 256; s++) FREE_ALIGNED(slots[s]);
    return NULL;
}

/* Shaped like larson: each thread of a generation takes over the 2,000
 * blocks (10-500 B) of another thread of the one before and replaces them
 * at random 200,000 times, so most frees are of blocks other threads
 * allocated; 8 generations. */
#define LARSON_SLOTS 2000
static void *larson_sets[16][LARSON_SLOTS];
static void *larson_thread(void *arg) {
    void **slots = larson_sets[(long)arg];
    unsigned long x = 2463534242UL + (unsigned long)arg * 7919;
    for (int i = 0; i < 200000; i++) {
        int s = next(&x) % LARSON_SLOTS;
        FREE(slots[s]);
        slots[s] = ALLOC(10 + next(&x) % 491);
        ((volatile char *)slots[s])[0] = 1;
    }
    return NULL;
}
static void larson(int threads) {
    unsigned long x = 5;
    for (int t = 0; t < threads; t++)
        for (int s = 0; s < LARSON_SLOTS; s++) larson_sets[t][s] = ALLOC(10 + next(&x) % 491);
    for (int generation = 0; generation < 8; generation++) {
        pthread_t t[16];
        /* Thread i works on the set that thread i-1 of the last generation
         * filled: handing the sets round makes every free a remote one. */
        void *first[LARSON_SLOTS];
        memcpy(first, larson_sets[0], sizeof first);
        for (int i = 0; i + 1 < threads; i++) memcpy(larson_sets[i], larson_sets[i + 1], sizeof first);
        memcpy(larson_sets[threads - 1], first, sizeof first);
        for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, larson_thread, (void *)i);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    }
    for (int t = 0; t < threads; t++)
        for (int s = 0; s < LARSON_SLOTS; s++) FREE(larson_sets[t][s]);
}

/* Large buffers, as a program that keeps replacing big ones: 20 live
 * buffers of 5-25 MiB, one replaced 2,000 times and written (a byte per
 * page). */
static void big_buffers(void) {
    char *buffers[20] = {0};
    unsigned long x = 99;
    for (int i = 0; i < 2000; i++) {
        int s = next(&x) % 20;
        FREE(buffers[s]);
        size_t size = (5u << 20) + next(&x) % (20u << 20);
        buffers[s] = ALLOC(size);
        for (size_t j = 0; j < size; j += 4096) ((volatile char *)buffers[s])[j] = 1;
    }
    for (int s = 0; s < 20; s++) FREE(buffers[s]);
}

/* Shaped like a compiler: per "file", a tree of 20,000 nodes (32-96 B)
 * with names (8-40 B copies), a symbol table (calloc'd buckets, chained
 * entries) and lists grown by realloc; then all of it freed but a twentieth
 * of the nodes, which live on to the end. 200 files. */
typedef struct node { struct node *kid[2]; char *name; long value; } node;
static void program_like(void) {
    unsigned long x = 77;
    node **kept = ALLOC(200 * 1000 * sizeof *kept);
    size_t kept_count = 0;
    for (int file = 0; file < 200; file++) {
        node **nodes = NULL;
        size_t count = 0, capacity = 0;
        void **table = CALLOC(4096, sizeof *table);
        for (int i = 0; i < 20000; i++) {
            node *n = ALLOC(32 + next(&x) % 65);
            size_t len = 8 + next(&x) % 33;
            n->name = ALLOC(len);
            memset(n->name, 'a' + i % 26, len - 1);
            n->name[len - 1] = 0;
            n->kid[0] = count ? nodes[next(&x) % count] : NULL;
            n->kid[1] = NULL;
            if (count == capacity) {
                capacity = capacity ? capacity * 2 : 16;
                nodes = REALLOC(nodes, capacity * sizeof *nodes);
            }
            nodes[count++] = n;
            if (i % 4 == 0) {
                void **entry = ALLOC(2 * sizeof *entry);
                size_t bucket = next(&x) % 4096;
                entry[0] = table[bucket];
                entry[1] = n;
                table[bucket] = entry;
            }
        }
        for (size_t b = 0; b < 4096; b++)
            for (void **e = table[b], **after; e; e = after) { after = e[0]; FREE(e); }
        FREE(table);
        for (size_t i = 0; i < count; i++) {
            if (i % 20 == 0) { kept[kept_count++] = nodes[i]; continue; }
            FREE(nodes[i]->name);
            FREE(nodes[i]);
        }
        FREE(nodes);
    }
    for (size_t i = 0; i < kept_count; i++) { FREE(kept[i]->name); FREE(kept[i]); }
    FREE(kept);
}

/* Buffers doubling from 16 bytes to 64 MiB, written as they grow, 8 times. */
static void *realloc_growth(void *arg) {
    (void)arg;
    for (int round = 0; round < 8; round++) {
        char *buffer = NULL;
        for (size_t size = 16; size <= (64 << 20); size *= 2) {
            buffer = REALLOC(buffer, size);
            memset(buffer + size / 2, 1, size / 2);
        }
        FREE(buffer);
    }
    return NULL;
}

/* A producer allocates 8-264-byte blocks; a consumer frees them. */
#define RING 4096
static void *volatile ring[RING];
static void *producer(void *arg) {
    unsigned long x = 1234567;
    for (long i = 0; i < 2000000; i++) {
        void *p = ALLOC(8 + next(&x) % 257);
        ((volatile char *)p)[0] = 1;
        while (__atomic_load_n(&ring[i % RING], __ATOMIC_ACQUIRE) != NULL) {}
        __atomic_store_n(&ring[i % RING], p, __ATOMIC_RELEASE);
    }
    return arg;
}
static void *consumer(void *arg) {
    for (long i = 0; i < 2000000; i++) {
        void *p;
        while ((p = __atomic_load_n(&ring[i % RING], __ATOMIC_ACQUIRE)) == NULL) {}
        __atomic_store_n(&ring[i % RING], NULL, __ATOMIC_RELEASE);
        FREE(p);
    }
    return arg;
}

static void *nothing(void *arg) { return arg; }

/* A live set of argv[2] MiB of 16-1024-byte blocks, then 2 million random
 * replacements in it (timed alone). */
static double live_set_churn(size_t mib) {
    size_t count = (mib << 20) / 520, replaced = 2000000;
    void **slots = ALLOC(count * sizeof *slots);
    unsigned long x = 7;
    for (size_t i = 0; i < count; i++) slots[i] = ALLOC(16 + next(&x) % 1009);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (size_t i = 0; i < replaced; i++) {
        size_t s = next(&x) % count;
        FREE(slots[s]);
        slots[s] = ALLOC(16 + next(&x) % 1009);
        ((volatile char *)slots[s])[0] = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (size_t i = 0; i < count; i++) FREE(slots[i]);
    FREE(slots);
    return (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
}

/* 200 MiB of live blocks of 16-1024 bytes (at most 2^20 of them), each
 * holding a pointer to a GC object if with_objects; sets *count. */
static void **live_blocks_200_mib(size_t *count, int with_objects) {
    size_t live = 0, n = 0, capacity = 1 << 20;
    void **blocks = ALLOC(capacity * sizeof *blocks);
    unsigned long x = 42;
    while (live < (200u << 20) && n < capacity) {
        size_t size = 16 + next(&x) % 1009;
        void **block = ALLOC(size);
        if (with_objects) block[0] = GC_MALLOC(32);
        blocks[n++] = block;
        live += size;
    }
    *count = n;
    return blocks;
}

static void free_blocks(void **blocks, size_t count) {
    for (size_t i = 0; i < count; i++) FREE(blocks[i]);
    FREE(blocks);
}

/* 200 MiB of live blocks of 16-1024 bytes (each holding a pointer to a GC
 * object), then the median of 5 full collections. Prints that pause. */
static double collection_pause(void) {
    size_t count;
    void **blocks = live_blocks_200_mib(&count, 1);
    double pauses[5];
    for (int i = 0; i < 5; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        GC_gcollect();
        clock_gettime(CLOCK_MONOTONIC, &b);
        pauses[i] = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    }
    for (int i = 1; i < 5; i++)
        for (int j = i; j > 0 && pauses[j] < pauses[j - 1]; j--) {
            double t = pauses[j]; pauses[j] = pauses[j - 1]; pauses[j - 1] = t;
        }
    free_blocks(blocks, count);
    return pauses[2];
}

/* 200 MiB of live blocks of 16-1024 bytes, then 400 MB of 64-byte GC
 * objects (timed alone): how often libgc collects, and so scans the malloc
 * memory, while a program allocates collected memory. */
static double collected_churn(void) {
    size_t count;
    void **blocks = live_blocks_200_mib(&count, 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < 400L * 1000 * 1000 / 64; i++)
        if (GC_MALLOC(64) == NULL) abort();
    clock_gettime(CLOCK_MONOTONIC, &b);
    free_blocks(blocks, count);
    return (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
}

/* A burst: 4 threads allocate 128 MiB each of 16 B-6 KiB and 64 KiB-1 MiB
 * blocks (touching every page), 4 others free them. */
#define BURST_BYTES (128L << 20)
typedef struct { void **blocks; long count; unsigned long seed; } burst_batch;
static void *burst_allocate(void *arg) {
    burst_batch *b = arg;
    unsigned long x = b->seed;
    for (long bytes = 0; bytes < BURST_BYTES;) {
        unsigned long r = next(&x);
        size_t size = r % 64 == 0 ? (64u << 10) + (r >> 8) % (960u << 10) : 16 + (r >> 8) % 6144;
        char *p = ALLOC(size);
        for (size_t i = 0; i < size; i += 4096) p[i] = 1;
        p[size - 1] = 1;
        b->blocks[b->count++] = p;
        bytes += size;
    }
    return NULL;
}
static void *burst_free(void *arg) {
    burst_batch *b = arg;
    for (long i = 0; i < b->count; i++) FREE(b->blocks[i]);
    return NULL;
}

static long current_rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * 4;
}

/* The burst, then "trim": malloc_trim(0) (direct calls: libgc's
 * GC_gcollect_and_unmap); "idle": 3 s of light work (8 small blocks a
 * millisecond), no trim. Returns the RSS after, in KiB. */
static long burst_then(const char *how) {
    burst_batch batches[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        batches[i] = (burst_batch){calloc(BURST_BYTES / 16, sizeof(void *)), 0, 99u + i};
        pthread_create(&t[i], NULL, burst_allocate, &batches[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, burst_free, &batches[(i + 1) % 4]);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    if (strcmp(how, "trim") == 0) {
#ifdef DIRECT
        GC_gcollect_and_unmap();
#else
        malloc_trim(0);
#endif
    } else {
        for (int ms = 0; ms < 3000; ms++) {
            for (int i = 0; i < 8; i++) {
                char *volatile p = ALLOC(32 + i * 64);
                p[0] = 1;
                FREE(p);
            }
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
        }
    }
    long rss = current_rss_kib();
    for (int i = 0; i < 4; i++) free(batches[i].blocks);
    return rss;
}

int main(int argc, char **argv) {
    GC_INIT();
    /* The workloads start threads: libgc runs its parallel markers in every
     * variant (the shim starts them only once a thread needs registering,
     * as libgc's GC_pthread_create does, and the collection rows start
     * none). */
    GC_allow_register_threads();
    const char *name = argc > 1 ? argv[1] : "hello";
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    long rss_after = -1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (strcmp(name, "large") == 0 || strcmp(name, "realloc") == 0 || strcmp(name, "aligned") == 0) {
        void *(*work)(void *) = name[0] == 'l' ? large_churn : name[0] == 'r' ? realloc_growth : aligned_churn;
        pthread_t t[16];
        for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, (void *)i);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    } else if (strcmp(name, "larson") == 0) {
        larson(threads < 1 ? 1 : threads > 16 ? 16 : threads);
    } else if (strcmp(name, "buffers") == 0) {
        big_buffers();
    } else if (strcmp(name, "program") == 0) {
        program_like();
    } else if (strcmp(name, "prodcons") == 0) {
        pthread_t p, c;
        pthread_create(&p, NULL, producer, NULL);
        pthread_create(&c, NULL, consumer, NULL);
        pthread_join(p, NULL);
        pthread_join(c, NULL);
    } else if (strcmp(name, "burst") == 0) {
        rss_after = burst_then(argc > 2 ? argv[2] : "trim");
    } else if (strcmp(name, "threads") == 0) {
        for (int i = 0; i < 10000; i++) {
            pthread_t t;
            pthread_create(&t, NULL, nothing, NULL);
            pthread_join(t, NULL);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (strcmp(name, "pause") == 0 || strcmp(name, "live") == 0 || strcmp(name, "collected") == 0) {
        double pause = name[0] == 'p' ? collection_pause()
                     : name[0] == 'c' ? collected_churn()
                                      : live_set_churn((size_t)threads);
        a.tv_sec = 0; a.tv_nsec = 0;
        b.tv_sec = (time_t)pause; b.tv_nsec = (long)((pause - (double)b.tv_sec) * 1e9);
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("%.4f %ld\n", (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
           rss_after >= 0 ? rss_after : usage.ru_maxrss);
    return 0;
}
