/* libearly: a GC-unaware library whose constructor runs before main (and,
 * when the shim is linked statically, before the shim's): it allocates, and
 * starts a worker thread that the program uses much later. */
#ifndef EARLY_H
#define EARLY_H
#include <stddef.h>

#define EARLY_BLOCKS 64
/* The blocks the constructor allocated, each 256 bytes. */
void **early_blocks(void);
/* Runs callback(arg) on the thread the constructor started; returns its result. */
void *early_run(void *(*callback)(void *), void *arg);
/* Ends and joins that thread. */
void early_stop(void);
#endif
