/*
 * The tunnel engine's thread and its N-API surface (tunnel.h). JavaScript calls `session()` and
 * `command()`, which queue work and poke an eventfd; the thread owns every session's state and
 * answers through one threadsafe function (`post_event`). A session record is created on the
 * JavaScript thread (so `stats()` can read its counters at once) and freed by the thread only
 * after JavaScript released it, so no command or stats read ever names freed memory.
 *
 * Each epoll batch: socket events decode frames and queue frames to send; commands run; then
 * every session marked dirty flushes once, so what one batch produced leaves in one write
 * (one TLS record when it is small). Timers (liveness, close deadlines, idle streams) are checked
 * when due.
 */
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../common/deferred.h"
#include "../crc/crc32.h"
#include "tunnel.h"

int tun_ep = -1;
uint8_t *scratch = NULL;

typedef struct cmd {
  int kind;
  uint32_t sid, stream, a, b, c, d;
  int fd;
  size_t len;
  struct cmd *next;
  uint8_t data[];
} cmd_t;

typedef struct event {
  int type;
  uint32_t sid, stream, a, b;
  double x, y;
  size_t len;
  char text[200];
  uint8_t data[];
} event_t;

#define SESSION_BUCKETS 1024
/* Events posted and not yet run by JavaScript beyond this: sessions stop decoding until it catches
   up (a peer cannot make the engine queue events faster than the event loop takes them). */
#define EVENT_BACKLOG_MAX 4096

static struct {
  int started;
  int stopping; /* atomic: the process is exiting; the thread leaves its loop and does nothing more */
  int joined;
  int evfd;
  tag_t cmd_tag;
  pthread_t thread;
  pthread_mutex_t mu; /* the command queue and the session table */
  cmd_t *head, *tail;
  session_t *jtable[SESSION_BUCKETS]; /* JavaScript's view, for stats(): under mu */
  session_t *sessions;                /* the thread's own list and table */
  session_t *table[SESSION_BUCKETS];
  session_t *again;
  uint32_t next_sid;
  session_t *dirty;
  deferred_t dead; /* freed after the current epoll batch (defer_free) */
  uint64_t next_timer_ms, last_sweep_ms;
  uint64_t backlog; /* events posted and not yet run (atomic: both threads) */
  uint64_t busy_ns; /* time the thread spent working, not in epoll_wait (the relay's load) */
  napi_threadsafe_function tsfn;
} G;

int events_backlogged(void) { return __atomic_load_n(&G.backlog, __ATOMIC_RELAXED) > EVENT_BACKLOG_MAX; }

/* ---- small helpers shared by the engine ---- */

uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

int buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (p == NULL) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

