/* 20,000 threads that end every way a thread can: return, pthread_exit from
 * deep frames, cancellation at a cancellation point, detached, joined late;
 * every seventh is created while its creator blocks every signal (so it
 * starts with them blocked). Each holds a GC object on its stack; some
 * collect. Memory stays flat: RSS may not grow by more than 16 MiB between
 * the 5,000th and the last thread. */
#include "scenario.h"
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#define THREADS 20000
#define LATE 32

enum ending { RETURNS, EXITS_DEEP, CANCELLED, DETACHED, JOINED_LATE, ENDINGS };
static volatile long problems;
static sem_t detached_done;
#define HANDED_SLOTS 4096
static void *handed[HANDED_SLOTS][8];

static __attribute__((noinline)) void exit_deep(int depth) {
    if (depth == 0) pthread_exit(NULL);
    exit_deep(depth - 1);
    __asm__ volatile("");
}

static void *body(void *arg) {
    long n = (long)arg;
    void *volatile held = new_checked((unsigned long)n);
    char *block = malloc(64 + n % 512);
    memcpy(block, (void *)&held, sizeof held);
    /* Blocks a later thread frees: each thread frees what the thread
     * HANDED_SLOTS before it left in its slot, and leaves its own. */
    for (int i = 0; i < 8; i++) {
        free(handed[n % HANDED_SLOTS][i]);
        handed[n % HANDED_SLOTS][i] = malloc(16 + 16 * (size_t)i);
    }
    if (n % 1000 == 0) GC_gcollect();
    if (!tracked_ok(held, (unsigned long)n)) __atomic_add_fetch(&problems, 1, __ATOMIC_RELAXED);
    free(block);
    switch (n % ENDINGS) {
    case EXITS_DEEP: exit_deep(8); break;
    case CANCELLED: for (;;) pause();
    case DETACHED: sem_post(&detached_done); break;
    }
    return NULL;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    sem_init(&detached_done, 0, 0);
    pthread_t late[LATE];
    int late_count = 0;
    long rss_early = 0;
    for (long n = 0; n < THREADS; n++) {
        sigset_t all, old;
        int block_signals = n % 7 == 0;
        if (block_signals) { sigfillset(&all); pthread_sigmask(SIG_BLOCK, &all, &old); }
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (n % ENDINGS == DETACHED) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        int rc = pthread_create(&t, &attr, body, (void *)n);
        pthread_attr_destroy(&attr);
        if (block_signals) pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) { printf("pthread_create %ld failed: %d\n", n, rc); return 3; }
        switch (n % ENDINGS) {
        case CANCELLED: pthread_cancel(t); /* fall through */
        case RETURNS: case EXITS_DEEP: pthread_join(t, NULL); break;
        case DETACHED: while (sem_wait(&detached_done) != 0) {} break;
        case JOINED_LATE:
            late[late_count++] = t;
            if (late_count == LATE) {
                GC_gcollect(); /* with the late threads still around */
                for (int i = 0; i < LATE; i++) pthread_join(late[i], NULL);
                late_count = 0;
            }
            break;
        }
        if (n == 5000) rss_early = rss_kib(); /* after the handed slots filled */
    }
    for (int i = 0; i < late_count; i++) pthread_join(late[i], NULL);
    usleep(100000); /* let the last detached thread finish exiting */
    for (int slot = 0; slot < HANDED_SLOTS; slot++)
        for (int i = 0; i < 8; i++) free(handed[slot][i]);
    collect_hard();
    long rss_late = rss_kib();
    printf("rss after 5000 threads: %ld KiB, after %d: %ld KiB\n", rss_early, THREADS, rss_late);
    if (under_qemu_user())
        printf("RSS not compared: under qemu-user it counts the emulator's memory for each thread\n");
    else if (rss_late - rss_early > 16 * 1024) { printf("RSS grew\n"); problems++; }
    return finish(problems);
}
