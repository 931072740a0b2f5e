/* libstash: a small C library that knows nothing about the garbage
 * collector, like most C libraries. It keeps the pointers it is given in
 * memory from every member of the malloc family, and runs callbacks on
 * threads it starts itself, in the ways real libraries do. */
#ifndef STASH_H
#define STASH_H
#include <stddef.h>

enum stash_allocator {
    STASH_MALLOC,
    STASH_CALLOC,
    STASH_REALLOC,
    STASH_POSIX_MEMALIGN_64,
    STASH_POSIX_MEMALIGN_8192,
    STASH_ALIGNED_ALLOC,
    STASH_MEMALIGN,
    STASH_VALLOC,
    STASH_STRDUP,
    STASH_LARGE,           /* malloc of 1,100 bytes to 6 MiB */
    STASH_REALLOC_GROWING, /* a block grown by realloc, now and then to 8 MiB */
    STASH_ALLOCATOR_COUNT
};

const char *stash_allocator_name(int allocator);
/* Keeps `p` in a new block from `allocator`; returns 0, or -1 if out of memory. */
int stash_keep(int allocator, void *p);
size_t stash_count(int allocator);
void *stash_get(int allocator, size_t index);
/* Frees every block. */
void stash_clear(void);

enum stash_thread_mode {
    STASH_JOINABLE,        /* pthread_create, pthread_join */
    STASH_DETACHED,        /* a detached thread; done is signalled */
    STASH_SIGNALS_BLOCKED, /* the thread blocks every signal with sigprocmask */
    STASH_ATTR_SIGMASK,    /* created with every signal blocked (pthread_attr_setsigmask_np) */
    STASH_TIMER,           /* a timer_create SIGEV_THREAD notification */
    STASH_MQ_NOTIFY,       /* an mq_notify SIGEV_THREAD notification */
    STASH_EXITS,           /* the thread ends with pthread_exit from a nested call */
    STASH_CANCELLED,       /* the thread is cancelled at a cancellation point */
    STASH_THREAD_MODE_COUNT
};

typedef void *(*stash_callback)(void *arg);
typedef struct stash_thread stash_thread;

const char *stash_thread_mode_name(int mode);
/* Runs callback(arg) on a thread this library starts; NULL on failure. */
stash_thread *stash_start(int mode, stash_callback callback, void *arg);
/* Waits for the callback to finish and returns its result. */
void *stash_wait(stash_thread *t);

#endif
