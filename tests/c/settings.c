/* libgc's settings that must come before its initialization stay the
 * program's: each mode (argv[1]) makes one before GC_INIT(), then checks
 * that libgc reports it and behaves accordingly. Meanwhile the program
 * does what needs the shim (GC objects kept in a library's malloc memory, a
 * library thread that blocks every signal, holds objects on its stack and
 * collects), so that without the shim every mode fails, and a shim that
 * initialized libgc before the program fails the setting's own check.
 *
 * The GC_INIT_CONF_* part of GC_INIT() is exercised in every mode by the
 * defines below; the "init-conf" mode checks what they set. */
#define GC_FREE_SPACE_DIVISOR 4
#define GC_FULL_FREQ 7
#define GC_MAX_RETRIES 2
#define GC_TIME_LIMIT 80
#define GC_ALLOCD_BYTES_PER_FINALIZER 20000
#define GC_MAXIMUM_HEAP_SIZE (8UL << 30)
#define GC_INITIAL_HEAP_SIZE (24UL << 20)
#define GC_IGNORE_WARN
#define KEPT 4000
#include "library_work.h"
#include "gc_threads_api.h"
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

/* Objects in library memory and on a library thread's stack, collections:
 * the number lost. */
static long shim_work(void) {
    keep_in_library(0);
    long lost = library_thread_work(100000);
    collect_hard();
    lost += lost_from_library(0);
    printf("library objects lost=%ld\n", lost);
    return lost;
}

static long expect(const char *what, long got, long want) {
    printf("%s=%ld (want %ld)\n", what, got, want);
    return got != want;
}

/* ---- interior-pointers-off: GC_set_all_interior_pointers(0) ---- */

typedef struct node { struct node *next; unsigned long tag; } node;
#define CHAIN 20000
static node *chain;
static volatile long interior_finalized;
static void count_interior(void *obj, void *data) { (void)obj; (void)data; interior_finalized++; }
static char *volatile interior_only[100];

__attribute__((noinline)) static void make_interior_only(void) {
    for (int i = 0; i < 100; i++) {
        char *p = GC_MALLOC(64);
        GC_REGISTER_FINALIZER(p, count_interior, NULL, NULL, NULL);
        interior_only[i] = p + 16;
    }
}

static long interior_pointers_off(void) {
    long bad = expect("all_interior_pointers", GC_get_all_interior_pointers(), 0);
    for (unsigned long i = 0; i < CHAIN; i++) {
        node *n = GC_MALLOC(sizeof *n);
        n->tag = i;
        n->next = chain;
        chain = n;
    }
    make_interior_only();
    bad += shim_work();
    for (int i = 0; i < 3; i++) { churn(16); GC_gcollect(); }
    GC_invoke_finalizers();
    long count = 0;
    for (node *n = chain; n != NULL; n = n->next, count++)
        if (n->tag != (unsigned long)(CHAIN - 1 - count)) { bad++; break; }
    bad += expect("chain nodes kept", count, CHAIN);
    /* Only interior pointers left: libgc must not count them. */
    printf("objects held only by interior pointers finalized=%ld\n", interior_finalized);
    if (interior_finalized == 0) bad++;
    return bad;
}

/* ---- signals-moved: GC_set_suspend_signal, GC_set_thr_restart_signal ---- */

static volatile sig_atomic_t program_sigpwr, program_sigxcpu;
static void on_sigpwr(int sig) { (void)sig; program_sigpwr++; }
static void on_sigxcpu(int sig) { (void)sig; program_sigxcpu++; }

