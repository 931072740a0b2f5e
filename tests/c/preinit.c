/* Memory and a thread from a library constructor that ran before main:
 * the thread runs a collecting callback much later, and the memory is
 * reallocated and freed without a crash or a leak. */
#include "scenario.h"
#include "early.h"
#include <malloc.h>

static void *callback(void *arg) {
    void *volatile held[32];
    for (int i = 0; i < 32; i++) held[i] = new_tracked(500 + i);
    collect_hard();
    long lost = 0;
    for (int i = 0; i < 32; i++) lost += !release_tracked(held[i], 500 + i);
    return (void *)lost;
    (void)arg;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    long lost = (long)early_run(callback, NULL);
    void **blocks = early_blocks();
    long bad = 0;
    for (int i = 0; i < EARLY_BLOCKS; i += 2) {
        unsigned char *p = realloc(blocks[i], 100000);
        if (p == NULL || p[0] != i || p[255] != i) bad++;
        blocks[i] = p;
    }
    for (int i = 0; i < EARLY_BLOCKS; i++) free(blocks[i]);
    early_stop();
    collect_hard();
    printf("early blocks corrupted=%ld\n", bad);
    return finish(lost + bad);
}
