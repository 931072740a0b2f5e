/* A program that limits its own address space (RLIMIT_AS, 4 GiB), as
 * sandboxes, test runners and servers do, after start-up ("after") or
 * before it ("before": the limit is set, then the program runs itself
 * again under it). Under the limit it starts threads, which allocate every
 * size class and keep GC objects in the blocks; then it fills the address
 * space with 1 MiB blocks up to the limit (NULL and ENOMEM at the end),
 * frees them and fills it again, about as far, then collects (libgc's heap
 * must be able to grow into what was freed). Small blocks must come from
 * the shim's region, not from libgc's heap, limit or not. */
#include "scenario.h"
#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#define LIMIT ((rlim_t)4 << 30)
#define THREADS 4
#define MAX_FILL 8192
#define KEPT_PER_THREAD 256

static long vm_mib(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld", &pages) != 1) pages = 0; fclose(f); }
    return pages * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

typedef struct { int index; long lost; void **kept; long from_libgc; } worker;

/* Every small size (1 to 1024 bytes) and large ones up to 64 MiB, each
 * block written at both ends; some keep a GC object. */
static void *allocate_every_size(void *arg) {
    worker *w = arg;
    w->kept = malloc(KEPT_PER_THREAD * sizeof *w->kept);
    if (w->kept == NULL) { w->lost++; return NULL; }
    int k = 0;
    for (size_t size = 1; size <= 1024; size++) {
        char *p = malloc(size);
        if (p == NULL) { w->lost++; continue; }
        p[0] = 1; p[size - 1] = 2;
        w->from_libgc += GC_base(p) != NULL;
        if (size >= sizeof(void *) && size % 8 == 0 && k < KEPT_PER_THREAD) {
            *(void **)p = new_tracked((unsigned long)w->index << 20 | size);
            w->kept[k++] = p;
        } else {
            free(p);
        }
    }
    for (size_t size = 1025; size <= (64u << 20); size += size / 3) {
        char *p = malloc(size);
        if (p == NULL) { w->lost++; continue; }
        p[0] = 1; p[size - 1] = 2;
        free(p);
    }
    while (k < KEPT_PER_THREAD) w->kept[k++] = NULL;
    return NULL;
}

static long check_kept(worker *w) {
    long lost = 0;
    for (int k = 0; k < KEPT_PER_THREAD; k++) {
        void **p = w->kept[k];
        if (p == NULL) continue;
        size_t size = 8 * (size_t)(k + 1);
        lost += !tracked_ok(*p, (unsigned long)w->index << 20 | size);
    }
    return lost;
}

/* 1 MiB blocks until malloc returns NULL; returns how many it gave. */
static int fill(void **blocks, int *errno_ok) {
    int n = 0;
    for (; n < MAX_FILL; n++) {
        errno = 0;
        blocks[n] = malloc(1 << 20);
        if (blocks[n] == NULL) { *errno_ok = errno == ENOMEM; break; }
        memset(blocks[n], 1, 4096);
    }
    return n;
}

static int run_limited(void) {
    GC_INIT();
    print_shim_state();
    struct rlimit limit;
    getrlimit(RLIMIT_AS, &limit);
    printf("limit=%s vm=%ld MiB\n", limit.rlim_cur == LIMIT ? "4 GiB" : "none", vm_mib());
    if (limit.rlim_cur != LIMIT) return 3;
    long lost = 0;
    worker workers[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){.index = i};
        int rc = pthread_create(&threads[i], NULL, allocate_every_size, &workers[i]);
        if (rc != 0) { printf("pthread_create: %s\n", strerror(rc)); return finish(1); }
    }
    long from_libgc = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        lost += workers[i].lost;
        from_libgc += workers[i].from_libgc;
    }
    printf("allocation failures=%ld, small blocks from libgc's heap=%ld\n", lost, from_libgc);
    if (shim_active()) lost += from_libgc > 0;

    errno = 0;
    void *probe = malloc(100000);
    void *gc_probe = GC_MALLOC(100000);
    printf("malloc(100000)=%s GC_MALLOC(100000)=%s\n", probe ? "ok" : "NULL", gc_probe ? "ok" : "NULL");
    lost += probe == NULL || gc_probe == NULL;
    free(probe);

    static void *blocks[MAX_FILL];
    int errno_ok = 0, errno_again_ok = 0;
    int first = fill(blocks, &errno_ok);
    for (int i = 0; i < first; i++) free(blocks[i]);
    int again = fill(blocks, &errno_again_ok);
    for (int i = 0; i < again; i++) free(blocks[i]);
    printf("filled %d MiB, then %d MiB again, errno ENOMEM=%d/%d\n", first, again, errno_ok, errno_again_ok);
    /* Most of the limit was there to fill, both times. */
    lost += first < 2048 || again < first - first / 8 || !errno_ok || !errno_again_ok;

    void *after = malloc(1 << 20);
    lost += after == NULL;
    free(after);
    /* libgc's heap grows into the address space the blocks gave back. */
    collect_hard();
    for (int i = 0; i < THREADS; i++) lost += check_kept(&workers[i]);
    return finish(lost);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    struct rlimit limit = {LIMIT, LIMIT};
    if (strcmp(mode, "after") == 0) {
        /* After start-up: libgc's and the shim's set-up are done. */
        GC_INIT();
        if (setrlimit(RLIMIT_AS, &limit) != 0) { perror("setrlimit"); return 3; }
        return run_limited();
    }
    if (strcmp(mode, "before") == 0) {
        if (setrlimit(RLIMIT_AS, &limit) != 0) { perror("setrlimit"); return 3; }
        fflush(stdout);
        execl("/proc/self/exe", argv[0], "limited", (char *)NULL);
        perror("execl");
        return 3;
    }
    if (strcmp(mode, "limited") == 0) return run_limited();
    fprintf(stderr, "usage: %s after|before\n", argv[0]);
    return 3;
}
