/* fork() while library threads allocate: the child allocates, keeps
 * objects in library memory, starts a thread that collects, and collects;
 * then a child that does the same and execs, posix_spawn and system(). */
#include "scenario.h"
#include "stash.h"
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *background(void *arg) {
    void *volatile ring[16] = {0};
    for (unsigned long n = 0; !stop; n++) {
        if (ring[n % 16] && !tracked_ok(ring[n % 16], n - 16)) return (void *)1L;
        ring[n % 16] = new_checked(n);
    }
    return arg;
}

static void *collecting_callback(void *arg) {
    void *volatile held = new_tracked(99);
    collect_hard();
    return (void *)(long)!release_tracked(held, 99);
    (void)arg;
}

static long verify(int count, unsigned long base) {
    long lost = 0;
    for (int i = 0; i < count; i++) lost += !tracked_ok(stash_get(STASH_MALLOC, i), base + i);
    return lost;
}

int main(void) {
    GC_INIT();
    print_shim_state();
    for (int i = 0; i < 1000; i++) stash_keep(STASH_MALLOC, new_tracked(i));
    stash_thread *bg[2];
    for (int i = 0; i < 2; i++) bg[i] = stash_start(STASH_JOINABLE, background, NULL);
    usleep(50000);
    long lost = 0;
    for (int k = 0; k < 3; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 1000; i < 1500; i++) stash_keep(STASH_MALLOC, new_tracked(i));
            long child_lost = (long)stash_wait(stash_start(STASH_JOINABLE, collecting_callback, NULL));
            collect_hard();
            child_lost += verify(1500, 0);
            printf("child %d lost=%ld\n", k, child_lost);
            fflush(stdout);
            _exit(child_lost == 0 && finalized_count == 0 ? 0 : 1);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("child %d failed (status %#x)\n", k, status);
            lost++;
        }
    }
    /* A child that works, then execs; posix_spawn; system(). */
    pid_t pid = fork();
    if (pid == 0) {
        stash_wait(stash_start(STASH_JOINABLE, collecting_callback, NULL));
        GC_gcollect();
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("fork+exec failed (status %#x)\n", status);
        lost++;
    }
    extern char **environ;
    char *argv_sh[] = {"sh", "-c", "exit 0", NULL};
    if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv_sh, environ) != 0
        || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("posix_spawn failed (status %#x)\n", status);
        lost++;
    }
    if (system("exit 0") != 0) {
        printf("system() failed\n");
        lost++;
    }
    stop = 1;
    for (int i = 0; i < 2; i++) lost += (long)stash_wait(bg[i]);
    collect_hard();
    lost += verify(1000, 0);
    return finish(lost);
}
