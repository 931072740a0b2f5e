/* Memory freed in one size class serves the next phase's other sizes: eight
 * phases, each fills 32 MiB with blocks of one size (48 bytes to 5 KiB),
 * frees them all, then waits 20 ms (other work, as between a program's
 * phases).
 * glibc coalesces the freed blocks and reuses them at once; an allocator
 * that kept each phase's memory for its size class for a while would peak
 * at several phases' worth (the shim kept it for its purge delay, 250 ms:
 * 278 MiB above the start; glibc 47, the shim now 66-73). The process's
 * peak may exceed its peak before the phases by at most three
 * phases' worth (plus 8 MiB): the shim purges from its allocations, so the
 * next phase has begun when it gives back the last one's memory. */
#include "scenario.h"
#include <sys/resource.h>

#define PHASE_BYTES (32L << 20)

static long peak_kib(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    static const size_t sizes[] = {48, 96, 160, 320, 640, 1280, 2560, 5120};
    static void *blocks[PHASE_BYTES / 48];
    long before = peak_kib(); /* at least the resident set now */
    for (int phase = 0; phase < 8; phase++) {
        size_t size = sizes[phase];
        long count = PHASE_BYTES / (long)size;
        for (long i = 0; i < count; i++) {
            blocks[i] = malloc(size);
            if (blocks[i] == NULL) { fprintf(stderr, "malloc failed\n"); return finish(1); }
            memset(blocks[i], phase + 1, size);
        }
        for (long i = 0; i < count; i++) free(blocks[i]);
        usleep(20000); /* other work, which allocates nothing */
    }
    long grown = peak_kib() - before;
    printf("peak above the start: %ld MiB (a phase: %ld MiB)\n", grown >> 10, PHASE_BYTES >> 20);
    return finish(grown > 3 * (PHASE_BYTES >> 10) + 8192);
}
