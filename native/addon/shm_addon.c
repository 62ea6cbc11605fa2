/*
 * zipline's N-API addon for the shared-memory bridge (Linux): opens a segment through the C
 * library (native/lib/zipline_shm.c, role Node), exposes snapshot read/write, ring send/recv and
 * the header's figures, and runs two waiter threads per bridge that sleep on the two futex words
 * ("new snapshot", "C -> Node ring not empty") and posts to the event loop when either moves
 * (0 % CPU while idle). Calls from JavaScript never block longer than the library's bounded
 * ~2 ms lock spin.
 *
 * The wake-up words are the library's: C writers bump `snap.notify` and wake on every publish;
 * the C ring producer wakes `c2n_prod.notify` when `c2n_cons.waiting` is set.
 *
 * A peer that truncates the segment (`ftruncate`, a C program opening it with O_TRUNC) makes
 * every access to the missing pages fault with SIGBUS, which killed the whole process. Each access
 * here runs under a guard: a SIGBUS inside the segment returns from it (siglongjmp) and the
 * bridge is marked lost; from then on nothing touches the mapping (reads and writes answer
 * ECORRUPT, receives nothing, the waiter threads end after posting WAKE_LOST). Any other SIGBUS
 * goes to the disposition that was there before.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <node_api.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "zipline_shm.h"

typedef struct bridge {
  zl_shm *shm;
  zl_shm_header *h;
  const uint8_t *lo, *hi; /* the mapping: faults in it are the segment's */
  _Atomic int lost;       /* truncated under us: never touched again */
  _Atomic int lost_posted;
  _Atomic uint64_t last_version;
  int lock_fd; /* serving: an exclusive flock on the segment (one zipline per segment), else -1 */
  napi_threadsafe_function tsfn;
  pthread_t waiter_snap, waiter_ring;
  int watching;
  _Atomic int stop;
  _Atomic int exited;
  _Atomic uint32_t drained;  /* bumped by JS after each drain (caughtUp); the ring waiter naps on it */
  _Atomic uint32_t napping;
} bridge_t;

/* ---- a segment truncated under us ---------------------------------------------------------- */

/* wake-up kinds posted to JavaScript (src/shm/bridge.ts) */
enum { WAKE_SNAPSHOT = 1, WAKE_MESSAGES = 2, WAKE_LOST = 3 };

typedef struct {
  sigjmp_buf jb;
  const uint8_t *lo, *hi;
} guard_t;

/* the guard armed on this thread, if any (touched before it is armed: no TLS allocation in the handler) */
static __thread guard_t *volatile armed;
static struct sigaction previous_bus;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  guard_t *g = armed;
  const uint8_t *a = si->si_addr;
  if (g != NULL && si->si_code > 0 && a >= g->lo && a < g->hi) {
    armed = NULL;
    siglongjmp(g->jb, 1); /* SA_NODEFER: SIGBUS is not left blocked */
  }
  /* not ours: the disposition from before; a fault runs its instruction again under it */
  sigaction(SIGBUS, &previous_bus, NULL);
  if (si->si_code <= 0) raise(sig); /* sent, not a fault: deliver it again */
  (void)uc;
}

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous_bus);
}

static void install_sigbus(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_handler);
}

/* Runs what follows, up to UNGUARD(), under a guard: when the bridge is lost, or a SIGBUS in its
   mapping ends that access, `on_lost` runs instead (it must leave: return). The jump is taken only
   for a fault inside the mapping, which only the segment accesses between the two can cause: a
   call there that never touches the mapping (a thread-safe-function post) is never cut short, but
   an N-API call into V8 must stay outside, as anything that could touch the mapping inside V8. */
#define GUARD(g, b, on_lost)                  \
  (g).lo = (b)->lo;                           \
  (g).hi = (b)->hi;                           \
  armed = NULL;                               \
  if (atomic_load(&(b)->lost)) {              \
    on_lost;                                  \
  }                                           \
  if (sigsetjmp((g).jb, 0) != 0) {            \
    atomic_store(&(b)->lost, 1);              \
    on_lost;                                  \
  }                                           \
  armed = &(g)
#define UNGUARD() (armed = NULL)

