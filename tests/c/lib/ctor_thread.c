/* libctor_thread: a GC-unaware library whose constructor starts a thread
 * that allocates until the library is unloaded; the thread also keeps, in
 * malloc memory, the pointer the program hands it. Its destructor stops and
 * joins the thread. */
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

static pthread_t worker;
static volatile int stopping;
static sem_t handed, kept;
static void *volatile handed_pointer;
static void **volatile box; /* malloc memory that holds the kept pointers */
static volatile int box_count;

static void *worker_main(void *unused) {
    (void)unused;
    void *ring[32] = {0};
    unsigned n = 0;
    while (!stopping) {
        if (sem_trywait(&handed) == 0) {
            if (box == NULL) box = calloc(64, sizeof *box);
            box[box_count++ % 64] = handed_pointer;
            sem_post(&kept);
        }
        free(ring[n % 32]);
        ring[n % 32] = malloc(16 + n % 200);
        n++;
    }
    for (int i = 0; i < 32; i++) free(ring[i]);
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    sem_init(&handed, 0, 0);
    sem_init(&kept, 0, 0);
    pthread_create(&worker, NULL, worker_main, NULL);
}

__attribute__((destructor)) static void stop(void) {
    stopping = 1;
    pthread_join(worker, NULL);
    free((void *)box);
}

/* Has the library's thread keep `p` (in malloc memory, up to 64 of them)
 * until the library is unloaded. */
void ctor_thread_keep(void *p) {
    handed_pointer = p;
    sem_post(&handed);
    while (sem_wait(&kept) != 0) {}
    handed_pointer = NULL;
}

void *ctor_thread_kept(int index) { return box ? box[index % 64] : NULL; }
