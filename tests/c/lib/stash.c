/* libstash: see stash.h. Compiled without gc.h: the collector cannot know
 * what this library does. */
#define _GNU_SOURCE
#include "stash.h"

#include <fcntl.h>
#include <malloc.h>
#include <mqueue.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Each kept pointer lives at offset 8 of its own block. */
#define SLOT_OFFSET 8

static const char *const allocator_names[STASH_ALLOCATOR_COUNT] = {
    "malloc", "calloc", "realloc", "posix_memalign(64)", "posix_memalign(8192)",
    "aligned_alloc", "memalign", "valloc", "strdup", "malloc(1 KiB-6 MiB)",
    "realloc(growing)",
};

/* The list of blocks per allocator: itself in malloc memory. */
static void **blocks[STASH_ALLOCATOR_COUNT];
static size_t counts[STASH_ALLOCATOR_COUNT], capacities[STASH_ALLOCATOR_COUNT];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

const char *stash_allocator_name(int allocator) {
    return allocator >= 0 && allocator < STASH_ALLOCATOR_COUNT ? allocator_names[allocator] : "?";
}

/* Large blocks: sizes across the classes, and now and then one of several
 * MiB; `n` is how many the allocator has made. */
static void *large_block(size_t n) {
    static const size_t sizes[] = {1100, 3000, 20000, 300000, 1200000};
    return malloc(n % 100 == 99 ? 6u << 20 : sizes[n % 5]);
}

/* A buffer grown step by step, as a growing string or array is; now and
 * then to several MiB. */
static void *growing_block(size_t n) {
    size_t limit = n % 100 == 98 ? 9u << 20 : 6000;
    char *b = malloc(16);
    for (size_t size = 64; b != NULL && size <= limit; size *= 2) {
        char *grown = realloc(b, size);
        if (grown == NULL) { free(b); return NULL; }
        b = grown;
    }
    return b;
}

static void *new_block(int allocator) {
    void *b = NULL;
    switch (allocator) {
    case STASH_MALLOC: return malloc(48);
    case STASH_CALLOC: return calloc(3, 16);
    case STASH_REALLOC: b = malloc(16); return b ? realloc(b, 4000) : NULL;
    case STASH_POSIX_MEMALIGN_64: return posix_memalign(&b, 64, 48) == 0 ? b : NULL;
    case STASH_POSIX_MEMALIGN_8192: return posix_memalign(&b, 8192, 100) == 0 ? b : NULL;
    case STASH_ALIGNED_ALLOC: return aligned_alloc(32, 64);
    case STASH_MEMALIGN: return memalign(128, 40);
    case STASH_VALLOC: return valloc(40);
    case STASH_STRDUP: return strdup("a string long enough to hold a pointer");
    case STASH_LARGE: return large_block(counts[allocator]);
    case STASH_REALLOC_GROWING: return growing_block(counts[allocator]);
    }
    return NULL;
}

int stash_keep(int allocator, void *p) {
    void *b = new_block(allocator);
    if (b == NULL) return -1;
    memcpy((char *)b + SLOT_OFFSET, &p, sizeof p);
    pthread_mutex_lock(&lock);
    if (counts[allocator] == capacities[allocator]) {
        size_t cap = capacities[allocator] ? capacities[allocator] * 2 : 64;
        void **grown = realloc(blocks[allocator], cap * sizeof *grown);
        if (grown == NULL) { pthread_mutex_unlock(&lock); free(b); return -1; }
        blocks[allocator] = grown;
        capacities[allocator] = cap;
    }
    blocks[allocator][counts[allocator]++] = b;
    pthread_mutex_unlock(&lock);
    return 0;
}

size_t stash_count(int allocator) { return counts[allocator]; }

void *stash_get(int allocator, size_t index) {
    void *p;
    memcpy(&p, (char *)blocks[allocator][index] + SLOT_OFFSET, sizeof p);
    return p;
}

void stash_clear(void) {
    pthread_mutex_lock(&lock);
    for (int a = 0; a < STASH_ALLOCATOR_COUNT; a++) {
        for (size_t i = 0; i < counts[a]; i++) free(blocks[a][i]);
        free(blocks[a]);
        blocks[a] = NULL;
        counts[a] = capacities[a] = 0;
    }
    pthread_mutex_unlock(&lock);
}

