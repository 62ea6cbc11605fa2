/*
 * zipline shared-memory bridge, C side. See native/include/zipline_shm.h and docs/SHM.md.
 * POSIX (shm_open + mmap); Linux futexes for wake-ups, a short sleep loop elsewhere.
 */
#define _GNU_SOURCE
#include "zipline_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

struct zl_shm {
  zl_shm_header *h;
  size_t size;
  int role;
  /* The identity as validated at open. Every size and offset used afterwards comes from this
     private copy, never from the segment: a peer that scribbles on the header cannot move an
     access outside the mapping. */
  zl_shm_identity id;
  uint64_t corrupt; /* ring slots this handle's recv skipped as malformed */
  uint8_t *snap;  /* buffer 0 */
  uint8_t *c2n;   /* ring slots */
  uint8_t *n2c;
};

/* ---- small helpers -------------------------------------------------------------------------- */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A process's start time (clock ticks since boot, /proc/PID/stat field 22); 0 when unknown. */
static uint64_t start_time(uint32_t pid) {
#if defined(__linux__)
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%u/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the command name may contain spaces */
  if (p == NULL) return 0;
  /* fields after ')': state(3) ppid(4) ... starttime(22) */
  int field = 2;
  for (char *s = p + 1; *s; s++) {
    if (*s == ' ' && ++field == 22) return strtoull(s + 1, NULL, 10);
  }
  return 0;
#else
  (void)pid;
  return 0;
#endif
}

/* The holder of a lock word is gone: no such pid, or the pid now names another process. */
static int owner_dead(uint32_t pid, uint64_t started) {
  if (pid == 0) return 0;
  if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) return 1;
  uint64_t now = start_time(pid);
  return started != 0 && now != 0 && now != started;
}

static void futex_wake(_Atomic uint32_t *word) {
#if defined(__linux__)
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
#else
  (void)word;
#endif
}

/* Sleeps while *word == expected, at most timeout_ms (-1: forever). */
static void futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms) {
#if defined(__linux__)
  struct timespec ts, *tp = NULL;
  if (timeout_ms >= 0) {
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    tp = &ts;
  }
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
#else
  (void)word;
  (void)expected;
  struct timespec ts = {0, 200000}; /* 0.2 ms */
  if (timeout_ms != 0) nanosleep(&ts, NULL);
#endif
}

