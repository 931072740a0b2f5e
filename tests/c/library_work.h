/* What needs the shim, for scenarios whose subject is something else (a
 * libgc setting, when libgc is initialized): GC objects kept in a
 * GC-unaware library's malloc memory, and a library thread that blocks
 * every signal, holds objects on its stack and collects. Without the shim
 * the first are lost and the second aborts the collection. */
#ifndef LIBRARY_WORK_H
#define LIBRARY_WORK_H
#include "scenario.h"
#include "stash.h"

#ifndef KEPT
#define KEPT 3000
#endif
#define HELD 32

/* Keeps KEPT new objects, tagged from `base`, in library malloc memory. */
static void keep_in_library(unsigned long base) {
    for (int i = 0; i < KEPT; i++)
        if (stash_keep(STASH_MALLOC, new_tracked(base + i)) != 0) {
            printf("stash_keep failed\n");
            exit(3);
        }
}

static long lost_from_library(unsigned long base) {
    long lost = 0;
    for (int i = 0; i < KEPT; i++) lost += !tracked_ok(stash_get(STASH_MALLOC, i), base + i);
    return lost;
}

/* Holds HELD objects on the calling thread's stack while it collects;
 * returns how many were lost. */
static void *collecting_callback(void *arg) {
    unsigned long base = (unsigned long)arg;
    void *volatile held[HELD];
    for (int i = 0; i < HELD; i++) held[i] = new_tracked(base + i);
    collect_hard();
    long lost = 0;
    for (int i = 0; i < HELD; i++) lost += !release_tracked(held[i], base + i);
    return (void *)lost;
}

/* Runs collecting_callback on a thread the library starts with every
 * signal blocked. */
static long library_thread_work(unsigned long base) {
    stash_thread *t = stash_start(STASH_SIGNALS_BLOCKED, collecting_callback, (void *)base);
    if (t == NULL) { printf("stash_start failed\n"); exit(3); }
    return (long)stash_wait(t);
}
#endif
