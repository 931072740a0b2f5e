/* A program built with GC_THREADS, whose threads come from
 * GC_pthread_create (as Crystal's do), keeps objects in a GC-unaware
 * library while that library also runs callbacks on its own threads. */
#define GC_THREADS
#include "scenario.h"
#include "stash.h"
#include <pthread.h>

#define WORKERS 4
#define PER_WORKER 500

static void *worker(void *arg) {
    unsigned long base = (unsigned long)arg * 10000;
    for (int i = 0; i < PER_WORKER; i++) {
        stash_keep(STASH_MALLOC, new_tracked(base + i));
        if (i % 100 == 0) GC_gcollect();
    }
    return NULL;
}

static void *library_callback(void *arg) {
    void *volatile held = new_tracked(7);
    collect_hard();
    return (void *)(long)!release_tracked(held, 7);
    (void)arg;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    pthread_t workers[WORKERS];
    for (long w = 0; w < WORKERS; w++)
        if (pthread_create(&workers[w], NULL, worker, (void *)w) != 0) return 3;
    long lost = (long)stash_wait(stash_start(STASH_JOINABLE, library_callback, NULL));
    for (int w = 0; w < WORKERS; w++) pthread_join(workers[w], NULL);
    collect_hard();
    for (size_t i = 0; i < stash_count(STASH_MALLOC); i++) {
        tracked *t = stash_get(STASH_MALLOC, i);
        unsigned long tag = t ? t->tag : 0;
        if (tag / 10000 >= WORKERS || tag % 10000 >= PER_WORKER || !tracked_ok(t, tag)) lost++;
    }
    if (stash_count(STASH_MALLOC) != WORKERS * PER_WORKER) lost++;
    return finish(lost);
}
