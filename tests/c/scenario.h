/* Helpers shared by the scenario programs: GC objects whose loss can be
 * seen (a checked pattern and a finalizer that must not run), hard
 * collections, and the closing line the test harness reads. */
#ifndef SCENARIO_H
#define SCENARIO_H
#define _GNU_SOURCE
#include <gc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The shim's C API, weakly: the same program runs with and without it. */
#include "bdwgc_shim.h"
#pragma weak bdwgc_shim_is_active
#pragma weak bdwgc_shim_get_stats
#pragma weak bdwgc_shim_version

typedef struct tracked {
    unsigned long tag, check;
    char payload[48];
} tracked;

static volatile long finalized_count;
static void on_finalize(void *obj, void *data) {
    (void)obj; (void)data;
    __atomic_add_fetch(&finalized_count, 1, __ATOMIC_RELAXED);
}

static unsigned long check_of(unsigned long tag) { return ~tag ^ 0x5a5aa5a5c3c33c3cUL; }

/* An object whose loss shows only in its pattern (no finalizer): for
 * objects that die at a time the program does not control. */
static void *new_checked(unsigned long tag) {
    tracked *t = GC_MALLOC(sizeof *t);
    if (t == NULL) { fprintf(stderr, "GC_MALLOC failed\n"); exit(3); }
    t->tag = tag;
    t->check = check_of(tag);
    memset(t->payload, (int)(tag & 0xff), sizeof t->payload);
    return t;
}

__attribute__((unused)) static void *new_tracked(unsigned long tag) {
    void *t = new_checked(tag);
    GC_REGISTER_FINALIZER(t, on_finalize, NULL, NULL, NULL);
    return t;
}

static int tracked_ok(const void *p, unsigned long tag) {
    const tracked *t = p;
    return t != NULL && t->tag == tag && t->check == check_of(tag)
        && (unsigned char)t->payload[47] == (unsigned char)(tag & 0xff);
}

/* Checks `p` and lets it die quietly: its finalizer is removed, so that
 * only objects lost while still in use count as finalized. */
__attribute__((unused)) static int release_tracked(void *p, unsigned long tag) {
    int ok = tracked_ok(p, tag);
    if (ok) GC_REGISTER_FINALIZER(p, NULL, NULL, NULL, NULL);
    return ok;
}

/* Allocates `megabytes` of garbage, so that freed objects get reused. */
static void churn(int megabytes) {
    for (long i = 0; i < (long)megabytes * 1024 * 1024 / 96; i++) {
        char *p = GC_MALLOC(96);
        p[0] = (char)i;
    }
}

/* Several full collections with heavy allocation between them. */
__attribute__((unused)) static void collect_hard(void) {
    for (int i = 0; i < 3; i++) {
        GC_gcollect();
        churn(8);
    }
    GC_gcollect();
    GC_invoke_finalizers();
}

static int shim_active(void) { return bdwgc_shim_is_active && bdwgc_shim_is_active(); }

static void print_shim_state(void) {
    printf("shim=%s\n", shim_active() ? "active" : "absent");
    fflush(stdout);
}

/* The shim's counters, all zero without the shim. */
__attribute__((unused)) static bdwgc_shim_stats shim_stats(void) {
    bdwgc_shim_stats s = {0};
    if (bdwgc_shim_get_stats) bdwgc_shim_get_stats(&s);
    return s;
}

/* The process's resident set, in KiB, from /proc/self/statm. */
__attribute__((unused)) static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Whether this runs under qemu-user (the aarch64 tests run there), which
 * changes two things a program can measure: it writes /proc/self/smaps for
 * its guest with every Rss at 0, where a kernel counts at least the stack
 * this runs on; and the RSS is the emulator's, which keeps about 40 KiB
 * for every thread the guest ever ran. */
__attribute__((unused)) static int under_qemu_user(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL) return 0;
    char line[256];
    long kib, total = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Rss: %ld kB", &kib) == 1) total += kib;
    fclose(f);
    return total == 0;
}

/* Before a fork soon after threads ended: under qemu-user, a host thread
 * of the emulator finishes a thread's exit after the guest's join returns,
 * and a child forked meanwhile deadlocks inside the emulator (a plain
 * pthread program: 13 of 60 such children hung under qemu-aarch64 10.0,
 * none after 200 ms; none natively). Nothing to wait for on a kernel. */
__attribute__((unused)) static void settle_before_fork(void) {
    if (under_qemu_user()) usleep(200000);
}

/* The line the harness reads; the exit status says the same. */
static int finish(long lost) {
    long finalized = __atomic_load_n(&finalized_count, __ATOMIC_RELAXED);
    printf("lost=%ld finalized=%ld\n", lost, finalized);
    int ok = lost == 0 && finalized == 0;
    printf("RESULT %s\n", ok ? "ok" : "fail");
    fflush(stdout);
    return ok ? 0 : 1;
}

#endif
