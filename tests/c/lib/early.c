/* libearly: see early.h. */
#include "early.h"
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

static void *blocks[EARLY_BLOCKS];
static pthread_t worker;
static sem_t work_ready, work_done;
static void *(*work)(void *);
static void *work_arg, *work_result;
static int stopping;
struct job { void *(*work)(void *); void *arg; };
static struct job *volatile current_job;

static void *worker_main(void *unused) {
    (void)unused;
    for (;;) {
        while (sem_wait(&work_ready) != 0) {}
        if (stopping) return NULL;
        /* Like a real thread pool, the worker allocates a record per job:
         * a thread started before the collector was initialized is
         * registered at such a call (its first after initialization). */
        struct job *job = malloc(sizeof *job);
        if (job == NULL) abort();
        job->work = work;
        job->arg = work_arg;
        current_job = job; /* escapes: the compiler keeps the malloc */
        work_result = job->work(job->arg);
        current_job = NULL;
        free(job);
        sem_post(&work_done);
    }
}

__attribute__((constructor)) static void early_init(void) {
    for (int i = 0; i < EARLY_BLOCKS; i++) {
        blocks[i] = malloc(256);
        memset(blocks[i], i, 256);
    }
    sem_init(&work_ready, 0, 0);
    sem_init(&work_done, 0, 0);
    pthread_create(&worker, NULL, worker_main, NULL);
}

void **early_blocks(void) { return blocks; }

void *early_run(void *(*callback)(void *), void *arg) {
    work = callback;
    work_arg = arg;
    sem_post(&work_ready);
    while (sem_wait(&work_done) != 0) {}
    return work_result;
}

void early_stop(void) {
    stopping = 1;
    sem_post(&work_ready);
    pthread_join(worker, NULL);
}
