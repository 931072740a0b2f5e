/* dlopen and dlclose, 100 times, a library whose constructor starts a
 * thread that allocates; each time the library keeps a GC object in its
 * memory (64 GC objects) while the program collects. argv[1] is the library's path. */
#include "scenario.h"
#include <dlfcn.h>

int main(int argc, char **argv) {
    GC_INIT();
    print_shim_state();
    if (argc < 2) return 2;
    long lost = 0;
    for (int i = 0; i < 100; i++) {
        void *lib = dlopen(argv[1], RTLD_NOW);
        if (lib == NULL) { printf("dlopen: %s\n", dlerror()); return 3; }
        void (*keep)(void *) = (void (*)(void *))dlsym(lib, "ctor_thread_keep");
        void *(*kept)(int) = (void *(*)(int))dlsym(lib, "ctor_thread_kept");
        if (!keep || !kept) return 3;
        for (int j = 0; j < 64; j++) keep(new_tracked(i * 100 + j));
        GC_gcollect();
        churn(1);
        GC_gcollect();
        for (int j = 0; j < 64; j++) lost += !release_tracked(kept(j), i * 100 + j);
        dlclose(lib);
    }
    GC_invoke_finalizers();
    return finish(lost);
}