static const char *const mode_names[STASH_THREAD_MODE_COUNT] = {
    "joinable", "detached", "signals-blocked", "attr-sigmask", "sigev-timer",
    "sigev-mq-notify", "pthread-exit", "cancelled",
};

const char *stash_thread_mode_name(int mode) {
    return mode >= 0 && mode < STASH_THREAD_MODE_COUNT ? mode_names[mode] : "?";
}

struct stash_thread {
    int mode;
    stash_callback callback;
    void *arg, *result;
    pthread_t thread;
    timer_t timer;
    mqd_t queue;
    char queue_name[64];
    sem_t done;
};

static void run_callback(stash_thread *t) {
    if (t->mode == STASH_SIGNALS_BLOCKED) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_BLOCK, &all, NULL);
    }
    t->result = t->callback(t->arg);
    sem_post(&t->done);
}

/* A few frames deep, so that pthread_exit unwinds through them. */
static __attribute__((noinline)) void exit_from_depth(int depth) {
    if (depth == 0) pthread_exit(NULL);
    exit_from_depth(depth - 1);
    __asm__ volatile("");
}

static void *thread_main(void *arg) {
    stash_thread *t = arg;
    run_callback(t);
    if (t->mode == STASH_EXITS) exit_from_depth(5);
    if (t->mode == STASH_CANCELLED)
        for (;;) pause(); /* a cancellation point; stash_wait cancels */
    return NULL;
}
static void timer_main(union sigval value) { run_callback(value.sival_ptr); }

stash_thread *stash_start(int mode, stash_callback callback, void *arg) {
    stash_thread *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->mode = mode;
    t->callback = callback;
    t->arg = arg;
    sem_init(&t->done, 0, 0);
    int rc;
    if (mode == STASH_TIMER) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD;
        ev.sigev_notify_function = timer_main;
        ev.sigev_value.sival_ptr = t;
        struct itimerspec when = {{0, 0}, {0, 1000000}};
        rc = timer_create(CLOCK_MONOTONIC, &ev, &t->timer);
        if (rc == 0) rc = timer_settime(t->timer, 0, &when, NULL);
    } else if (mode == STASH_MQ_NOTIFY) {
        struct mq_attr qa = {0};
        qa.mq_maxmsg = 1;
        qa.mq_msgsize = 8;
        snprintf(t->queue_name, sizeof t->queue_name, "/stash-%d-%p", (int)getpid(), (void *)t);
        t->queue = mq_open(t->queue_name, O_RDWR | O_CREAT | O_EXCL, 0600, &qa);
        rc = t->queue == (mqd_t)-1 ? -1 : 0;
        if (rc == 0) {
            struct sigevent ev;
            memset(&ev, 0, sizeof ev);
            ev.sigev_notify = SIGEV_THREAD;
            ev.sigev_notify_function = timer_main;
            ev.sigev_value.sival_ptr = t;
            rc = mq_notify(t->queue, &ev);
            if (rc == 0) rc = mq_send(t->queue, "go", 2, 0);
        }
    } else {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (mode == STASH_DETACHED) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (mode == STASH_ATTR_SIGMASK) {
            sigset_t all;
            sigfillset(&all);
            pthread_attr_setsigmask_np(&attr, &all);
        }
        rc = pthread_create(&t->thread, &attr, thread_main, t);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) { free(t); return NULL; }
    return t;
}

void *stash_wait(stash_thread *t) {
    while (sem_wait(&t->done) != 0) {}
    if (t->mode == STASH_TIMER) {
        timer_delete(t->timer);
    } else if (t->mode == STASH_MQ_NOTIFY) {
        mq_close(t->queue);
        mq_unlink(t->queue_name);
    } else if (t->mode != STASH_DETACHED) {
        if (t->mode == STASH_CANCELLED) pthread_cancel(t->thread);
        pthread_join(t->thread, NULL);
    }
    void *result = t->result;
    sem_destroy(&t->done);
    free(t);
    return result;
}
