/* The GC-unaware library is loaded with dlopen (argv[1] is its path) and
 * keeps GC objects in its memory. */
#include "scenario.h"
#include <dlfcn.h>

int main(int argc, char **argv) {
    GC_INIT();
    print_shim_state();
    if (argc < 2) return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (lib == NULL) { printf("dlopen: %s\n", dlerror()); return 3; }
    int (*keep)(int, void *) = (int (*)(int, void *))dlsym(lib, "stash_keep");
    void *(*get)(int, size_t) = (void *(*)(int, size_t))dlsym(lib, "stash_get");
    if (!keep || !get) return 3;
    for (int i = 0; i < 2000; i++) keep(0, new_tracked(i));
    collect_hard();
    long lost = 0;
    for (int i = 0; i < 2000; i++) lost += !tracked_ok(get(0, i), i);
    return finish(lost);
}
