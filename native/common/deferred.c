/* The deferred-free list (deferred.h). */
#include "deferred.h"

#include <stdlib.h>

void deferred_add(deferred_t *d, void *p) {
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 64;
    void **grown = realloc(d->p, cap * sizeof *grown);
    if (grown == NULL) return; /* leak rather than free too early */
    d->p = grown;
    d->cap = cap;
  }
  d->p[d->n++] = p;
}

void deferred_run(deferred_t *d) {
  for (size_t i = 0; i < d->n; i++) free(d->p[i]);
  d->n = 0;
}