static void throw_code(napi_env env, int code) {
  char c[16];
  snprintf(c, sizeof c, "%d", code);
  napi_throw_error(env, c, zl_shm_strerror(code));
}

static bridge_t *unwrap(napi_env env, napi_value v) {
  bridge_t *b = NULL;
  napi_get_value_external(env, v, (void **)&b);
  if (b == NULL || b->shm == NULL) napi_throw_error(env, "EINVAL", "shared-memory bridge is closed");
  return b != NULL && b->shm != NULL ? b : NULL;
}

/* The bridge of a call whose only argument is one (NULL, with an exception pending, if closed). */
static bridge_t *only_bridge(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  return unwrap(env, argv[0]);
}

static void stop_waiter(bridge_t *b) {
  if (!b->watching) return;
  atomic_store(&b->stop, 1);
  /* FUTEX_WAKE wakes sleepers whatever the word's value: nothing shared is changed */
  for (int i = 0; i < 50 && (b->watching & 3); i++) {
    syscall(SYS_futex, (uint32_t *)&b->h->snap.notify, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    syscall(SYS_futex, (uint32_t *)&b->h->c2n_prod.notify, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    atomic_fetch_add(&b->drained, 1u);
    syscall(SYS_futex, (uint32_t *)&b->drained, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
    if (atomic_load(&b->exited) == 2) break;
  }
  pthread_join(b->waiter_snap, NULL);
  pthread_join(b->waiter_ring, NULL);
  b->watching = 0;
  napi_release_threadsafe_function(b->tsfn, napi_tsfn_release);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  bridge_t *b = data;
  if (b->shm != NULL) {
    stop_waiter(b);
    zl_shm_close(b->shm);
    if (b->lock_fd >= 0) close(b->lock_fd);
  }
  free(b);
}

/* One zipline serves a segment: its rings have one consumer each, and a second one would take
   messages meant for the first and race it on the Node -> C ring. Serving takes an exclusive
   flock on the segment's file (released by the kernel when the process ends, however it ends);
   -1 with *busy set when another process holds it, -1 alone when there is no file yet or the
   lock cannot be had for another reason (carries on without it). */
static int lock_segment(const char *name, int *busy) {
  *busy = 0;
  int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
  *busy = errno == EWOULDBLOCK;
  close(fd);
  return -1;
}

static void throw_in_use(napi_env env) {
  napi_throw_error(env, "EINUSE",
                   "another zipline process serves this segment (it holds the segment's lock); one zipline per segment");
}

/* open(name, create, mode, capacity, slots, slotSize, observe, allowOtherOwner) -> external;
   `observe`: the observer role (no ring end, no pid stamped, no lock: `zipline shm inspect`), else
   the Node role, which serves only a segment of its own user unless `allowOtherOwner` (/dev/shm is
   writable by every local user: one could create the name first and read or feed what zipline
   serves) */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char name[256] = {0};
  size_t len = 0;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len);
  bool create = false;
  napi_get_value_bool(env, argv[1], &create);
  uint32_t mode = 0, cap = 0, slots = 0, slot = 0;
  napi_get_value_uint32(env, argv[2], &mode);
  napi_get_value_uint32(env, argv[3], &cap);
  napi_get_value_uint32(env, argv[4], &slots);
  napi_get_value_uint32(env, argv[5], &slot);
  bool observe = false, allow_other = false;
  napi_get_value_bool(env, argv[6], &observe);
  napi_get_value_bool(env, argv[7], &allow_other);
  zl_shm_options o = {.create = create, .mode = mode, .snapshot_capacity = cap, .ring_slots = slots,
                      .ring_slot_size = slot, .role = observe ? ZL_SHM_ROLE_OBSERVER : ZL_SHM_ROLE_NODE};
  int busy = 0, lock_fd = -1;
  /* before the library stamps our pid into the header over the serving process's */
  if (!observe && (lock_fd = lock_segment(name, &busy)) < 0 && busy) {
    throw_in_use(env);
    return NULL;
  }
  zl_shm *shm = NULL;
  int r = zl_shm_open(name, &o, &shm);
  if (r != ZL_SHM_OK) {
    if (lock_fd >= 0) close(lock_fd);
    throw_code(env, r);
    return NULL;
  }
  if (!observe && lock_fd < 0 && (lock_fd = lock_segment(name, &busy)) < 0 && busy) {
    /* created just now, and another process took the lock first */
    zl_shm_close(shm);
    throw_in_use(env);
    return NULL;
  }
  struct stat st;
  if (!observe && !allow_other && lock_fd >= 0 && fstat(lock_fd, &st) == 0 && st.st_uid != geteuid()) {
    zl_shm_close(shm);
    close(lock_fd);
    char msg[200];
    snprintf(msg, sizeof msg,
             "the segment belongs to uid %u, not zipline's (%u): another local user may have planted it "
             "(allow_other_owner: true serves it anyway)",
             (unsigned)st.st_uid, (unsigned)geteuid());
    napi_throw_error(env, "EOWNER", msg);
    return NULL;
  }
  bridge_t *b = calloc(1, sizeof *b);
  if (b == NULL) {
    zl_shm_close(shm);
    if (lock_fd >= 0) close(lock_fd);
    throw_code(env, ZL_SHM_ESYS);
    return NULL;
  }
  b->lock_fd = lock_fd;
  install_sigbus();
  b->shm = shm;
  b->h = zl_shm_header_of(shm);
  b->lo = (const uint8_t *)b->h;
  b->hi = b->lo + zl_shm_identity_of(shm)->total_size;
  napi_value ext;
  napi_create_external(env, b, finalize, NULL, &ext);
  return ext;
}

/* The library's calls, each under a guard (ECORRUPT once the segment is lost). */
static int read_guarded(bridge_t *b, void *out, uint32_t cap, uint32_t *len, uint64_t *version) {
  guard_t g;
  GUARD(g, b, return ZL_SHM_ECORRUPT);
  int r = zl_shm_snapshot_read(b->shm, out, cap, len, version);
  UNGUARD();
  return r;
}

static int write_guarded(bridge_t *b, const void *data, uint32_t len, double expected, uint64_t *version) {
  guard_t g;
  GUARD(g, b, return ZL_SHM_ECORRUPT);
  int r = expected < 0 ? zl_shm_snapshot_write(b->shm, data, len, version)
                       : zl_shm_snapshot_write_if(b->shm, data, len, (uint64_t)expected, version);
  UNGUARD();
  return r;
}

static int send_guarded(bridge_t *b, const void *data, uint32_t len) {
  guard_t g;
  GUARD(g, b, return ZL_SHM_ECORRUPT);
  int r = zl_shm_send(b->shm, data, len);
  UNGUARD();
  return r;
}

static int recv_guarded(bridge_t *b, void *out, uint32_t cap, uint32_t *len, uint64_t *seq) {
  guard_t g;
  GUARD(g, b, return ZL_SHM_ECORRUPT);
  int r = zl_shm__recv_seq(b->shm, out, cap, len, seq);
  UNGUARD();
  return r;
}

/* snapshotRead(b) -> [version, Buffer] | null. The buffer is the snapshot's size, not the
   capacity's: a GET of a 10-byte snapshot in a 256 MiB segment used to allocate 256 MiB (and V8
   counted it all as external memory, so concurrent GETs ran at a thirteenth of the speed). The
   length is peeked first (a read into no room answers ETRUNC with it), then read into a buffer of
   that size; a writer that grows it in between is followed a few times, then the capacity is taken. */
static napi_value js_snapshot_read(napi_env env, napi_callback_info info) {
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  uint32_t cap = zl_shm_identity_of(b->shm)->snapshot_capacity;
  uint32_t len = 0;
  uint64_t version = 0;
  int r = read_guarded(b, NULL, 0, &len, &version);
  napi_value buf = NULL;
  uint32_t room = 0;
  for (int tries = 1; r == ZL_SHM_ETRUNC; tries++) {
    room = tries < 4 && len <= cap ? len : cap;
    void *data = NULL;
    napi_create_buffer(env, room, &data, &buf);
    r = read_guarded(b, data, room, &len, &version);
  }
  napi_value out;
  if (r == ZL_SHM_EEMPTY) {
    napi_get_null(env, &out);
    return out;
  }
  if (r != ZL_SHM_OK) {
    throw_code(env, r);
    return NULL;
  }
  napi_value v;
  napi_create_double(env, (double)version, &v);
  if (buf == NULL) { /* an empty snapshot: the peek read it */
    void *data = NULL;
    napi_create_buffer(env, 0, &data, &buf);
  } else if (len < room) { /* it shrank between the peek and the read: buf.subarray(0, len) */
    napi_value fn, start, end, slice;
    napi_get_named_property(env, buf, "subarray", &fn);
    napi_create_uint32(env, 0, &start);
    napi_create_uint32(env, len, &end);
    napi_value args[2] = {start, end};
    napi_call_function(env, buf, fn, 2, args, &slice);
    buf = slice;
  }
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, v);
  napi_set_element(env, out, 1, buf);
  return out;
}