void buf_free(buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

int queue_push(queue_t *q, const uint8_t *p, size_t n) {
  if (n == 0) return 0;
  chunk_t *c = malloc(sizeof *c + n);
  if (c == NULL) return -1;
  c->next = NULL;
  c->len = (uint32_t)n;
  c->off = 0;
  memcpy(c->data, p, n);
  if (q->tail) q->tail->next = c;
  else q->head = c;
  q->tail = c;
  q->bytes += n;
  return 0;
}

void queue_clear(queue_t *q) {
  chunk_t *c = q->head;
  while (c != NULL) {
    chunk_t *next = c->next;
    free(c);
    c = next;
  }
  q->head = q->tail = NULL;
  q->bytes = 0;
}

void defer_free(void *p) { deferred_add(&G.dead, p); }

static void free_dead(void) { deferred_run(&G.dead); }

void timers_changed(uint64_t at) {
  if (at < G.next_timer_ms) G.next_timer_ms = at;
}

void post_event(int type, uint32_t sid, uint32_t stream, uint32_t a, uint32_t b, double x, double y,
                const uint8_t *data, size_t len, const char *text) {
  if (__atomic_load_n(&G.stopping, __ATOMIC_ACQUIRE)) return; /* the callback is going away */
  event_t *e = malloc(sizeof *e + len);
  if (e == NULL) return;
  e->type = type;
  e->sid = sid;
  e->stream = stream;
  e->a = a;
  e->b = b;
  e->x = x;
  e->y = y;
  e->len = len;
  if (len > 0) memcpy(e->data, data, len);
  e->text[0] = 0;
  if (text != NULL) {
    strncpy(e->text, text, sizeof e->text - 1);
    e->text[sizeof e->text - 1] = 0;
  }
  __atomic_add_fetch(&G.backlog, 1, __ATOMIC_RELAXED);
  if (napi_call_threadsafe_function(G.tsfn, e, napi_tsfn_blocking) != napi_ok) {
    __atomic_sub_fetch(&G.backlog, 1, __ATOMIC_RELAXED);
    free(e);
  }
}

/* ---- sessions by id ---- */

session_t *session_find(uint32_t id) {
  for (session_t *s = G.table[id % SESSION_BUCKETS]; s != NULL; s = s->hnext)
    if (s->id == id) return s;
  return NULL;
}

static session_t *jfind(uint32_t id) {
  for (session_t *s = G.jtable[id % SESSION_BUCKETS]; s != NULL; s = s->jnext)
    if (s->id == id) return s;
  return NULL;
}

/* The thread takes over a session JavaScript made (C_START). */
static void adopt(session_t *s) {
  s->hnext = G.table[s->id % SESSION_BUCKETS];
  G.table[s->id % SESSION_BUCKETS] = s;
  s->next = G.sessions;
  if (G.sessions) G.sessions->prev = s;
  G.sessions = s;
}

void session_again(session_t *s) {
  if (s->again || s->tag.obj == NULL) return;
  s->again = 1;
  s->anext = G.again;
  G.again = s;
}

void session_mark(session_t *s) {
  if (s->dirty || s->tag.obj == NULL) return; /* unlinked: its memory goes after this batch */
  s->dirty = 1;
  s->dnext = G.dirty;
  G.dirty = s;
}

/* Takes a released, closed session out of both tables; its memory goes after this batch (it may
   still be on the dirty or again list). session.c frees what it owns first. */
void session_unlink(session_t *s) {
  pthread_mutex_lock(&G.mu);
  session_t **jp = &G.jtable[s->id % SESSION_BUCKETS];
  while (*jp != NULL && *jp != s) jp = &(*jp)->jnext;
  if (*jp == s) *jp = s->jnext;
  pthread_mutex_unlock(&G.mu);
  session_t **pp = &G.table[s->id % SESSION_BUCKETS];
  while (*pp != NULL && *pp != s) pp = &(*pp)->hnext;
  if (*pp == s) *pp = s->hnext;
  if (s->prev) s->prev->next = s->next;
  else G.sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  /* the again and dirty lists outlive this batch: its memory goes when the batch ends */
  if (s->again) {
    session_t **ap = &G.again;
    while (*ap != NULL && *ap != s) ap = &(*ap)->anext;
    if (*ap == s) *ap = s->anext;
    s->again = 0;
  }
  if (s->dirty) {
    session_t **dp = &G.dirty;
    while (*dp != NULL && *dp != s) dp = &(*dp)->dnext;
    if (*dp == s) *dp = s->dnext;
    s->dirty = 0;
  }
  s->tag.obj = NULL;
  defer_free(s);
}

/* ---- the thread ---- */

static void run_commands(void) {
  uint64_t v;
  if (read(G.evfd, &v, sizeof v) < 0) { /* nothing queued */ }
  pthread_mutex_lock(&G.mu);
  cmd_t *m = G.head;
  G.head = G.tail = NULL;
  pthread_mutex_unlock(&G.mu);
  while (m != NULL) {
    cmd_t *next = m->next;
    session_t *s;
    if (m->kind == C_START) {
      pthread_mutex_lock(&G.mu);
      s = jfind(m->sid);
      pthread_mutex_unlock(&G.mu);
      if (s != NULL) {
        adopt(s);
        session_start(s);
      }
    } else if ((s = session_find(m->sid)) != NULL) {
      session_command(s, m->kind, m->stream, m->a, m->b, m->c, m->d, m->data, m->len, m->fd);
    } else if (m->fd >= 0) {
      close(m->fd); /* a stream's socket for a session that is gone */
    }
    free(m);
    m = next;
  }
}

static void run_again(void) {
  if (events_backlogged()) return; /* JavaScript is behind: the sessions wait on the again list */
  session_t *list = G.again;
  G.again = NULL;
  while (list != NULL) {
    session_t *s = list;
    list = s->anext;
    s->again = 0;
    if (s->tag.obj != NULL) session_event(s, 0);
  }
}

static void flush_dirty(void) {
  for (int round = 0; round < 8 && G.dirty != NULL; round++) {
    session_t *list = G.dirty;
    G.dirty = NULL;
    while (list != NULL) {
      session_t *s = list;
      list = s->dnext;
      s->dirty = 0;
      session_flush(s);
    }
  }
}

static void run_timers(uint64_t now) {
  uint64_t next = now + 250;
  int sweep = now - G.last_sweep_ms >= 250;
  if (sweep) G.last_sweep_ms = now;
  session_t *s = G.sessions;
  while (s != NULL) {
    session_t *following = s->next; /* the session may free itself */
    session_timers(s, now, &next);
    if (sweep && s->state == S_OPEN) {
      for (uint32_t b = 0; b < s->nbuckets; b++) {
        stream_t *st = s->buckets[b];
        while (st != NULL) {
          stream_t *hn = st->hnext;
          stream_sweep(st, now);
          st = hn;
        }
      }
    }
    s = following;
  }
  G.next_timer_ms = next;
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  G.last_sweep_ms = now_ms();
  G.next_timer_ms = G.last_sweep_ms + 250;
  while (!__atomic_load_n(&G.stopping, __ATOMIC_ACQUIRE)) {
    uint64_t now = now_ms();
    int timeout = G.next_timer_ms <= now || G.again != NULL ? 0 : (int)(G.next_timer_ms - now);
    if (timeout > 250) timeout = 250;
    if (G.again != NULL && events_backlogged()) timeout = 1; /* waiting for JavaScript, not spinning */
    int n = epoll_wait(tun_ep, evs, 256, timeout);
    if (__atomic_load_n(&G.stopping, __ATOMIC_ACQUIRE)) break;
    uint64_t woke = now_ns();
    run_again();
    for (int i = 0; i < n; i++) {
      tag_t *t = evs[i].data.ptr;
      if (t->kind == TAG_CMD) run_commands();
      else if (t->obj == NULL) continue; /* gone earlier in this batch */
      else if (t->kind == TAG_SESSION) session_event(t->obj, evs[i].events);
      else stream_fd_event(t->obj, evs[i].events);
    }
    stream_flush_writev();
    flush_dirty();
    now = now_ms();
    if (now >= G.next_timer_ms) {
      run_timers(now);
      flush_dirty();
    }
    free_dead();
    __atomic_store_n(&G.busy_ns, G.busy_ns + (now_ns() - woke), __ATOMIC_RELAXED);
  }
  return NULL;
}

/*
 * Process exit: the thread stops and is joined before what it uses goes away. Node finalizes the
 * threadsafe function when its environment is torn down (a natural exit: the cleanup hook runs
 * first, hooks run newest first), and OpenSSL frees its state from an atexit handler (also on
 * process.exit(), where no cleanup hook runs: ours, registered after OpenSSL's, runs before it).
 * Until now the thread was detached and kept running (PINGs, lingering closes) through both.
 */
static void stop_thread(void) {
  if (!G.started || G.joined) return;
  __atomic_store_n(&G.stopping, 1, __ATOMIC_RELEASE);
  uint64_t one = 1;
  if (write(G.evfd, &one, sizeof one) < 0) { /* the wait ends at its timeout (≤ 250 ms) anyway */ }
  pthread_join(G.thread, NULL);
  G.joined = 1;
}

static void on_env_cleanup(void *arg) {
  (void)arg;
  stop_thread();
  napi_release_threadsafe_function(G.tsfn, napi_tsfn_abort);
}

static void at_process_exit(void) { stop_thread(); }

/* ---- N-API ---- */

/* callback(type, sid, stream, a, b, x, y, data: Buffer | null, text: string | null) */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  event_t *e = data;
  __atomic_sub_fetch(&G.backlog, 1, __ATOMIC_RELAXED);
  if (env != NULL && cb != NULL) {
    napi_value argv[9], undef;
    napi_create_int32(env, e->type, &argv[0]);
    napi_create_uint32(env, e->sid, &argv[1]);
    napi_create_uint32(env, e->stream, &argv[2]);
    napi_create_uint32(env, e->a, &argv[3]);
    napi_create_uint32(env, e->b, &argv[4]);
    napi_create_double(env, e->x, &argv[5]);
    napi_create_double(env, e->y, &argv[6]);
    napi_get_null(env, &argv[7]);
    napi_get_null(env, &argv[8]);
    if (e->len > 0) napi_create_buffer_copy(env, e->len, e->data, NULL, &argv[7]);
    if (e->text[0] != 0) napi_create_string_utf8(env, e->text, NAPI_AUTO_LENGTH, &argv[8]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, cb, 9, argv, NULL);
  }
  free(e);
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (G.started) return NULL;
  zl_crc32_init();
  scratch = malloc(2 * 65536 + 1024);
  napi_create_string_utf8(env, "zipline-tunnel", NAPI_AUTO_LENGTH, &name);
  if (scratch == NULL ||
      napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &G.tsfn) != napi_ok) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "cannot create the tunnel engine's callback");
    return NULL;
  }
  napi_unref_threadsafe_function(env, G.tsfn); /* servers and timers keep the process alive, not the engine */
  tun_ep = epoll_create1(EPOLL_CLOEXEC);
  G.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  G.cmd_tag.kind = TAG_CMD;
  G.cmd_tag.obj = &G;
  G.next_sid = 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &G.cmd_tag};
  if (tun_ep < 0 || G.evfd < 0 || epoll_ctl(tun_ep, EPOLL_CTL_ADD, G.evfd, &ev) < 0) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "epoll/eventfd setup failed");
    return NULL;
  }
  pthread_mutex_init(&G.mu, NULL);
  if (pthread_create(&G.thread, NULL, loop, NULL) != 0) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "cannot start the tunnel engine's thread");
    return NULL;
  }
  G.started = 1;
  napi_add_env_cleanup_hook(env, on_env_cleanup, NULL);
  atexit(at_process_exit);
  return NULL;
}

