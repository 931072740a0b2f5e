/* GC objects referenced only from library malloc blocks of every size (48
 * bytes to 6 MiB) stay alive while the blocks are allocated, and can be
 * collected once the blocks are freed: freed malloc memory keeps nothing
 * alive, even with the pointers still in it. */
#include "scenario.h"

#define N 400
static const size_t sizes[] = {48, 700, 1100, 5000, 70000, 300000, 1200000, 6u << 20};
#define SIZES (sizeof sizes / sizeof sizes[0])

/* Hidden pointers, cleared by the collector when their object dies. */
static GC_hidden_pointer links[N];

static size_t slot_of(size_t size) { return (size / 2) & ~(size_t)7; }

static void fill(void **blocks) {
    for (int i = 0; i < N; i++) {
        size_t size = sizes[i % SIZES];
        blocks[i] = malloc(size);
        if (blocks[i] == NULL) { printf("malloc(%zu) failed\n", size); exit(3); }
        void *object = new_checked((unsigned long)i);
        memcpy((char *)blocks[i] + slot_of(size), &object, sizeof object);
        links[i] = GC_HIDE_POINTER(object);
        GC_general_register_disappearing_link((void **)&links[i], object);
    }
}

int main(void) {
    GC_INIT();
    print_shim_state();
    void **blocks = malloc(N * sizeof *blocks);
    fill(blocks);
    collect_hard();
    long lost = 0;
    for (int i = 0; i < N; i++) {
        void *object;
        memcpy(&object, (char *)blocks[i] + slot_of(sizes[i % SIZES]), sizeof object);
        if (links[i] == 0 || !tracked_ok(object, (unsigned long)i)) lost++;
    }
    printf("lost while their blocks were allocated: %ld of %d\n", lost, N);
    for (int i = 0; i < N; i++) free(blocks[i]);
    collect_hard();
    int alive = 0;
    for (int i = 0; i < N; i++) alive += links[i] != 0;
    /* A few may stay reachable from stale stack words or registers. */
    printf("still alive after their blocks were freed: %d of %d\n", alive, N);
    if (alive > N / 20) lost += alive;
    free(blocks);
    return finish(lost);
}
