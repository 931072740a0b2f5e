/* bdwgc-shim: makes a whole process safe for the Boehm-Demers-Weiser
 * garbage collector (libgc), including the C libraries it uses.
 *
 * Linking or preloading libbdwgc_shim is all it takes; nothing here has to
 * be called. These functions let a program check that the shim is in place
 * (see README.md for the link lines; installed: pkg-config bdwgc-shim).
 * Active on Linux/glibc x86_64 and aarch64; on other platforms the library
 * defines only these functions and reports inactive.
 *
 * SPDX-License-Identifier: MIT */
#ifndef BDWGC_SHIM_H
#define BDWGC_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bdwgc_shim_stats {
    /* Allocations served by the collector: scanned, never collected until
     * freed. Counted per thread and added up every 256 allocations, so a
     * snapshot may miss some recent allocations of other running threads. */
    uint64_t allocations_routed;
    /* Allocations served by glibc because the shim was not set up yet
     * (ld.so, constructors that ran before the shim's). */
    uint64_t allocations_before_init;
    /* Allocations served by glibc after set-up: made while libgc itself ran
     * on that thread, or by a thread that had already left the collector. */
    uint64_t allocations_fallback;
    /* Threads the shim registered with the collector. */
    uint64_t threads_registered;
    /* Frees delayed because libgc might have held its lock. */
    uint64_t deferred_frees;
    /* Address space the shim's regions have mapped (blocks and tables). */
    uint64_t bytes_mapped;
    /* How much of it is in memory. */
    uint64_t bytes_resident;
    /* Bytes of blocks handed out and not freed (with the free small blocks
     * threads keep in their caches). */
    uint64_t bytes_in_use;
    /* Free bytes the regions keep for reuse, with their pages. */
    uint64_t bytes_free;
    /* Free bytes whose pages went back to the kernel (still mapped). */
    uint64_t bytes_purged;
} bdwgc_shim_stats;

/* The shim's version, e.g. "0.1.0". */
const char *bdwgc_shim_version(void);

/* 1 when the shim routes this process's allocations and threads through the
 * collector; 0 when it is inactive (unsupported platform, no libgc linked). */
int bdwgc_shim_is_active(void);

/* Fills *out with the current counters. */
void bdwgc_shim_get_stats(bdwgc_shim_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* BDWGC_SHIM_H */