static void enqueue(cmd_t *m) {
  pthread_mutex_lock(&G.mu);
  if (G.tail) G.tail->next = m;
  else G.head = m;
  G.tail = m;
  pthread_mutex_unlock(&G.mu);
  uint64_t one = 1;
  if (write(G.evfd, &one, sizeof one) < 0) { /* the counter saturates only after 2^64 pokes */ }
}

static char *string_arg(napi_env env, napi_value v, size_t *len) {
  size_t n = 0;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) {
    *len = 0;
    return NULL;
  }
  napi_get_value_string_utf8(env, v, NULL, 0, &n);
  char *s = malloc(n + 1);
  if (s == NULL) return NULL;
  napi_get_value_string_utf8(env, v, s, n + 1, &n);
  *len = n;
  return s;
}

/* tlsContext(server, cert, key, ca, ciphers) -> id (throws with OpenSSL's reason) */
static napi_value js_tls_context(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool server = false;
  napi_get_value_bool(env, argv[0], &server);
  size_t lc = 0, lk = 0, la = 0, lz = 0;
  char *cert = string_arg(env, argv[1], &lc);
  char *key = string_arg(env, argv[2], &lk);
  char *ca = string_arg(env, argv[3], &la);
  char *ciphers = string_arg(env, argv[4], &lz);
  char err[256] = {0};
  SSL_CTX *ctx = tls_ctx_new(server, cert, lc, key, lk, ca, la, ciphers, err, sizeof err);
  free(cert);
  free(key);
  free(ca);
  free(ciphers);
  if (ctx == NULL) {
    napi_throw_error(env, "ZL_TUNNEL_TLS", err[0] ? err : "cannot make a TLS context");
    return NULL;
  }
  uint32_t id = tls_ctx_register(ctx);
  if (id == 0) {
    SSL_CTX_free(ctx);
    napi_throw_error(env, "ZL_TUNNEL_TLS", "too many TLS contexts");
    return NULL;
  }
  napi_value out;
  napi_create_uint32(env, id, &out);
  return out;
}