static int is_pow2(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

static uint64_t align64(uint64_t v) { return (v + 63u) & ~(uint64_t)63u; }

/* ---- open / close ------------------------------------------------------------------------------ */

static void layout(zl_shm_identity *id, uint32_t cap, uint32_t slots, uint32_t slot_size) {
  id->snapshot_capacity = cap;
  id->ring_slots = slots;
  id->ring_slot_size = slot_size;
  id->snapshot_offset = ZL_SHM_HEADER_SIZE;
  id->snapshot_stride = align64(ZL_SHM_PREFIX + (uint64_t)cap);
  id->ring_c2n_offset = id->snapshot_offset + 2 * id->snapshot_stride;
  id->ring_n2c_offset = id->ring_c2n_offset + (uint64_t)slots * slot_size;
  id->total_size = id->ring_n2c_offset + (uint64_t)slots * slot_size;
}

/* Validates a copy of the identity (taken once, so a peer cannot change it between the check and
   the use) against the mapping's real size. */
static int validate(const zl_shm_identity *id, size_t size) {
  if (size < sizeof(zl_shm_identity) || memcmp(id->magic, ZL_SHM_MAGIC, 8) != 0) return ZL_SHM_EMAGIC;
  if (id->version != ZL_SHM_VERSION) return ZL_SHM_EVERSION;
  zl_shm_identity want;
  memset(&want, 0, sizeof want);
  layout(&want, id->snapshot_capacity, id->ring_slots, id->ring_slot_size);
  if (id->header_size != ZL_SHM_HEADER_SIZE || !is_pow2(id->ring_slots) || id->ring_slot_size < 32 ||
      id->ring_slot_size % 16 != 0 || want.total_size != id->total_size || id->total_size != size ||
      id->snapshot_offset != want.snapshot_offset || id->snapshot_stride != want.snapshot_stride ||
      id->ring_c2n_offset != want.ring_c2n_offset || id->ring_n2c_offset != want.ring_n2c_offset)
    return ZL_SHM_ESIZE;
  return ZL_SHM_OK;
}

int zl_shm_open(const char *name, const zl_shm_options *opts, zl_shm **out) {
  if (name == NULL || name[0] != '/' || out == NULL) return ZL_SHM_EINVAL;
  zl_shm_options o = {0};
  if (opts != NULL) o = *opts;
  uint32_t cap = o.snapshot_capacity ? o.snapshot_capacity : 64 * 1024;
  uint32_t slots = o.ring_slots ? o.ring_slots : 1024;
  uint32_t slot_size = o.ring_slot_size ? o.ring_slot_size : 256;
  if (!is_pow2(slots) || slot_size < 32 || slot_size % 16 != 0) return ZL_SHM_EINVAL;
  if (o.role != ZL_SHM_ROLE_C && o.role != ZL_SHM_ROLE_NODE && o.role != ZL_SHM_ROLE_OBSERVER) return ZL_SHM_EINVAL;
  int created = 0;
  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0 && errno == ENOENT && o.create) {
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, o.mode ? (mode_t)o.mode : 0600);
    if (fd >= 0) created = 1;
    else if (errno == EEXIST) fd = shm_open(name, O_RDWR, 0); /* lost a creation race */
  }
  if (fd < 0) return errno == ENOENT ? ZL_SHM_ENOENT : ZL_SHM_ESYS;
  zl_shm_identity want;
  memset(&want, 0, sizeof want);
  layout(&want, cap, slots, slot_size);
  size_t size;
  if (created) {
    if (ftruncate(fd, (off_t)want.total_size) < 0) {
      int e = errno;
      close(fd);
      shm_unlink(name);
      errno = e;
      return ZL_SHM_ESYS;
    }
    size = (size_t)want.total_size;
  } else {
    struct stat st;
    if (fstat(fd, &st) < 0) {
      close(fd);
      return ZL_SHM_ESYS;
    }
    size = (size_t)st.st_size;
    if (size < ZL_SHM_HEADER_SIZE) {
      close(fd);
      return size == 0 ? ZL_SHM_EMAGIC : ZL_SHM_ESIZE;
    }
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return ZL_SHM_ESYS;
  zl_shm_header *h = p;
  zl_shm_identity id;
  memset(&id, 0, sizeof id);
  if (created) {
    layout(&id, cap, slots, slot_size);
    id.version = ZL_SHM_VERSION;
    id.header_size = ZL_SHM_HEADER_SIZE;
    id.creator_pid = (uint32_t)getpid();
    id.created_unix_ms = now_ms();
    /* everything after the magic, then the magic last: attachers validate it */
    memcpy((uint8_t *)&h->id + 8, (const uint8_t *)&id + 8, sizeof id - 8);
    atomic_thread_fence(memory_order_release);
    memcpy(h->id.magic, ZL_SHM_MAGIC, 8);
    memcpy(id.magic, ZL_SHM_MAGIC, 8);
  } else {
    /* a creator may still be initialising: give it a moment */
    for (int i = 0; i < 200 && memcmp(h->id.magic, ZL_SHM_MAGIC, 8) != 0; i++) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    atomic_thread_fence(memory_order_acquire);
    memcpy(&id, &h->id, sizeof id);
    int v = validate(&id, size);
    if (v == ZL_SHM_OK && opts != NULL && opts->snapshot_capacity != 0 &&
        (id.snapshot_capacity != opts->snapshot_capacity ||
         (opts->ring_slots != 0 && id.ring_slots != opts->ring_slots) ||
         (opts->ring_slot_size != 0 && id.ring_slot_size != opts->ring_slot_size)))
      v = ZL_SHM_ESIZE;
    if (v != ZL_SHM_OK) {
      munmap(p, size);
      return v;
    }
  }
  zl_shm *s = calloc(1, sizeof *s);
  if (s == NULL) {
    munmap(p, size);
    return ZL_SHM_ESYS;
  }
  s->h = h;
  s->size = size;
  s->role = o.role;
  s->id = id;
  s->snap = (uint8_t *)p + id.snapshot_offset;
  s->c2n = (uint8_t *)p + id.ring_c2n_offset;
  s->n2c = (uint8_t *)p + id.ring_n2c_offset;
  uint32_t me = (uint32_t)getpid();
  if (s->role == ZL_SHM_ROLE_C) {
    atomic_store(&h->c2n_prod.pid, me);
    atomic_store(&h->n2c_cons.pid, me);
  } else if (s->role == ZL_SHM_ROLE_NODE) {
    atomic_store(&h->n2c_prod.pid, me);
    atomic_store(&h->c2n_cons.pid, me);
  }
  *out = s;
  return ZL_SHM_OK;
}

