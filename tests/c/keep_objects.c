/* GC objects kept only in memory of a GC-unaware library, one allocator of
 * the malloc family at a time, survive collections and heavy allocation.
 * With argv[1] "incremental", under libgc's incremental collection (which
 * marks while the program runs, so the shim pushes its blocks another way). */
#include "scenario.h"
#include "stash.h"

#define PER_ALLOCATOR 2000

int main(int argc, char **argv) {
    GC_INIT();
    if (argc > 1 && strcmp(argv[1], "incremental") == 0) {
        GC_enable_incremental();
        printf("incremental=%d\n", GC_is_incremental_mode());
        if (!GC_is_incremental_mode()) return 3;
    }
    print_shim_state();
    for (int a = 0; a < STASH_ALLOCATOR_COUNT; a++)
        for (int i = 0; i < PER_ALLOCATOR; i++)
            if (stash_keep(a, new_tracked((unsigned long)a * 100000 + i)) != 0) {
                printf("stash_keep failed\n");
                return 3;
            }
    collect_hard();
    long lost = 0;
    for (int a = 0; a < STASH_ALLOCATOR_COUNT; a++) {
        long lost_here = 0;
        for (int i = 0; i < PER_ALLOCATOR; i++)
            if (!tracked_ok(stash_get(a, i), (unsigned long)a * 100000 + i)) lost_here++;
        printf("%-22s lost %ld of %d\n", stash_allocator_name(a), lost_here, PER_ALLOCATOR);
        lost += lost_here;
    }
    stash_clear();
    bdwgc_shim_stats stats = shim_stats();
    printf("allocations_routed=%llu\n", (unsigned long long)stats.allocations_routed);
    if (shim_active() && stats.allocations_routed < STASH_ALLOCATOR_COUNT * PER_ALLOCATOR) {
        printf("the shim did not count the library's allocations\n");
        lost++;
    }
    return finish(lost);
}