/* snapshotWrite(b, buffer, expected) -> version (expected < 0: unconditional); throws a code */
static napi_value js_snapshot_write(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = unwrap(env, argv[0]);
  if (b == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  napi_get_buffer_info(env, argv[1], &data, &len);
  double expected = -1;
  napi_get_value_double(env, argv[2], &expected);
  uint64_t version = 0;
  int r = write_guarded(b, data, (uint32_t)len, expected, &version);
  if (len > UINT32_MAX) r = ZL_SHM_ETOOBIG;
  if (r != ZL_SHM_OK) {
    throw_code(env, r);
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)version, &out);
  return out;
}

/* send(b, buffer) -> code (0 or EFULL / ETOOBIG) */
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = unwrap(env, argv[0]);
  if (b == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  napi_get_buffer_info(env, argv[1], &data, &len);
  int r = send_guarded(b, data, (uint32_t)len);
  napi_value out;
  napi_create_int32(env, r, &out);
  return out;
}

/* recv(b) -> [seq, Buffer] | null: one C -> Node message, without waiting */
static napi_value js_recv(napi_env env, napi_callback_info info) {
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  uint8_t tmp[65536];
  uint32_t len = 0;
  uint64_t seq = UINT64_MAX;
  int r = recv_guarded(b, tmp, sizeof tmp, &len, &seq);
  napi_value out;
  if (r == ZL_SHM_EEMPTY || r == ZL_SHM_ECORRUPT) { /* nothing more from a lost segment */
    napi_get_null(env, &out);
    return out;
  }
  if (r != ZL_SHM_OK) {
    throw_code(env, r);
    return NULL;
  }
  void *data;
  napi_value buf, s;
  napi_create_buffer_copy(env, len, tmp, &data, &buf);
  napi_create_double(env, (double)seq, &s);
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, s);
  napi_set_element(env, out, 1, buf);
  return out;
}