static void handle(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void move_signals(void) {
    /* The program uses libgc's default signals for itself. */
    handle(SIGPWR, on_sigpwr);
    handle(SIGXCPU, on_sigxcpu);
    GC_set_suspend_signal(SIGRTMIN + 6);
    GC_set_thr_restart_signal(SIGRTMIN + 7);
}

static int handler_is(int sig, void (*handler)(int)) {
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == handler;
}

static long signals_moved(void) {
    long bad = expect("suspend_signal", GC_get_suspend_signal(), SIGRTMIN + 6);
    bad += expect("thr_restart_signal", GC_get_thr_restart_signal(), SIGRTMIN + 7);
    bad += shim_work();
    /* The program's own handlers are still in place and still work. */
    bad += expect("program handles SIGPWR", handler_is(SIGPWR, on_sigpwr), 1);
    bad += expect("program handles SIGXCPU", handler_is(SIGXCPU, on_sigxcpu), 1);
    raise(SIGPWR);
    raise(SIGXCPU);
    bad += expect("SIGPWR handled", program_sigpwr, 1);
    bad += expect("SIGXCPU handled", program_sigxcpu, 1);
    return bad;
}

/* ---- fork-by-program: GC_set_handle_fork(0), the program calls
 * GC_atfork_prepare/parent/child itself (libgc must not have installed
 * its own handlers as well: both would take libgc's lock). ---- */

static volatile int stop_background;

static void *background(void *arg) {
    void *volatile ring[16] = {0};
    for (unsigned long n = 0; !stop_background; n++) {
        if (ring[n % 16] && !tracked_ok(ring[n % 16], n - 16)) return (void *)1L;
        ring[n % 16] = new_checked(n);
    }
    return arg;
}

/* Whether GC_atfork_prepare() takes libgc's lock, which it does only when
 * libgc installed no fork handlers of its own: a thread of the program's
 * tries a large allocation (which needs the lock) meanwhile, for 0.5 s. */
static sem_t probe_go, probe_done;

static void *lock_prober(void *arg) {
    while (sem_wait(&probe_go) != 0) {}
    (void)GC_MALLOC(100000);
    sem_post(&probe_done);
    return arg;
}

static int atfork_prepare_takes_lock(void) {
    sem_init(&probe_go, 0, 0);
    sem_init(&probe_done, 0, 0);
    stash_thread *prober = stash_start(STASH_JOINABLE, lock_prober, NULL);
    GC_atfork_prepare();
    sem_post(&probe_go);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += 500000000;
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }
    int rc;
    while ((rc = sem_timedwait(&probe_done, &deadline)) != 0 && errno == EINTR) {}
    GC_atfork_parent();
    if (rc != 0) while (sem_wait(&probe_done) != 0) {}
    stash_wait(prober);
    return rc != 0;
}

static long fork_by_program(void) {
    long bad = shim_work();
    bad += expect("GC_atfork_prepare takes libgc's lock", atfork_prepare_takes_lock(), 1);
    stash_thread *bg[2];
    for (int i = 0; i < 2; i++) bg[i] = stash_start(STASH_JOINABLE, background, NULL);
    usleep(20000);
    for (int k = 0; k < 3; k++) {
        fflush(stdout);
        settle_before_fork();
        GC_atfork_prepare();
        pid_t pid = fork();
        if (pid == 0) {
            GC_atfork_child();
            long child_bad = library_thread_work(200000 + k * 1000);
            collect_hard();
            child_bad += lost_from_library(0);
            printf("child %d lost=%ld\n", k, child_bad);
            fflush(stdout);
            _exit(child_bad == 0 && finalized_count == 0 ? 0 : 1);
        }
        GC_atfork_parent();
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
            || WEXITSTATUS(status) != 0) {
            printf("child %d failed (status %#x)\n", k, status);
            bad++;
        }
    }
    stop_background = 1;
    for (int i = 0; i < 2; i++) bad += (long)stash_wait(bg[i]);
    return bad;
}

/* ---- find-leak: GC_set_find_leak(1) ---- */

__attribute__((noinline)) static void leak_some(void) {
    for (int i = 0; i < 50; i++) {
        void *volatile p = GC_MALLOC(48);
        (void)p;
    }
}

/* Collects with libgc's reports going to a file; returns the reported
 * addresses' count, and how many of them the library still holds. */
static long find_leak(void) {
    long bad = expect("find_leak", GC_get_find_leak(), 1);
    keep_in_library(0);
    leak_some();
    char path[] = "/tmp/bdwgc-shim-find-leak-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    if (fd < 0 || saved < 0) return bad + 1;
    dup2(fd, 2);
    for (int i = 0; i < 3; i++) { GC_gcollect(); (void)GC_MALLOC(16); }
    dup2(saved, 2);
    close(saved);
    FILE *report = fopen(path, "r");
    unlink(path);
    long reported = 0, kept_reported = 0;
    char line[256];
    while (report && fgets(line, sizeof line, report)) {
        void *p;
        if (sscanf(line, "object at %p", &p) != 1) continue;
        reported++;
        for (int i = 0; i < KEPT; i++)
            if (stash_get(STASH_MALLOC, i) == p) { kept_reported++; break; }
    }
    if (report) fclose(report);
    close(fd);
    printf("leaks reported=%ld, of them kept by the library=%ld\n", reported, kept_reported);
    if (reported == 0) bad++;
    bad += kept_reported;
    bad += lost_from_library(0);
    return bad;
}

