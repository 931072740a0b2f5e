/* 2,000 library threads created and joined one after another, each
 * allocating and holding GC objects; every 100th collects. */
#include "scenario.h"
#include "stash.h"

#define THREADS 2000

static void *callback(void *arg) {
    long n = (long)arg;
    void *volatile held[8];
    for (int i = 0; i < 8; i++) held[i] = new_tracked(n * 8 + i);
    if (n % 100 == 0) GC_gcollect();
    else churn(0);
    long lost = 0;
    for (int i = 0; i < 8; i++) lost += !release_tracked(held[i], n * 8 + i);
    return (void *)lost;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    long lost = 0;
    for (long n = 0; n < THREADS; n++) {
        stash_thread *t = stash_start(STASH_JOINABLE, callback, (void *)n);
        if (t == NULL) { printf("thread %ld failed to start\n", n); return 3; }
        lost += (long)stash_wait(t);
    }
    collect_hard();
    printf("threads=%d\n", THREADS);
    return finish(lost);
}