/* recvBatch(b, maxBytes) -> [firstSeq, count, Buffer] | null: every waiting C -> Node message that
   fits, each as [u32 little-endian length][bytes], in one Buffer (one call per wake-up, not per
   message). */
static napi_value js_recv_batch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = unwrap(env, argv[0]);
  if (b == NULL) return NULL;
  uint32_t max = 0;
  napi_get_value_uint32(env, argv[1], &max);
  uint32_t slot = zl_shm_identity_of(b->shm)->ring_slot_size;
  if (max < slot + 4) max = slot + 4;
  /* one scratch buffer for all calls (they all run on the JS thread); grown, never shrunk */
  static uint8_t *scratch = NULL;
  static uint32_t scratch_size = 0;
  if (scratch_size < max) {
    uint8_t *grown = realloc(scratch, max);
    if (grown == NULL) {
      napi_throw_error(env, "ESYS", "out of memory");
      return NULL;
    }
    scratch = grown;
    scratch_size = max;
  }
  uint8_t *tmp = scratch;
  uint64_t first = 0, want = UINT64_MAX;
  uint32_t used = 0, count = 0;
  napi_value out;
  guard_t g;
  GUARD(g, b, napi_get_null(env, &out); return out); /* what was taken of a lost segment is dropped */
  while (used + 4 + (slot - ZL_SHM_PREFIX) <= max) {
    uint32_t len = 0;
    /* a batch's sequences are consecutive: a message after skipped slots starts the next one */
    int r = zl_shm__recv_seq(b->shm, tmp + used + 4, max - used - 4, &len, &want);
    if (r != ZL_SHM_OK) break;
    if (count == 0) first = want;
    want++;
    memcpy(tmp + used, &len, 4);
    used += 4 + len;
    count++;
  }
  UNGUARD();
  if (count == 0) {
    napi_get_null(env, &out);
    return out;
  }
  void *data;
  napi_value buf, f, c;
  napi_create_buffer_copy(env, used, tmp, &data, &buf);
  napi_create_double(env, (double)first, &f);
  napi_create_uint32(env, count, &c);
  napi_create_array_with_length(env, 3, &out);
  napi_set_element(env, out, 0, f);
  napi_set_element(env, out, 1, c);
  napi_set_element(env, out, 2, buf);
  return out;
}

