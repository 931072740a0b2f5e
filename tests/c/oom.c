/* Out of memory under RLIMIT_AS: allocations return NULL with ENOMEM, the
 * process goes on, frees everything, allocates again and collects; GC
 * objects kept in malloc memory survive all of it. */
#include "scenario.h"
#include <errno.h>
#include <stdint.h>
#include <sys/resource.h>

#define MAX_BLOCKS 4096

static long vm_kib(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld", &pages) != 1) pages = 0; fclose(f); }
    return pages * 4;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    void **keep = malloc(100 * sizeof *keep);
    for (int i = 0; i < 100; i++) keep[i] = new_tracked(i);
    struct rlimit limit = {(rlim_t)(vm_kib() + 256 * 1024) * 1024, RLIM_INFINITY};
    limit.rlim_max = limit.rlim_cur;
    if (setrlimit(RLIMIT_AS, &limit) != 0) { perror("setrlimit"); return 3; }
    static void *blocks[MAX_BLOCKS];
    int n = 0, got_null = 0, wrong_errno = 0;
    for (; n < MAX_BLOCKS; n++) {
        errno = 0;
        blocks[n] = malloc(1 << 20);
        if (blocks[n] == NULL) { got_null = 1; wrong_errno = errno != ENOMEM; break; }
        memset(blocks[n], 1, 4096);
    }
    errno = 0;
    void *huge = malloc((size_t)1 << 40);
    int huge_ok = huge == NULL && errno == ENOMEM;
    errno = 0;
    void *zeroed = calloc((size_t)1 << 20, 1 << 12);
    int calloc_ok = zeroed == NULL && errno == ENOMEM;
    printf("blocks before NULL=%d null=%d errno_ok=%d huge_ok=%d calloc_ok=%d\n", n, got_null, !wrong_errno, huge_ok, calloc_ok);
    for (int i = 0; i < n; i++) free(blocks[i]);
    long lost = !got_null + wrong_errno + !huge_ok + !calloc_ok;
    for (int i = 0; i < 1000; i++) { void *p = malloc(100); if (!p) { lost++; break; } free(p); }
    void *again = malloc(1 << 20);
    if (again == NULL) { printf("cannot allocate after freeing\n"); lost++; }
    free(again);
    collect_hard();
    for (int i = 0; i < 100; i++) lost += !tracked_ok(keep[i], i);
    return finish(lost);
}
