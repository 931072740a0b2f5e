/* Memory is reused: 10 million malloc/free cycles of mixed sizes (8 bytes to
 * 64 KiB) keep RSS flat: it may not grow by more than a quarter (plus 8 MiB)
 * between the first million cycles and the last. */
#include "scenario.h"
#include <unistd.h>

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void) {
    GC_INIT();
    print_shim_state();
    static void *slots[1024];
    unsigned long x = 88172645463325252UL;
    long early = 0;
    for (long i = 0; i < 10000000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int s = x % 1024;
        free(slots[s]);
        size_t size = (x >> 20) % 100 == 0 ? 4096 + (x >> 32) % 61440 : 8 + (x >> 32) % 300;
        slots[s] = malloc(size);
        ((char *)slots[s])[size - 1] = 1;
        if (i == 1000000) early = rss_kib();
    }
    long late = rss_kib();
    printf("rss after 1M cycles: %ld KiB, after 10M: %ld KiB\n", early, late);
    for (int s = 0; s < 1024; s++) free(slots[s]);
    return finish(late > early + early / 4 + 8192);
}