/* spin(b, version, microseconds) -> 0 nothing, 1 the snapshot version differs from `version`,
   2 C -> Node messages wait, 3 both: checks the segment in a tight loop for at most the given
   time (wake: poll), so that one event-loop turn sees a message within a fraction of a µs. */
static napi_value js_spin(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = unwrap(env, argv[0]);
  if (b == NULL) return NULL;
  double seen = 0;
  uint32_t us = 0;
  napi_get_value_double(env, argv[1], &seen);
  napi_get_value_uint32(env, argv[2], &us);
  zl_shm_header *h = b->h;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t start = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  int32_t r = 0;
  guard_t g;
  GUARD(g, b, napi_create_int32(env, 4, &out); return out); /* 4: the segment is lost */
  for (uint32_t i = 0;; i++) {
    if ((double)atomic_load_explicit(&h->snap.version, memory_order_acquire) != seen) r |= 1;
    if (atomic_load_explicit(&h->c2n_prod.head, memory_order_acquire) != atomic_load(&h->c2n_cons.tail)) r |= 2;
    if (r != 0) break;
    if ((i & 63) == 63) {
      clock_gettime(CLOCK_MONOTONIC, &ts);
      if ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - start >= (uint64_t)us * 1000u) break;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  UNGUARD();
  napi_create_int32(env, r, &out);
  return out;
}

/* version(b) -> the published snapshot version (0: none yet) */
static napi_value js_version(napi_env env, napi_callback_info info) {
  napi_value out;
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  guard_t g;
  GUARD(g, b, napi_create_double(env, (double)atomic_load(&b->last_version), &out); return out);
  uint64_t v = atomic_load(&b->h->snap.version);
  UNGUARD();
  atomic_store(&b->last_version, v);
  napi_create_double(env, (double)v, &out);
  return out;
}

/* lost(b) -> true once a SIGBUS showed the segment truncated under us */
static napi_value js_lost(napi_env env, napi_callback_info info) {
  napi_value out;
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  napi_get_boolean(env, atomic_load(&b->lost) != 0, &out);
  return out;
}

/* corrupt(b) -> C -> Node ring slots skipped as malformed so far */
static napi_value js_corrupt(napi_env env, napi_callback_info info) {
  napi_value out;
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  napi_create_double(env, (double)zl_shm_corrupt(b->shm), &out);
  return out;
}

/* stats(b) -> numbers from the header */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  zl_shm_header *h = b->h;
  const zl_shm_identity *id = zl_shm_identity_of(b->shm);
  guard_t g;
  GUARD(g, b, throw_code(env, ZL_SHM_ECORRUPT); return NULL);
  double v[] = {
      id->snapshot_capacity, id->ring_slots, id->ring_slot_size, (double)id->total_size,
      (double)atomic_load(&h->snap.version), atomic_load(&h->snap.lock), (double)atomic_load(&h->snap.steals),
      (double)atomic_load(&h->snap.writes), (double)atomic_load(&h->c2n_prod.head),
      (double)atomic_load(&h->c2n_cons.tail), (double)atomic_load(&h->c2n_prod.dropped),
      (double)atomic_load(&h->n2c_prod.head), (double)atomic_load(&h->n2c_cons.tail),
      (double)atomic_load(&h->n2c_prod.dropped), atomic_load(&h->c2n_prod.pid), atomic_load(&h->n2c_cons.pid),
      (double)atomic_load(&h->c2n_prod.heartbeat_ms), (double)atomic_load(&h->n2c_cons.heartbeat_ms),
      id->creator_pid, (double)zl_shm_corrupt(b->shm), (double)id->created_unix_ms};
  UNGUARD();
  napi_value out;
  size_t n = sizeof v / sizeof v[0];
  napi_create_array_with_length(env, n, &out);
  for (size_t i = 0; i < n; i++) {
    napi_value x;
    napi_create_double(env, v[i], &x);
    napi_set_element(env, out, (uint32_t)i, x);
  }
  return out;
}

