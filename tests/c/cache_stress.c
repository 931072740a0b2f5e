/* Stress of the malloc path under threads that come and go and a fork:
 * worker threads allocate blocks of random sizes with every allocator, keep a
 * GC object in each, hand half of them to other threads to free, check every
 * block's contents and that calloc memory is zero, and end, to be replaced by
 * new threads; the main thread collects meanwhile, and forks once, the child
 * doing the same on its own. argv[1] is the seed, argv[2] the seconds to run;
 * with argv[3] "purge" the program runs again with the shim's purge delay at
 * zero (free spans go back to the kernel at once, to be reused by any size
 * class) and the workers call malloc_trim(0) now and then, which also
 * discards the free pages of spans in use while other threads allocate. */
#include "scenario.h"
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 512
#define SHARED 256

typedef struct block {
    void *object;          /* a GC object only this block refers to */
    unsigned long tag;
    size_t size;
} block;

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static block *shared[SHARED]; /* blocks handed from one thread to another */
static volatile long problems;
static volatile int stop;
static int trimming;

static unsigned long next_random(unsigned long *state) {
    *state ^= *state << 13; *state ^= *state >> 7; *state ^= *state << 17;
    return *state;
}

static int block_ok(block *b) {
    if (b == NULL) return 1;
    unsigned char *bytes = (unsigned char *)b;
    for (size_t i = sizeof *b; i < b->size; i++)
        if (bytes[i] != (unsigned char)(b->tag + i)) return 0;
    return tracked_ok(b->object, b->tag);
}

static void check_and_free(block *b) {
    if (b == NULL) return;
    if (!block_ok(b)) __atomic_add_fetch(&problems, 1, __ATOMIC_RELAXED);
    else GC_REGISTER_FINALIZER(b->object, NULL, NULL, NULL, NULL);
    free(b);
}

static block *new_block(unsigned long *rng) {
    unsigned long r = next_random(rng);
    /* Mostly small blocks; one in 64 large (up to 1.5 MiB), from the shim's
     * large-block region, reused after other threads freed them; one in
     * 2048 of 2-6 MiB, blocks with units of their own there (reused by any
     * such size, grown in place by realloc). */
    size_t size = sizeof(block) + ((r >> 24) % 64 == 0     ? r % (3u << 19)
                                   : (r >> 40) % 2048 == 0 ? (2u << 20) + r % (4u << 20)
                                                           : r % 300);
    block *b = NULL;
    switch ((r >> 16) % 6) {
    case 0: case 1: b = malloc(size); break;
    case 2: {
        b = calloc(1, size);
        if (b) for (size_t i = 0; i < size; i++)
            if (((unsigned char *)b)[i]) { __atomic_add_fetch(&problems, 1, __ATOMIC_RELAXED); break; }
        break;
    }
    case 3: b = realloc(realloc(malloc(16), size / 2 + 1), size); break;
    case 4: b = aligned_alloc(64, size); break;
    case 5: if (posix_memalign((void **)&b, 32, size) != 0) b = NULL; break;
    }
    if (b == NULL) { __atomic_add_fetch(&problems, 1, __ATOMIC_RELAXED); return NULL; }
    b->tag = r;
    b->size = size;
    for (size_t i = sizeof *b; i < size; i++) ((unsigned char *)b)[i] = (unsigned char)(r + i);
    b->object = new_tracked(r);
    return b;
}

static void *worker(void *arg) {
    unsigned long rng = (unsigned long)arg * 0x9e3779b97f4a7c15UL + 1;
    block *mine[SLOTS] = {0};
    for (int round = 0; round < 20000; round++) {
        int s = (int)(next_random(&rng) % SLOTS);
        check_and_free(mine[s]);
        mine[s] = new_block(&rng);
        if (trimming && round % 1000 == 999) malloc_trim(0);
        if (round % 4 == 0) { /* swap one block with the shared pool */
            int k = (int)(next_random(&rng) % SHARED);
            pthread_mutex_lock(&shared_lock);
            block *theirs = shared[k];
            shared[k] = mine[s];
            pthread_mutex_unlock(&shared_lock);
            mine[s] = theirs;
        }
    }
    for (int s = 0; s < SLOTS; s++) check_and_free(mine[s]);
    return NULL;
}

/* Runs generations of worker threads for `seconds`, collecting meanwhile. */
static void run(unsigned long seed, double seconds, int workers) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned long generation = 0;; generation++) {
        pthread_t t[8];
        for (int i = 0; i < workers; i++)
            pthread_create(&t[i], NULL, worker, (void *)(seed + generation * 16 + i));
        GC_gcollect();
        for (int i = 0; i < workers; i++) pthread_join(t[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 > seconds) break;
    }
}

int main(int argc, char **argv) {
    if (argc > 3 && strcmp(argv[3], "purge") == 0) {
        const char *delay = getenv("BDWGC_SHIM_PURGE_DELAY_MS");
        if (delay == NULL || strcmp(delay, "0") != 0) {
            /* The shim reads its setting when the process starts. */
            setenv("BDWGC_SHIM_PURGE_DELAY_MS", "0", 1);
            execv("/proc/self/exe", argv);
            perror("execv");
            return 3;
        }
        trimming = 1;
    }
    GC_INIT();
    print_shim_state();
    unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 0) : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 3;
    printf("seed=%lu seconds=%.1f\n", seed, seconds);
    run(seed, seconds / 2, 4);
    fflush(stdout);
    settle_before_fork();
    pid_t pid = fork();
    if (pid == 0) {
        run(seed + 1000, seconds / 4, 2);
        collect_hard();
        for (int k = 0; k < SHARED; k++) if (!block_ok(shared[k])) problems++;
        printf("child problems=%ld\n", problems);
        fflush(stdout);
        _exit(problems == 0 ? 0 : 1);
    }
    run(seed + 2000, seconds / 4, 4);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("child failed (status %#x)\n", status);
        problems++;
    }
    collect_hard();
    for (int k = 0; k < SHARED; k++) { check_and_free(shared[k]); shared[k] = NULL; }
    if (trimming && shim_active()) {
        bdwgc_shim_stats stats;
        bdwgc_shim_get_stats(&stats);
        printf("purged now: %zu KiB\n", (size_t)(stats.bytes_purged >> 10));
    }
    printf("problems=%ld\n", problems);
    return finish(problems);
}