/* tlsContextDrop(id): JavaScript replaced it (sessions keep their own reference) */
static napi_value js_tls_context_drop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t id = 0;
  napi_get_value_uint32(env, argv[0], &id);
  tls_ctx_drop(id);
  return NULL;
}

/*
 * session(fd, agent, ctxId, serverName, verifyName, opts[8], initial) -> sid. The fd is
 * duplicated here: JavaScript closes its socket right after. opts: max payload, initial window,
 * max window, connection window, ping ms, misses, max streams, frames per turn.
 */
static napi_value js_session(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!G.started || argc < 7) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "the tunnel engine is not started, or a bad call");
    return NULL;
  }
  int32_t fd = -1;
  bool agent = false, verify_name = false;
  uint32_t ctx_id = 0, opts[8] = {0};
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_bool(env, argv[1], &agent);
  napi_get_value_uint32(env, argv[2], &ctx_id);
  size_t lname = 0;
  char *name = string_arg(env, argv[3], &lname);
  napi_get_value_bool(env, argv[4], &verify_name);
  for (uint32_t i = 0; i < 8; i++) {
    napi_value v;
    napi_get_element(env, argv[5], i, &v);
    napi_get_value_uint32(env, v, &opts[i]);
  }
  void *initial = NULL;
  size_t ninitial = 0;
  bool is_buffer = false;
  napi_is_buffer(env, argv[6], &is_buffer);
  if (is_buffer) napi_get_buffer_info(env, argv[6], &initial, &ninitial);
  session_t *s = calloc(1, sizeof *s);
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  /* bytes read before: plaintext frames (plain TCP), or TLS records the BIO serves first */
  buf_t *into = s == NULL ? NULL : ctx_id != 0 ? &s->pre : &s->rbuf;
  if (s == NULL || dup < 0 || fcntl(dup, F_SETFL, O_NONBLOCK | O_RDWR) < 0 ||
      (ninitial > 0 && (buf_reserve(into, ninitial) < 0))) {
    if (dup >= 0) close(dup);
    free(s);
    free(name);
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "cannot hand the connection to the tunnel engine");
    return NULL;
  }
  if (ninitial > 0) {
    memcpy(into->p, initial, ninitial);
    into->len = ninitial;
  }
  s->fd = dup;
  s->role_agent = agent;
  s->next_id = agent ? 1 : 2;
  s->max_payload = opts[0];
  s->initial_window = opts[1];
  s->max_window = opts[2];
  s->conn_window = opts[3];
  s->ping_ms = opts[4];
  s->misses = opts[5];
  s->max_streams = opts[6];
  s->frames_per_turn = opts[7] ? opts[7] : 256;
  s->peer_initial_window = s->initial_window;
  s->conn_send_window = s->conn_window;
  s->tag.kind = TAG_SESSION;
  s->tag.obj = s;
  if (ctx_id != 0) {
    SSL_CTX *ctx = tls_ctx_get(ctx_id);
    if (ctx == NULL || tls_attach(s, ctx, name, verify_name) < 0) {
      close(dup);
      free(name);
      buf_free(&s->rbuf);
      buf_free(&s->pre);
      free(s);
      napi_throw_error(env, "ZL_TUNNEL_TLS", "cannot start TLS on the connection");
      return NULL;
    }
  }
  free(name);
  pthread_mutex_lock(&G.mu);
  s->id = G.next_sid++;
  if (G.next_sid == 0) G.next_sid = 1;
  s->jnext = G.jtable[s->id % SESSION_BUCKETS];
  G.jtable[s->id % SESSION_BUCKETS] = s;
  pthread_mutex_unlock(&G.mu);
  cmd_t *m = calloc(1, sizeof *m);
  if (m != NULL) {
    m->kind = C_START;
    m->sid = s->id;
    m->fd = -1;
    enqueue(m);
  }
  napi_value out;
  napi_create_uint32(env, s->id, &out);
  return out;
}

