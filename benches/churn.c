/* malloc/free churn: each thread keeps 256 slots and replaces a random one
 * with a block of 8-264 bytes, 4 million times. Prints the seconds taken.
 * Built with -DDIRECT it calls GC_malloc_uncollectable/GC_free instead (what
 * the old Crystal shard did). argv[1]: threads. */
#ifdef DIRECT
#define GC_THREADS /* direct calls need registered threads */
#endif
#include <gc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef DIRECT
#define ALLOC(n) GC_malloc_uncollectable(n)
#define FREE(p) GC_free(p)
#else
#define ALLOC(n) malloc(n)
#define FREE(p) free(p)
#endif

#define ROUNDS 4000000L

static void *churn(void *arg) {
    void *slots[256] = {0};
    unsigned x = 12345u + 7919u * (unsigned)(long)arg;
    for (long i = 0; i < ROUNDS; i++) {
        x = x * 1103515245u + 12345u;
        int s = (x >> 8) & 255;
        FREE(slots[s]);
        slots[s] = ALLOC(8 + (x >> 16) % 257);
        ((volatile char *)slots[s])[0] = 1;
    }
    for (int s = 0; s < 256; s++) FREE(slots[s]);
    return NULL;
}

int main(int argc, char **argv) {
    GC_INIT();
#ifdef DIRECT
    GC_allow_register_threads();
#endif
    int n = argc > 1 ? atoi(argv[1]) : 1;
    pthread_t t[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n && i < 64; i++) pthread_create(&t[i], NULL, churn, (void *)i);
    for (int i = 0; i < n && i < 64; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.4f\n", (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
