/* A C program as a user of the installed shim writes it: built with
 * `pkg-config --cflags --libs bdwgc-shim` (or bdw-gc alone, without the
 * shim). GC objects are kept only in malloc memory, which libgc does not
 * scan by itself; a finalizer counts those it frees. Prints
 * "shim=active|absent lost=N" and exits 0 when none was lost. Built with
 * -DWITHOUT_SHIM it does not refer to the shim at all (for preloading). */
#include <stdio.h>
#include <stdlib.h>
#include <gc.h>
#ifdef WITHOUT_SHIM
#define bdwgc_shim_is_active() 0
#else
#include "bdwgc_shim.h"
#endif

#define OBJECTS 2000

static int lost;

static void count_lost(void *obj, void *data) {
    (void)obj;
    (void)data;
    lost++;
}

int main(void) {
    GC_INIT();
    void **kept = malloc(OBJECTS * sizeof *kept);
    if (kept == NULL)
        return 2;
    for (int i = 0; i < OBJECTS; i++) {
        kept[i] = GC_MALLOC(64);
        GC_REGISTER_FINALIZER(kept[i], count_lost, NULL, NULL, NULL);
    }
    for (int i = 0; i < 3; i++) {
        GC_gcollect();
        GC_invoke_finalizers();
    }
    printf("shim=%s lost=%d\n", bdwgc_shim_is_active() ? "active" : "absent", lost);
    free(kept);
    return lost != 0;
}