/* ---- pages-executable: GC_set_pages_executable(!default) ---- */

static int default_pages_executable;

/* Whether the mapping holding `p` is executable (-1: not found). */
static int mapping_executable(const void *p) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int result = -1;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
        if ((unsigned long)p >= start && (unsigned long)p < end) {
            result = perms[2] == 'x';
            break;
        }
    }
    if (maps) fclose(maps);
    return result;
}

static long pages_executable(void) {
    int want = !default_pages_executable;
    long bad = expect("pages_executable", GC_get_pages_executable(), want);
    /* A block from the heap libgc mapped at initialization. */
    void *first = GC_MALLOC(32);
    bad += expect("heap mapping executable", mapping_executable(first), want);
    bad += shim_work();
    return bad;
}

/* ---- stack-bottom: GC_set_stackbottom on the main thread ---- */

static void *program_stack_bottom;

static long stack_bottom(void) {
    struct GC_stack_base sb;
    GC_get_my_stackbottom(&sb);
    printf("stack bottom %s the program's\n", sb.mem_base == program_stack_bottom ? "is" : "is not");
    long bad = sb.mem_base != program_stack_bottom;
    return bad + shim_work();
}

/* ---- markers: GC_set_markers_count ---- */

static long markers(void) {
    GC_allow_register_threads(); /* starts the markers, if not yet */
    long bad = expect("parallel (markers - 1)", GC_get_parallel(), 2);
    return bad + shim_work();
}

/* ---- init-conf: what GC_INIT's GC_INIT_CONF_* part set ---- */

static long init_conf(void) {
    long bad = expect("free_space_divisor", (long)GC_get_free_space_divisor(), GC_FREE_SPACE_DIVISOR);
    bad += expect("full_freq", GC_get_full_freq(), GC_FULL_FREQ);
    bad += expect("max_retries", (long)GC_get_max_retries(), GC_MAX_RETRIES);
    bad += expect("time_limit", (long)GC_get_time_limit(), GC_TIME_LIMIT);
    bad += expect("allocd_bytes_per_finalizer", (long)GC_get_allocd_bytes_per_finalizer(),
                  GC_ALLOCD_BYTES_PER_FINALIZER);
    printf("heap size >= initial: %d\n", GC_get_heap_size() >= GC_INITIAL_HEAP_SIZE);
    bad += GC_get_heap_size() < GC_INITIAL_HEAP_SIZE;
    return bad + shim_work();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    /* Each setting, before GC_INIT(). */
    if (strcmp(mode, "interior-pointers-off") == 0) {
        GC_set_all_interior_pointers(0);
    } else if (strcmp(mode, "signals-moved") == 0) {
        move_signals();
    } else if (strcmp(mode, "fork-by-program") == 0) {
        GC_set_handle_fork(0);
    } else if (strcmp(mode, "find-leak") == 0) {
        GC_set_find_leak(1);
    } else if (strcmp(mode, "pages-executable") == 0) {
        default_pages_executable = GC_get_pages_executable();
        GC_set_pages_executable(!default_pages_executable);
    } else if (strcmp(mode, "stack-bottom") == 0) {
        /* Just above main's frame: neither libgc's nor glibc's idea. */
        program_stack_bottom = (char *)__builtin_frame_address(0) + 16;
        struct GC_stack_base sb = {program_stack_bottom};
        GC_set_stackbottom(NULL, &sb);
    } else if (strcmp(mode, "markers") == 0) {
        unsetenv("GC_MARKERS"); /* it would win over the call */
        GC_set_markers_count(3);
    } else if (strcmp(mode, "init-conf") != 0) {
        fprintf(stderr, "usage: %s MODE\n", argv[0]);
        return 2;
    }
    GC_INIT();
    print_shim_state();
    printf("mode=%s\n", mode);
    long bad;
    if (strcmp(mode, "interior-pointers-off") == 0) bad = interior_pointers_off();
    else if (strcmp(mode, "signals-moved") == 0) bad = signals_moved();
    else if (strcmp(mode, "fork-by-program") == 0) bad = fork_by_program();
    else if (strcmp(mode, "find-leak") == 0) bad = find_leak();
    else if (strcmp(mode, "pages-executable") == 0) bad = pages_executable();
    else if (strcmp(mode, "stack-bottom") == 0) bad = stack_bottom();
    else if (strcmp(mode, "markers") == 0) bad = markers();
    else bad = init_conf();
    stash_clear();
    return finish(bad);
}
