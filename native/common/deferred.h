/*
 * Memory freed after the current epoll batch: a thread that owns its objects frees one (a
 * finished connection, a closed session) while events already fetched in the same batch may still
 * name it; the event's tag is cleared, the memory goes when the batch ends. Used by the pump
 * (native/pump/) and the tunnel engine (native/tunnel/); plain C, one owner thread each.
 */
#ifndef ZIPLINE_DEFERRED_H
#define ZIPLINE_DEFERRED_H
#include <stddef.h>

typedef struct deferred {
  void **p;
  size_t n, cap;
} deferred_t;

/* Frees `p` at the next deferred_run(); if the list cannot grow, `p` leaks rather than going early. */
void deferred_add(deferred_t *d, void *p);
/* Frees everything added so far. */
void deferred_run(deferred_t *d);
#endif