/* ---- the waiter thread ---- */

/* callback(kind): 1 = a new snapshot, 2 = C -> Node messages */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  if (env != NULL && cb != NULL) {
    napi_value undef, kind;
    napi_get_undefined(env, &undef);
    napi_create_int32(env, (int32_t)(intptr_t)data, &kind);
    napi_call_function(env, undef, cb, 1, &kind, NULL);
  }
}

/* A sleeping waiter looks at `stop` at least this often (close() also wakes it at once). */
static const struct timespec STOP_CHECK = {1, 0};
/* How long a waiter waits before posting again when the event loop's queue was full. */
static const struct timespec QUEUE_FULL_NAP = {0, 1000000};

/* A waiter whose segment was lost: tells JavaScript once (WAKE_LOST) and ends. */
static void *lost_waiter(bridge_t *b) {
  if (atomic_exchange(&b->lost_posted, 1) == 0)
    napi_call_threadsafe_function(b->tsfn, (void *)(intptr_t)WAKE_LOST, napi_tsfn_nonblocking);
  atomic_fetch_add(&b->exited, 1);
  return NULL;
}

/* Two waiter threads, one per futex word (a thread can sleep on one word only): each posts to
   the event loop when its word moves and sleeps again; 0 % CPU while nothing happens. */
static void *wait_snapshot(void *arg) {
  bridge_t *b = arg;
  guard_t g;
  GUARD(g, b, return lost_waiter(b));
  _Atomic uint32_t *word = &b->h->snap.notify;
  /* one post to start with: a snapshot published between JavaScript's first look and this thread's
     start (a busy machine can take tens of ms to run it) would otherwise wait for the next one;
     JavaScript compares versions, so a post with nothing new costs one look */
  uint32_t seen = atomic_load(word) - 1u;
  while (!atomic_load(&b->stop)) {
    uint32_t now = atomic_load(word);
    if (now != seen) {
      /* only once it is queued: a post lost to a full queue is tried again */
      if (napi_call_threadsafe_function(b->tsfn, (void *)(intptr_t)WAKE_SNAPSHOT, napi_tsfn_nonblocking) == napi_ok)
        seen = now;
      else
        nanosleep(&QUEUE_FULL_NAP, NULL);
      continue;
    }
    /* a truncated page: EFAULT here, and the next load faults (the guard) */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, &STOP_CHECK, NULL, 0);
  }
  UNGUARD();
  atomic_fetch_add(&b->exited, 1);
  return NULL;
}

/* While JavaScript is behind (tail != head) the waiter does not ask the producer for wake-ups
   (a futex_wake per message would slow a flooding C producer to a syscall per message): it posts
   once per new head and naps on a private word that JavaScript bumps when it has drained
   (`caughtUp`), at most 1 ms. Once JavaScript has caught up it announces `waiting` and sleeps on
   the producer's word until the next message. */
