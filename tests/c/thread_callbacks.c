/* A GC-unaware library runs a callback on a thread it starts (argv[1] says
 * how). The callback holds GC objects only on its stack while the main thread
 * collects, then collects itself. */
#include "scenario.h"
#include "stash.h"
#include <semaphore.h>

#define HELD 64
static sem_t ready, go;

static void *callback(void *arg) {
    unsigned long base = (unsigned long)arg;
    void *volatile held[HELD];
    for (int i = 0; i < HELD; i++) held[i] = new_tracked(base + i);
    sem_post(&ready);
    while (sem_wait(&go) != 0) {}
    collect_hard();
    long lost = 0;
    for (int i = 0; i < HELD; i++) lost += !release_tracked(held[i], base + i);
    return (void *)lost;
}

int main(int argc, char **argv) {
    GC_INIT();
    print_shim_state();
    int mode = -1;
    for (int m = 0; m < STASH_THREAD_MODE_COUNT; m++)
        if (argc > 1 && strcmp(argv[1], stash_thread_mode_name(m)) == 0) mode = m;
    if (mode < 0) { fprintf(stderr, "usage: %s MODE\n", argv[0]); return 2; }
    sem_init(&ready, 0, 0);
    sem_init(&go, 0, 0);
    long lost = 0;
    for (int round = 0; round < 3; round++) {
        stash_thread *t = stash_start(mode, callback, (void *)(unsigned long)(round * 1000));
        if (t == NULL) { printf("stash_start failed\n"); return 3; }
        while (sem_wait(&ready) != 0) {}
        collect_hard();
        sem_post(&go);
        lost += (long)stash_wait(t);
    }
    printf("mode=%s\n", stash_thread_mode_name(mode));
    bdwgc_shim_stats stats = shim_stats();
    printf("threads_registered=%llu\n", (unsigned long long)stats.threads_registered);
    if (shim_active() && (stats.threads_registered < 3 || !bdwgc_shim_version()[0])) {
        printf("the shim did not count the library's threads\n");
        lost++;
    }
    return finish(lost);
}
