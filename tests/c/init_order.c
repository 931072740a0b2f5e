/* When the program initializes libgc, if at all, is its own business:
 *   implicit         never calls GC_INIT(): libgc initializes itself on the
 *                    first GC_MALLOC, on the main thread;
 *   implicit-thread  the same, the first GC_MALLOC on a library thread;
 *   late             library threads start and allocate first, GC_INIT()
 *                    comes later; one of them registers itself with libgc
 *                    (as Guile's scm_with_guile does) and unregisters
 *                    again, and a thread started afterwards finds itself
 *                    registered already (GC_DUPLICATE).
 * In each, GC objects are kept in library malloc memory and on library
 * threads' stacks across collections. */
#include "library_work.h"
#include "gc_threads_api.h"
#include <semaphore.h>

static sem_t ready, go, done;

/* A malloc/free pair the compiler cannot remove. */
static void *(*volatile malloc_opaque)(size_t) = malloc;
static void allocate_and_free(size_t n) { free(malloc_opaque(n)); }

/* ---- implicit / implicit-thread ---- */

/* The first user of libgc: keeps objects in library memory, collects, then
 * stays until main has collected too. */
static void *first_user(void *arg) {
    keep_in_library(0);
    long lost = (long)collecting_callback((void *)50000);
    sem_post(&ready);
    while (sem_wait(&go) != 0) {}
    return (void *)(lost + (long)arg);
}

static long implicit_init(int on_thread) {
    long lost = 0;
    stash_thread *t = NULL;
    if (on_thread) {
        t = stash_start(STASH_JOINABLE, first_user, NULL);
        if (t == NULL) { printf("stash_start failed\n"); return 1; }
        while (sem_wait(&ready) != 0) {}
    } else {
        keep_in_library(0);
    }
    print_shim_state();
    printf("libgc initialized by %s\n", on_thread ? "a library thread" : "main's GC_MALLOC");
    lost += library_thread_work(100000);
    collect_hard();
    lost += lost_from_library(0);
    if (t) {
        sem_post(&go);
        lost += (long)stash_wait(t);
    }
    return lost;
}

/* ---- late ---- */

/* The part of a self-registering early thread that runs registered by
 * the program (through GC_call_with_stack_base, as Guile's scm_with_guile
 * does: nothing allocates before the registration). */
static void *registered_by_program(struct GC_stack_base *sb, void *arg) {
    int rc = GC_register_my_thread(sb);
    printf("early thread registers itself: %s\n", rc == GC_SUCCESS ? "GC_SUCCESS" : "other");
    long lost = rc != GC_SUCCESS;
    allocate_and_free(32); /* the shim sees it registered by the program */
    void **mine = arg;
    for (int i = 0; i < KEPT; i++) mine[i] = new_tracked(300000 + i);
    lost += (long)collecting_callback((void *)(300000 + KEPT));
    GC_unregister_my_thread();
    return (void *)lost;
}

/* Started before libgc is initialized; allocates at once, waits for the
 * program's GC_INIT(), then keeps and holds objects and collects. With
 * `arg` set it registers itself with libgc, then unregisters and goes on
 * allocating, as a thread the shim must register again. */
static void *early_worker(void *arg) {
    int self_registering = arg != NULL;
    unsigned long base = self_registering ? 300000 : 200000;
    void **mine = malloc_opaque(KEPT * sizeof *mine);
    for (int i = 0; i < 100; i++) allocate_and_free(16 + i * 8);
    sem_post(&ready);
    while (sem_wait(&go) != 0) {}
    long lost = 0;
    if (self_registering) {
        lost += (long)GC_call_with_stack_base(registered_by_program, mine);
        /* Unregistered, it allocates again (many sizes: its block caches
         * refill) and holds objects on its stack while it collects. */
        for (int i = 0; i < 3000; i++) allocate_and_free(8 + i % 1000);
        lost += (long)collecting_callback((void *)(base + 2 * KEPT));
    } else {
        allocate_and_free(32); /* its first allocation after GC_INIT() */
        for (int i = 0; i < KEPT; i++) mine[i] = new_tracked(base + i);
        lost += (long)collecting_callback((void *)(base + KEPT));
    }
    sem_post(&done);
    for (int i = 0; i < KEPT; i++) lost += !tracked_ok(mine[i], base + i);
    for (int i = 0; i < KEPT; i++) GC_REGISTER_FINALIZER(mine[i], NULL, NULL, NULL, NULL);
    free(mine);
    return (void *)lost;
}

/* Started after GC_INIT(): registers itself as a program that does so
 * would; under the shim it is registered already. */
static void *late_self_registering(void *arg) {
    struct GC_stack_base sb;
    GC_get_stack_base(&sb);
    int rc = GC_register_my_thread(&sb);
    int want = shim_active() ? GC_DUPLICATE : GC_SUCCESS;
    printf("late thread registers itself: %s\n",
           rc == GC_DUPLICATE ? "GC_DUPLICATE" : rc == GC_SUCCESS ? "GC_SUCCESS" : "other");
    long lost = rc != want;
    lost += (long)collecting_callback((void *)400000);
    if (rc == GC_SUCCESS) GC_unregister_my_thread();
    return (void *)(lost + (long)arg);
}

static long late_init(void) {
    stash_thread *early[2];
    for (int i = 0; i < 2; i++) {
        early[i] = stash_start(STASH_JOINABLE, early_worker, i ? (void *)1 : NULL);
        if (early[i] == NULL) { printf("stash_start failed\n"); return 1; }
    }
    for (int i = 0; i < 2; i++) while (sem_wait(&ready) != 0) {}
    GC_INIT();
    GC_allow_register_threads();
    print_shim_state();
    keep_in_library(0);
    for (int i = 0; i < 2; i++) sem_post(&go);
    for (int i = 0; i < 2; i++) while (sem_wait(&done) != 0) {}
    long lost = library_thread_work(100000);
    lost += (long)stash_wait(stash_start(STASH_JOINABLE, late_self_registering, NULL));
    collect_hard();
    for (int i = 0; i < 2; i++) lost += (long)stash_wait(early[i]);
    lost += lost_from_library(0);
    return lost;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    sem_init(&ready, 0, 0);
    sem_init(&go, 0, 0);
    sem_init(&done, 0, 0);
    long lost;
    if (strcmp(mode, "implicit") == 0) lost = implicit_init(0);
    else if (strcmp(mode, "implicit-thread") == 0) lost = implicit_init(1);
    else if (strcmp(mode, "late") == 0) lost = late_init();
    else {
        fprintf(stderr, "usage: %s implicit|implicit-thread|late\n", argv[0]);
        return 2;
    }
    printf("mode=%s\n", mode);
    stash_clear();
    return finish(lost);
}