static void *wait_ring(void *arg) {
  bridge_t *b = arg;
  zl_shm_header *h = b->h;
  guard_t g;
  GUARD(g, b, return lost_waiter(b));
  /* what JavaScript has taken: messages sent before this thread ran (a busy machine can take tens
     of ms to start it) are posted like any others; starting from the head, they waited for the
     next message, and a test saw three of them wait 10 s */
  uint64_t posted = atomic_load(&h->c2n_cons.tail);
  while (!atomic_load(&b->stop)) {
    uint32_t drained = atomic_load(&b->drained);
    uint64_t head = atomic_load(&h->c2n_prod.head);
    uint64_t tail = atomic_load(&h->c2n_cons.tail);
    if (head != tail) {
      /* only once it is queued: a post lost to a full queue is tried again after the nap */
      if (head != posted &&
          napi_call_threadsafe_function(b->tsfn, (void *)(intptr_t)WAKE_MESSAGES, napi_tsfn_nonblocking) == napi_ok)
        posted = head;
      struct timespec nap = {0, 1000000}; /* a backstop: caughtUp() ends the nap */
      atomic_store(&b->napping, 1u);
      if (atomic_load(&b->drained) == drained)
        syscall(SYS_futex, (uint32_t *)&b->drained, FUTEX_WAIT_PRIVATE, drained, &nap, NULL, 0);
      atomic_store(&b->napping, 0u);
      continue;
    }
    atomic_store(&h->c2n_cons.waiting, 1u);
    if (atomic_load(&h->c2n_prod.head) == tail)
      syscall(SYS_futex, (uint32_t *)&h->c2n_prod.notify, FUTEX_WAIT, (uint32_t)tail, &STOP_CHECK, NULL, 0);
    atomic_store(&h->c2n_cons.waiting, 0u);
  }
  UNGUARD();
  atomic_fetch_add(&b->exited, 1);
  return NULL;
}

/* caughtUp(b): JS drained the ring; a napping ring waiter goes back to sleeping on the producer */
static napi_value js_caught_up(napi_env env, napi_callback_info info) {
  bridge_t *b = only_bridge(env, info);
  if (b == NULL) return NULL;
  atomic_fetch_add(&b->drained, 1u);
  if (atomic_load(&b->napping)) syscall(SYS_futex, (uint32_t *)&b->drained, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  return NULL;
}

/* watch(b, callback): starts the waiter thread (idempotent) */
static napi_value js_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = unwrap(env, argv[0]);
  if (b == NULL || b->watching) return NULL;
  napi_create_string_utf8(env, "zipline-shm", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 64, 1, NULL, NULL, NULL, call_js, &b->tsfn) != napi_ok) {
    napi_throw_error(env, "ESYS", "cannot create the wake-up callback");
    return NULL;
  }
  napi_unref_threadsafe_function(env, b->tsfn);
  atomic_store(&b->stop, 0);
  atomic_store(&b->exited, 0);
  if (pthread_create(&b->waiter_snap, NULL, wait_snapshot, b) != 0) {
    napi_release_threadsafe_function(b->tsfn, napi_tsfn_release);
    napi_throw_error(env, "ESYS", "cannot start the waiter thread");
    return NULL;
  }
  if (pthread_create(&b->waiter_ring, NULL, wait_ring, b) != 0) {
    atomic_store(&b->stop, 1);
    syscall(SYS_futex, (uint32_t *)&b->h->snap.notify, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    pthread_join(b->waiter_snap, NULL);
    napi_release_threadsafe_function(b->tsfn, napi_tsfn_release);
    napi_throw_error(env, "ESYS", "cannot start the waiter thread");
    return NULL;
  }
  b->watching = 3;
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bridge_t *b = NULL;
  napi_get_value_external(env, argv[0], (void **)&b);
  if (b == NULL || b->shm == NULL) return NULL;
  stop_waiter(b);
  zl_shm_close(b->shm);
  b->shm = NULL;
  if (b->lock_fd >= 0) close(b->lock_fd);
  b->lock_fd = -1;
  return NULL;
}

static napi_value js_unlink(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char name[256] = {0};
  size_t len = 0;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len);
  napi_create_int32(env, zl_shm_unlink(name), &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"snapshotRead", NULL, js_snapshot_read, NULL, NULL, NULL, napi_default, NULL},
      {"lost", NULL, js_lost, NULL, NULL, NULL, napi_default, NULL},
      {"snapshotWrite", NULL, js_snapshot_write, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
      {"recv", NULL, js_recv, NULL, NULL, NULL, napi_default, NULL},
      {"recvBatch", NULL, js_recv_batch, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"corrupt", NULL, js_corrupt, NULL, NULL, NULL, napi_default, NULL},
      {"version", NULL, js_version, NULL, NULL, NULL, napi_default, NULL},
      {"spin", NULL, js_spin, NULL, NULL, NULL, napi_default, NULL},
      {"caughtUp", NULL, js_caught_up, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, js_watch, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"unlink", NULL, js_unlink, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