void zl_shm_close(zl_shm *s) {
  if (s == NULL) return;
  munmap(s->h, s->size);
  free(s);
}

int zl_shm_unlink(const char *name) {
  if (shm_unlink(name) == 0) return ZL_SHM_OK;
  return errno == ENOENT ? ZL_SHM_ENOENT : ZL_SHM_ESYS;
}

zl_shm_header *zl_shm_header_of(zl_shm *s) { return s->h; }

/* ---- snapshot ------------------------------------------------------------------------------------ */

static zl_shm_snapshot_buffer *buffer(zl_shm *s, uint32_t i) {
  return (zl_shm_snapshot_buffer *)(s->snap + (uint64_t)(i & 1u) * s->id.snapshot_stride);
}

/* Takes the writer lock, stealing it from a dead holder; spins at most ~2 ms for a live one. */
static int lock(zl_shm *s) {
  zl_shm_snapshot_writer *w = &s->h->snap;
  uint32_t me = (uint32_t)getpid();
  uint64_t deadline = mono_ns() + 2000000u;
  for (;;) {
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&w->lock, &expected, me)) {
      atomic_store(&w->lock_start, start_time(me));
      return ZL_SHM_OK;
    }
    uint64_t started = atomic_load(&w->lock_start);
    if (owner_dead(expected, started)) {
      if (atomic_compare_exchange_strong(&w->lock, &expected, me)) {
        atomic_store(&w->lock_start, start_time(me));
        atomic_fetch_add(&w->steals, 1);
        /* a write cut short left the *inactive* buffer odd; make it even again */
        zl_shm_snapshot_buffer *b = buffer(s, atomic_load(&w->active) ^ 1u);
        uint32_t seq = atomic_load(&b->seq);
        if (seq & 1u) atomic_store(&b->seq, seq + 1u);
        return ZL_SHM_OK;
      }
      continue;
    }
    if (mono_ns() > deadline) return ZL_SHM_EBUSY;
    sched_yield();
  }
}

static void unlock(zl_shm *s) { atomic_store(&s->h->snap.lock, 0u); }

