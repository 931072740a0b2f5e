// Code that runs after a thread's start routine returned: a C++
// thread_local destructor and a pthread-key destructor (of a key the program
// made after the shim's) allocate GC objects, keep them in malloc memory,
// collect, and check them. The thread must still be registered then.
#include <gc.h>
#include <pthread.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" int bdwgc_shim_is_active(void) __attribute__((weak));

static std::atomic<long> problems{0}, ran{0};

static void allocate_collect_check(unsigned long tag) {
    void **block = static_cast<void **>(malloc(64));
    unsigned long *obj = static_cast<unsigned long *>(GC_MALLOC(64));
    obj[0] = tag;
    obj[7] = ~tag;
    block[3] = obj;
    obj = nullptr;
    GC_gcollect();
    for (int i = 0; i < 20000; i++) static_cast<char *>(GC_MALLOC(48))[0] = 1;
    unsigned long *back = static_cast<unsigned long *>(block[3]);
    if (back[0] != tag || back[7] != ~tag) problems++;
    free(block);
    ran++;
}

struct AtThreadExit {
    unsigned long tag = 0;
    ~AtThreadExit() {
        if (tag) allocate_collect_check(tag);
    }
};
static thread_local AtThreadExit at_exit;

static pthread_key_t key;
static void key_destructor(void *value) { allocate_collect_check(reinterpret_cast<unsigned long>(value)); }

// A destructor that re-arms itself for all of glibc's rounds, so that its
// last call comes after the shim has unregistered the thread: it only
// allocates and frees with malloc (what a GC-unaware library does), holding
// each round's block into the next.
static pthread_key_t late_key;
static thread_local void *late_block;
static thread_local int late_rounds;
static void late_destructor(void *value) {
    free(late_block);
    late_block = malloc(100 + late_rounds);
    std::memset(late_block, late_rounds, 100);
    if (++late_rounds < 4) {
        pthread_setspecific(late_key, value);
    } else {
        free(late_block);
        late_block = nullptr;
        ran++;
    }
}

static void *body(void *arg) {
    unsigned long n = reinterpret_cast<unsigned long>(arg);
    at_exit.tag = 1000 + n;
    pthread_setspecific(key, reinterpret_cast<void *>(5000 + n));
    pthread_setspecific(late_key, reinterpret_cast<void *>(1));
    return nullptr;
}

int main() {
    GC_INIT();
    std::printf("shim=%s\n", bdwgc_shim_is_active && bdwgc_shim_is_active() ? "active" : "absent");
    std::fflush(stdout);
    pthread_key_create(&key, key_destructor);
    pthread_key_create(&late_key, late_destructor);
    const int threads = 50;
    for (unsigned long n = 1; n <= threads; n++) {
        pthread_t t;
        if (pthread_create(&t, nullptr, body, reinterpret_cast<void *>(n)) != 0) return 3;
        pthread_join(t, nullptr);
    }
    std::printf("destructors run=%ld problems=%ld\n", ran.load(), problems.load());
    bool ok = ran == 3 * threads && problems == 0;
    std::printf("lost=%ld finalized=0\nRESULT %s\n", problems.load(), ok ? "ok" : "fail");
    return ok ? 0 : 1;
}