/* command(kind, sid, stream, a, b, c, d, data?, fd?) */
static napi_value js_command(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!G.started || argc < 7) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "the tunnel engine is not started, or a bad command");
    return NULL;
  }
  void *data = NULL;
  size_t len = 0;
  if (argc > 7) {
    bool is_buffer = false;
    napi_is_buffer(env, argv[7], &is_buffer);
    if (is_buffer) napi_get_buffer_info(env, argv[7], &data, &len);
  }
  cmd_t *m = malloc(sizeof *m + len);
  if (m == NULL) {
    napi_throw_error(env, "ZL_TUNNEL_NATIVE", "out of memory");
    return NULL;
  }
  uint32_t kind = 0;
  napi_get_value_uint32(env, argv[0], &kind);
  m->kind = (int)kind;
  napi_get_value_uint32(env, argv[1], &m->sid);
  napi_get_value_uint32(env, argv[2], &m->stream);
  napi_get_value_uint32(env, argv[3], &m->a);
  napi_get_value_uint32(env, argv[4], &m->b);
  napi_get_value_uint32(env, argv[5], &m->c);
  napi_get_value_uint32(env, argv[6], &m->d);
  m->fd = -1;
  m->len = len;
  m->next = NULL;
  if (len > 0) memcpy(m->data, data, len);
  if (argc > 8) {
    int32_t fd = -1;
    if (napi_get_value_int32(env, argv[8], &fd) == napi_ok && fd >= 0) {
      /* the thread's own copy, taken now: JavaScript may close its socket before the thread runs */
      m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (m->fd < 0) {
        free(m);
        napi_throw_error(env, "ZL_TUNNEL_NATIVE", "cannot duplicate a socket for the tunnel engine");
        return NULL;
      }
    }
  }
  enqueue(m);
  return NULL;
}

