/* libgc's thread functions, which gc.h declares only under GC_THREADS.
 * The scenario programs leave GC_THREADS undefined so that their
 * pthread_create stays glibc's (GC_THREADS would redirect it to
 * GC_pthread_create), as in a program whose threads libgc does not know;
 * the ones that configure or register threads themselves include this. */
#ifndef GC_THREADS_API_H
#define GC_THREADS_API_H
#include <gc.h>

GC_API int GC_CALL GC_get_parallel(void);
GC_API void GC_CALL GC_set_markers_count(unsigned);
GC_API void GC_CALL GC_set_suspend_signal(int);
GC_API void GC_CALL GC_set_thr_restart_signal(int);
GC_API int GC_CALL GC_get_suspend_signal(void);
GC_API int GC_CALL GC_get_thr_restart_signal(void);
GC_API void GC_CALL GC_allow_register_threads(void);
GC_API int GC_CALL GC_register_my_thread(const struct GC_stack_base *);
GC_API int GC_CALL GC_unregister_my_thread(void);
#endif