static int write_snapshot(zl_shm *s, const void *data, uint32_t len, int check, uint64_t expected,
                          uint64_t *version_out) {
  if (s == NULL || (data == NULL && len != 0)) return ZL_SHM_EINVAL;
  if (len > s->id.snapshot_capacity) return ZL_SHM_ETOOBIG;
  int r = lock(s);
  if (r != ZL_SHM_OK) return r;
  zl_shm_snapshot_writer *w = &s->h->snap;
  if (check && atomic_load(&w->version) != expected) {
    unlock(s);
    if (version_out) *version_out = atomic_load(&w->version);
    return ZL_SHM_ECONFLICT;
  }
  uint32_t next = (atomic_load(&w->active) & 1u) ^ 1u; /* & 1: a scribbled index stays in range */
  zl_shm_snapshot_buffer *b = buffer(s, next);
  uint64_t version = atomic_load(&w->version) + 1u;
  /* odd while being written (`| 1`: a sequence some peer left odd is not turned even by this) */
  uint32_t odd = atomic_load_explicit(&b->seq, memory_order_relaxed) | 1u;
  atomic_store_explicit(&b->seq, odd, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  b->len = len;
  b->version = version;
  if (len) memcpy((uint8_t *)(b + 1), data, len);
  atomic_store_explicit(&b->seq, odd + 1u, memory_order_release); /* even: complete */
  atomic_store_explicit(&w->active, next, memory_order_release);
  atomic_store_explicit(&w->version, version, memory_order_release);
  atomic_fetch_add(&w->writes, 1);
  atomic_fetch_add(&w->notify, 1u);
  unlock(s);
  futex_wake(&w->notify);
  if (version_out) *version_out = version;
  return ZL_SHM_OK;
}

int zl_shm_snapshot_write(zl_shm *s, const void *data, uint32_t len, uint64_t *version_out) {
  return write_snapshot(s, data, len, 0, 0, version_out);
}

int zl_shm_snapshot_write_if(zl_shm *s, const void *data, uint32_t len, uint64_t expected, uint64_t *version_out) {
  return write_snapshot(s, data, len, 1, expected, version_out);
}

/* Tests only: a read without the sequence check, to show what the check prevents. */
int zl_shm__snapshot_read_unchecked(zl_shm *s, void *out, uint32_t cap, uint32_t *len_out, uint64_t *version_out);

/* Reads the published buffer. Gives up after ~2 ms without a consistent copy: EBUSY when a writer
   may still be at work, ECORRUPT when what is published cannot be a writer's (a stable, even
   sequence with a length over the capacity, or an odd one on the published buffer while nobody
   holds the lock): a peer scribbled on the segment; the next write publishes the other buffer. */
static int read_snapshot(zl_shm *s, void *out, uint32_t cap, uint32_t *len_out, uint64_t *version_out, int checked) {
  zl_shm_snapshot_writer *w = &s->h->snap;
  uint64_t deadline = 0;
  int corrupt = 0;
  for (uint32_t tries = 1;; tries++) {
    if ((tries & 63u) == 0) {
      uint64_t now = mono_ns();
      if (deadline == 0) deadline = now + 2000000u;
      else if (now > deadline) return corrupt ? ZL_SHM_ECORRUPT : ZL_SHM_EBUSY;
    }
    if (atomic_load_explicit(&w->version, memory_order_acquire) == 0) return ZL_SHM_EEMPTY;
    zl_shm_snapshot_buffer *b = buffer(s, atomic_load_explicit(&w->active, memory_order_acquire));
    uint32_t s1 = atomic_load_explicit(&b->seq, memory_order_acquire);
    if (checked && (s1 & 1u)) { /* the writer came round to this buffer: take the other */
      corrupt = atomic_load_explicit(&w->lock, memory_order_relaxed) == 0;
      continue;
    }
    uint32_t len = b->len;
    uint64_t version = b->version;
    if (len > s->id.snapshot_capacity) { /* torn, or scribbled when the sequence did not move */
      corrupt = atomic_load_explicit(&b->seq, memory_order_acquire) == s1;
      continue;
    }
    if (len > cap) {
      if (len_out) *len_out = len;
      return ZL_SHM_ETRUNC;
    }
    if (len) memcpy(out, (uint8_t *)(b + 1), len);
    atomic_thread_fence(memory_order_acquire);
    uint32_t s2 = atomic_load_explicit(&b->seq, memory_order_relaxed);
    if (checked && s1 != s2) continue;
    if (len_out) *len_out = len;
    if (version_out) *version_out = version;
    return ZL_SHM_OK;
  }
}

int zl_shm_snapshot_read(zl_shm *s, void *out, uint32_t cap, uint32_t *len_out, uint64_t *version_out) {
  if (s == NULL || (out == NULL && cap != 0)) return ZL_SHM_EINVAL;
  return read_snapshot(s, out, cap, len_out, version_out, 1);
}

int zl_shm__snapshot_read_unchecked(zl_shm *s, void *out, uint32_t cap, uint32_t *len_out, uint64_t *version_out) {
  return read_snapshot(s, out, cap, len_out, version_out, 0);
}

/* ---- rings ------------------------------------------------------------------------------------------ */

static zl_shm_slot *slot_at(zl_shm *s, uint8_t *slots, uint64_t seq) {
  return (zl_shm_slot *)(slots + (seq & (s->id.ring_slots - 1u)) * s->id.ring_slot_size);
}

int zl_shm_send(zl_shm *s, const void *msg, uint32_t len) {
  if (s == NULL || (msg == NULL && len != 0) || s->role == ZL_SHM_ROLE_OBSERVER) return ZL_SHM_EINVAL;
  const zl_shm_identity *id = &s->id;
  if (len > id->ring_slot_size - ZL_SHM_PREFIX) return ZL_SHM_ETOOBIG;
  int c = s->role == ZL_SHM_ROLE_C;
  zl_shm_ring_producer *p = c ? &s->h->c2n_prod : &s->h->n2c_prod;
  zl_shm_ring_consumer *q = c ? &s->h->c2n_cons : &s->h->n2c_cons;
  uint8_t *slots = c ? s->c2n : s->n2c;
  uint64_t head = atomic_load_explicit(&p->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
  if (head - tail >= id->ring_slots) {
    atomic_fetch_add(&p->dropped, 1);
    return ZL_SHM_EFULL;
  }
  zl_shm_slot *slot = slot_at(s, slots, head);
  slot->len = len;
  slot->seq = head;
  if (len) memcpy((uint8_t *)(slot + 1), msg, len);
  atomic_store_explicit(&p->head, head + 1u, memory_order_release);
  atomic_store_explicit(&p->notify, (uint32_t)(head + 1u), memory_order_release);
  atomic_store_explicit(&p->heartbeat_ms, now_ms(), memory_order_relaxed);
  if (atomic_load_explicit(&q->waiting, memory_order_acquire)) futex_wake(&p->notify);
  return ZL_SHM_OK;
}

/* The consumer's view of the ring it reads (the Node -> C ring for role C, else C -> Node). */
typedef struct {
  zl_shm_ring_producer *p;
  zl_shm_ring_consumer *q;
  uint8_t *slots;
} ring_in;

static ring_in incoming(zl_shm *s) {
  int c = s->role == ZL_SHM_ROLE_C;
  ring_in r = {c ? &s->h->n2c_prod : &s->h->c2n_prod, c ? &s->h->n2c_cons : &s->h->c2n_cons,
               c ? s->n2c : s->c2n};
  return r;
}

/* Moves the tail past what no producer following the protocol publishes, counting each
   (`zl_shm_corrupt`): a `head` more than a ring ahead of the tail or behind it (the tail jumps to
   what can still be read), and slots whose `seq` is not their position or whose length is over
   the slot (a producer that published `head` before writing the slot, or scribbled). Returns the
   new tail; the slot there, if any before `head`, is well-formed. */
static uint64_t skip_malformed(zl_shm *s, ring_in r, uint64_t head, uint64_t tail) {
  uint64_t start = tail;
  if (head != tail && head - tail > s->id.ring_slots) {
    s->corrupt++;
    tail = head < tail ? head : head - s->id.ring_slots;
  }
  while (head != tail) {
    zl_shm_slot *slot = slot_at(s, r.slots, tail);
    if (slot->seq == tail && slot->len <= s->id.ring_slot_size - ZL_SHM_PREFIX) break;
    s->corrupt++;
    tail++;
  }
  if (tail != start) atomic_store_explicit(&r.q->tail, tail, memory_order_release);
  return tail;
}

/* `*seq_io` (when given): in, the sequence the message must have (UINT64_MAX: any), else
   EEMPTY without taking it; out, the sequence it had. */
static int recv_at(zl_shm *s, void *buf, uint32_t cap, uint32_t *len_out, int timeout_ms, uint64_t *seq_io) {
  if (s == NULL || (buf == NULL && cap != 0) || s->role == ZL_SHM_ROLE_OBSERVER) return ZL_SHM_EINVAL;
  ring_in r = incoming(s);
  uint64_t deadline = timeout_ms > 0 ? mono_ns() + (uint64_t)timeout_ms * 1000000u : 0;
  uint64_t tail = atomic_load_explicit(&r.q->tail, memory_order_relaxed);
  for (;;) {
    uint64_t head = atomic_load_explicit(&r.p->head, memory_order_acquire);
    tail = skip_malformed(s, r, head, tail);
    if (head != tail) break;
    if (timeout_ms == 0) return ZL_SHM_EEMPTY;
    int left = -1;
    if (timeout_ms > 0) {
      uint64_t now = mono_ns();
      if (now >= deadline) return ZL_SHM_ETIMEDOUT;
      left = (int)((deadline - now) / 1000000u) + 1;
    }
    atomic_store_explicit(&r.q->waiting, 1u, memory_order_seq_cst);
    /* re-check after announcing: a send in between has seen `waiting` or we see its head */
    if (atomic_load_explicit(&r.p->head, memory_order_seq_cst) == tail)
      futex_wait(&r.p->notify, (uint32_t)tail, left);
    atomic_store_explicit(&r.q->waiting, 0u, memory_order_relaxed);
  }
  if (seq_io != NULL && *seq_io != UINT64_MAX && *seq_io != tail) return ZL_SHM_EEMPTY;
  zl_shm_slot *slot = slot_at(s, r.slots, tail);
  uint32_t len = slot->len;
  if (len > s->id.ring_slot_size - ZL_SHM_PREFIX) len = s->id.ring_slot_size - ZL_SHM_PREFIX; /* changed since */
  if (len > cap) {
    if (len_out) *len_out = len;
    return ZL_SHM_ETRUNC;
  }
  if (len) memcpy(buf, (uint8_t *)(slot + 1), len);
  atomic_store_explicit(&r.q->tail, tail + 1u, memory_order_release);
  atomic_store_explicit(&r.q->heartbeat_ms, now_ms(), memory_order_relaxed);
  if (len_out) *len_out = len;
  if (seq_io != NULL) *seq_io = tail;
  return ZL_SHM_OK;
}

int zl_shm_recv(zl_shm *s, void *buf, uint32_t cap, uint32_t *len_out, int timeout_ms) {
  return recv_at(s, buf, cap, len_out, timeout_ms, NULL);
}

int zl_shm__recv_seq(zl_shm *s, void *buf, uint32_t cap, uint32_t *len_out, uint64_t *seq_io) {
  return recv_at(s, buf, cap, len_out, 0, seq_io);
}

uint64_t zl_shm_corrupt(zl_shm *s) { return s == NULL ? 0 : s->corrupt; }

const zl_shm_identity *zl_shm_identity_of(zl_shm *s) { return &s->id; }

const char *zl_shm_strerror(int code) {
  switch (code) {
    case ZL_SHM_OK: return "ok";
    case ZL_SHM_ENOENT: return "no such shared-memory segment";
    case ZL_SHM_EMAGIC: return "not a zipline shared-memory segment (bad magic)";
    case ZL_SHM_EVERSION: return "the segment has another layout version";
    case ZL_SHM_ESIZE: return "the segment's sizes do not match its layout or the options";
    case ZL_SHM_ETOOBIG: return "larger than the snapshot capacity or a ring slot";
    case ZL_SHM_EBUSY: return "the snapshot lock is held by a live writer";
    case ZL_SHM_EFULL: return "the ring is full; the message was dropped";
    case ZL_SHM_EEMPTY: return "nothing to read";
    case ZL_SHM_ETIMEDOUT: return "timed out waiting for a message";
    case ZL_SHM_ETRUNC: return "the buffer is too small";
    case ZL_SHM_EINVAL: return "invalid arguments";
    case ZL_SHM_ESYS: return "a system call failed (see errno)";
    case ZL_SHM_ECONFLICT: return "the snapshot changed since the expected version";
    case ZL_SHM_ECORRUPT: return "the published snapshot is malformed (a peer wrote outside the protocol)";
    default: return "unknown error";
  }
}