/* stats(sid, out: Float64Array(40)) -> false when the session is gone.
   out: bytes in, bytes out, compressed in, compressed out, datagrams dropped, -, -, -,
   frames in [8..23] and out [24..39] by frame_index() slot. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t sid = 0;
  napi_get_value_uint32(env, argv[0], &sid);
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *data = NULL;
  napi_value ab;
  bool found = false;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, &ab, &offset) == napi_ok &&
      type == napi_float64_array && length >= 40) {
    double *out = data;
    pthread_mutex_lock(&G.mu);
    session_t *s = jfind(sid);
    if (s != NULL) {
      found = true;
      out[0] = (double)__atomic_load_n(&s->bytes_in, __ATOMIC_RELAXED);
      out[1] = (double)__atomic_load_n(&s->bytes_out, __ATOMIC_RELAXED);
      out[2] = (double)__atomic_load_n(&s->comp_in, __ATOMIC_RELAXED);
      out[3] = (double)__atomic_load_n(&s->comp_out, __ATOMIC_RELAXED);
      out[4] = (double)__atomic_load_n(&s->dgram_dropped, __ATOMIC_RELAXED);
      for (int i = 0; i < 16; i++) {
        out[8 + i] = (double)__atomic_load_n(&s->frames_in[i], __ATOMIC_RELAXED);
        out[24 + i] = (double)__atomic_load_n(&s->frames_out[i], __ATOMIC_RELAXED);
      }
    }
    pthread_mutex_unlock(&G.mu);
  }
  napi_get_boolean(env, found, &result);
  return result;
}

/*
 * checkFrames(bytes, maxPayload, cut) -> [frames, code]: the engine's frame decoder over `bytes`
 * as if they arrived in two reads split at `cut` (the fuzz target, test/fuzz/tunnel-decoder.test.ts):
 * frames decoded (extensions not counted), and the GOAWAY code of the first fatal error (0: none).
 */
static napi_value js_check_frames(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out, v;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data = NULL;
  size_t len = 0;
  uint32_t max_payload = 16384, cut = 0;
  napi_get_buffer_info(env, argv[0], &data, &len);
  napi_get_value_uint32(env, argv[1], &max_payload);
  napi_get_value_uint32(env, argv[2], &cut);
  if (cut > len) cut = (uint32_t)len;
  zl_crc32_init();
  const uint8_t *p = data;
  size_t pos = 0;
  uint32_t frames = 0, code = 0;
  char why[96];
  for (int part = 0; part < 2 && code == 0; part++) {
    size_t end = part == 0 ? cut : len; /* what has "arrived" */
    for (;;) {
      long size = frame_check(p + pos, end - pos, max_payload, &code, why, sizeof why);
      if (size <= 0) break;
      if (p[pos + 6] < FIRST_EXTENSION_TYPE) frames++;
      pos += (size_t)size;
    }
  }
  napi_create_array_with_length(env, 2, &out);
  napi_create_uint32(env, frames, &v);
  napi_set_element(env, out, 0, v);
  napi_create_uint32(env, code, &v);
  napi_set_element(env, out, 1, v);
  return out;
}

/* busyNs() -> nanoseconds the engine's thread has spent working (not waiting) */
static napi_value js_busy(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_double(env, (double)__atomic_load_n(&G.busy_ns, __ATOMIC_RELAXED), &out);
  return out;
}

static napi_value js_codec(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_get_boolean(env, codec_available(), &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"tlsContext", NULL, js_tls_context, NULL, NULL, NULL, napi_default, NULL},
      {"tlsContextDrop", NULL, js_tls_context_drop, NULL, NULL, NULL, napi_default, NULL},
      {"session", NULL, js_session, NULL, NULL, NULL, napi_default, NULL},
      {"command", NULL, js_command, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"zstd", NULL, js_codec, NULL, NULL, NULL, napi_default, NULL},
      {"checkFrames", NULL, js_check_frames, NULL, NULL, NULL, napi_default, NULL},
      {"busyNs", NULL, js_busy, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
