/* Memory is reused: 10 million malloc/free cycles of mixed sizes (8 bytes to
 * 64 KiB) keep RSS flat: it may not grow by more than a quarter (plus 8 MiB)
 * between the first million cycles and the last. Then 1,500 buffers, each
 * grown by realloc from 1 MiB to 64 MiB and freed, are all served without
 * libgc's heap: that is more address space (94 GiB) than the shim's region
 * for such blocks (64 GiB), so the units of freed buffers must be reused
 * by the next ones, whatever their size. */
#include "scenario.h"
#include <unistd.h>

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
    long from_libgc = 0;
    for (int round = 0; round < 1500; round++) {
        char *buffer = NULL;
        for (size_t size = 1u << 20; size <= (64u << 20); size *= 2) {
            char *grown = realloc(buffer, size);
            if (grown == NULL) { from_libgc++; break; }
            buffer = grown;
            buffer[size - 1] = 1;
        }
        from_libgc += buffer != NULL && GC_base(buffer) != NULL;
        free(buffer);
    }
    printf("64 MiB buffers from libgc's heap: %ld of 1500\n", from_libgc);
    return finish((late > early + early / 4 + 8192) + from_libgc);
}
