/* What glibc promises for edge input to the malloc family. Runs against
 * plain glibc and through the shim; both must pass. */
#include "scenario.h"
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <unistd.h>

static long failures;
#define CHECK(cond) do { if (!(cond)) { failures++; printf("FAILED line %d: %s\n", __LINE__, #cond); } } while (0)

/* Keep GCC from proving allocations unused or sizes impossible. */
static size_t opaque(size_t n) { __asm__ volatile("" : "+r"(n)); return n; }
/* Fills a block the compiler cannot see freed next (it drops such stores). */
static void fill(void *p, int byte, size_t n) { memset(p, byte, n); __asm__ volatile("" : : "r"(p) : "memory"); }

static void check_block(void *p, size_t size, size_t align) {
    CHECK(p != NULL);
    if (p == NULL) return;
    CHECK((uintptr_t)p % align == 0);
    CHECK(malloc_usable_size(p) >= size);
    memset(p, 0xab, size);
}

int main(void) {
    GC_INIT();
    print_shim_state();
    int shim = bdwgc_shim_is_active && bdwgc_shim_is_active();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p, *q;

    /* malloc */
    p = malloc(opaque(0)); CHECK(p != NULL); free(p);
    errno = 0; CHECK(malloc(opaque(SIZE_MAX)) == NULL); CHECK(errno == ENOMEM);
    errno = 0; CHECK(malloc(opaque((size_t)PTRDIFF_MAX + 1)) == NULL); CHECK(errno == ENOMEM);
    for (size_t n = 1; n <= (1 << 20); n = n * 3 + 1) { p = malloc(opaque(n)); check_block(p, n, 16); free(p); }

    /* calloc: overflow, zero, and zeroed memory after reuse */
    errno = 0; CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL); CHECK(errno == ENOMEM);
    errno = 0; CHECK(calloc(opaque(1) << 40, opaque(1) << 40) == NULL); CHECK(errno == ENOMEM);
    p = calloc(opaque(0), 5); CHECK(p != NULL); free(p);
    for (size_t n = 1; n <= 70000; n = n * 2 + 3) {
        p = malloc(opaque(n)); fill(p, 0xff, n); free(p);
        unsigned char *z = calloc(1, opaque(n));
        CHECK(z != NULL);
        size_t nonzero = 0;
        for (size_t i = 0; z && i < n; i++) nonzero += z[i] != 0;
        CHECK(nonzero == 0);
        free(z);
    }
    /* The same for blocks with pages of their own (the shim keeps some
     * freed ones resident) */
    for (size_t n = 3u << 20; n <= (48u << 20); n *= 4) {
        p = malloc(opaque(n)); fill(p, 0xff, n); free(p);
        unsigned char *z = calloc(1, opaque(n));
        CHECK(z != NULL);
        size_t nonzero = 0;
        for (size_t i = 0; z && i < n; i += 64) nonzero += z[i] != 0 || z[i + 63] != 0;
        CHECK(nonzero == 0);
        free(z);
    }

    /* realloc and reallocarray */
    p = realloc(NULL, opaque(10)); CHECK(p != NULL);
    memcpy(p, "0123456789", 10);
    errno = 0; CHECK(realloc(p, opaque(SIZE_MAX)) == NULL); CHECK(errno == ENOMEM);
    CHECK(memcmp(p, "0123456789", 10) == 0);
    errno = 0; CHECK(reallocarray(p, opaque(SIZE_MAX / 2), 3) == NULL); CHECK(errno == ENOMEM);
    CHECK(memcmp(p, "0123456789", 10) == 0);
    q = realloc(p, opaque(100000)); CHECK(q != NULL && memcmp(q, "0123456789", 10) == 0);
    p = realloc(q, opaque(5)); CHECK(p != NULL && memcmp(p, "01234", 5) == 0);
    CHECK(realloc(p, opaque(0)) == NULL); /* glibc: frees p */
    p = reallocarray(NULL, opaque(10), 10); CHECK(p != NULL); free(p);
    /* Growing a big block into the free memory after it (where the shim
     * grows it in place) keeps its contents */
    p = malloc(opaque(3u << 20)); q = malloc(opaque(3u << 20));
    CHECK(p != NULL && q != NULL);
    fill(q, 0xee, 3u << 20); free(q);
    memset(p, 0x5c, 3u << 20);
    for (size_t n = 6u << 20; p && n <= (96u << 20); n *= 2) {
        unsigned char *grown = realloc(p, opaque(n));
        CHECK(grown != NULL);
        if (!grown) break;
        CHECK(grown[0] == 0x5c && grown[(3u << 20) - 1] == 0x5c);
        memset(grown + (3u << 20), 0x5c, n - (3u << 20));
        p = grown;
    }
    free(p);

    /* free */
    free(NULL);
    p = malloc(opaque(100));
    errno = 1234; free(p); CHECK(errno == 1234);
    p = malloc(opaque(1 << 20));
    errno = 4321; free(p); CHECK(errno == 4321);

    /* posix_memalign: bad alignments, every power of two up to 4 MiB */
    p = (void *)0x1;
    CHECK(posix_memalign(&p, opaque(0), 16) == EINVAL);
    CHECK(posix_memalign(&p, opaque(3), 16) == EINVAL);
    CHECK(posix_memalign(&p, opaque(4), 16) == EINVAL);
    CHECK(posix_memalign(&p, opaque(24), 16) == EINVAL);
    CHECK(p == (void *)0x1);
    CHECK(posix_memalign(&p, 64, opaque(SIZE_MAX)) == ENOMEM);
    CHECK(p == (void *)0x1);
    for (size_t align = sizeof(void *); align <= ((size_t)4 << 20); align *= 2)
        for (size_t size = 0; size <= 3 * align; size += align + 1) {
            CHECK(posix_memalign(&p, align, opaque(size)) == 0);
            check_block(p, size, align);
            q = realloc(p, opaque(size + 5000)); /* offset pointers reallocate */
            CHECK(q != NULL);
            if (size && q) CHECK(((unsigned char *)q)[size - 1] == 0xab);
            free(q);
        }

    /* aligned_alloc, memalign, valloc, pvalloc */
    for (size_t align = 1; align <= (1 << 20); align *= 2) {
        p = aligned_alloc(align, opaque(align * 2)); check_block(p, align * 2, align); free(p);
        p = memalign(align, opaque(100)); check_block(p, 100, align); free(p);
    }
    if (shim) { /* glibc 2.38 and later; 2.36 rounds these up */
        errno = 0; CHECK(aligned_alloc(opaque(0), 16) == NULL); CHECK(errno == EINVAL);
        errno = 0; CHECK(aligned_alloc(opaque(24), 16) == NULL); CHECK(errno == EINVAL);
    }
    p = memalign(opaque(24), 10); check_block(p, 10, 32); free(p);
    errno = 0; CHECK(memalign(opaque(SIZE_MAX / 2 + 2), 1) == NULL); CHECK(errno == EINVAL);
    errno = 0; CHECK(memalign(64, opaque(SIZE_MAX - 10)) == NULL); CHECK(errno == ENOMEM);
    p = valloc(opaque(1)); check_block(p, 1, page); free(p);
    p = pvalloc(opaque(1)); check_block(p, page, page); free(p);
    p = pvalloc(opaque(0)); CHECK(p != NULL); free(p);
    errno = 0; CHECK(pvalloc(opaque(SIZE_MAX - 10)) == NULL); CHECK(errno == ENOMEM);

    /* pointers from every allocation function: usable size, realloc up and
     * down (contents kept), free */
    for (int kind = 0; kind < 8; kind++) {
        size_t size = 1 + 37 * (size_t)kind;
        switch (kind) {
        case 0: p = malloc(opaque(size)); break;
        case 1: p = calloc(1, opaque(size)); break;
        case 2: p = realloc(NULL, opaque(size)); break;
        case 3: if (posix_memalign(&p, 256, opaque(size)) != 0) p = NULL; break;
        case 4: p = aligned_alloc(4096, opaque(size)); break;
        case 5: p = memalign(8192, opaque(size)); break;
        case 6: p = valloc(opaque(size)); break;
        default: p = strdup("0123456789abcdef0123456789abcdef"); size = 33; break;
        }
        CHECK(p != NULL);
        if (p == NULL) continue;
        CHECK(malloc_usable_size(p) >= size);
        memset(p, 0x5c, size);
        q = realloc(p, opaque(size * 3 + 100000));
        CHECK(q != NULL && ((unsigned char *)q)[size - 1] == 0x5c);
        p = realloc(q, opaque(size));
        CHECK(p != NULL && ((unsigned char *)p)[0] == 0x5c);
        free(p);
    }

    /* malloc_usable_size, strdup */
    CHECK(malloc_usable_size(NULL) == 0);
    char *s = strdup("hello");
    CHECK(s && strcmp(s, "hello") == 0);
    free(s);

    printf("failures=%ld\n", failures);
    return finish(failures);
}
