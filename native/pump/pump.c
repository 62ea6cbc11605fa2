/*
 * zipline native pump (Linux): moves bytes between two connected TCP sockets with splice(2)
 * through a pipe per direction, on one epoll thread, so the data path never enters JavaScript.
 * This is HAProxy's splice mode. JavaScript keeps ownership of both sockets (and closes them);
 * the pump only reads and writes them, and reports once per connection how it ended.
 *
 * Per direction (in -> out): drain the pipe into `out`; when it is empty, splice `in` into the
 * pipe; EOF on `in` (after the pipe is drained) becomes shutdown(out, SHUT_WR) -- half-close is
 * forwarded. EAGAIN on `out` leaves data in the pipe and stops reading `in` (backpressure: at
 * most one pipe's worth, 256 KiB, is in flight per direction). An error on either side ends the
 * connection with the side that failed; JavaScript then resets the other one.
 *
 * Threading: JS calls add()/cancel() which queue a command and poke an eventfd; the thread owns
 * every connection's state. Completions go back through a threadsafe function. A connection's
 * fds are removed from epoll before its completion is posted, so JS may close them at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PIPE_SIZE (256 * 1024)

/* completion reasons, mirrored in src/l4/native-pump.ts */
enum { R_DONE = 0, R_ERR_A = 1, R_ERR_B = 2, R_IDLE = 3, R_CANCEL = 4, R_SETUP = 5 };

typedef struct {
  int in, out;
  int pr, pw;       /* pipe read/write ends */
  size_t pending;   /* bytes in the pipe */
  int eof;          /* `in` reached EOF */
  int shut;         /* shutdown(out, SHUT_WR) done */
  uint64_t bytes;   /* bytes delivered to `out` */
} dir_t;

typedef struct conn {
  uint32_t id;
  int fd[2];
  dir_t d[2]; /* d[0]: A->B, d[1]: B->A */
  uint64_t last_active_ms;
  uint32_t idle_ms;
  struct conn *prev, *next;
  /* epoll tags: one per fd, pointing back at the connection */
  struct tag { struct conn *c; } tags[2];
} conn_t;

typedef struct cmd {
  int kind; /* 1 add, 2 cancel */
  uint32_t id;
  int fa, fb;
  uint32_t idle_ms;
  struct cmd *next;
} cmd_t;

typedef struct {
  uint32_t id;
  int reason;
  int err; /* errno of the failure, 0 otherwise */
  uint64_t ab, ba;
} done_t;

static struct {
  int started;
  int ep, evfd;
  pthread_t thread;
  pthread_mutex_t mu;
  cmd_t *head, *tail;
  conn_t *conns;
  conn_t *dead; /* finished in this epoll batch; freed after it (events may still name them) */
  napi_threadsafe_function tsfn;
} P;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void post(conn_t *c, int reason, int err) {
  done_t *d = malloc(sizeof *d);
  if (d == NULL) return;
  d->id = c->id;
  d->reason = reason;
  d->err = err;
  d->ab = c->d[0].bytes;
  d->ba = c->d[1].bytes;
  napi_call_threadsafe_function(P.tsfn, d, napi_tsfn_blocking);
}

static void finish(conn_t *c, int reason, int err) {
  for (int i = 0; i < 2; i++) {
    epoll_ctl(P.ep, EPOLL_CTL_DEL, c->fd[i], NULL);
    if (c->d[i].pr >= 0) close(c->d[i].pr);
    if (c->d[i].pw >= 0) close(c->d[i].pw);
  }
  if (c->prev) c->prev->next = c->next;
  else P.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  post(c, reason, err);
  c->tags[0].c = c->tags[1].c = NULL;
  c->next = P.dead;
  P.dead = c;
}

static void free_dead(void) {
  while (P.dead != NULL) {
    conn_t *next = P.dead->next;
    free(P.dead);
    P.dead = next;
  }
}

/* Moves what it can in one direction. Returns 0, or the failing side (1 = in, 2 = out) with errno set. */
static int pump_dir(conn_t *c, dir_t *d) {
  for (;;) {
    while (d->pending > 0) {
      ssize_t n = splice(d->pr, NULL, d->out, NULL, d->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->pending -= (size_t)n;
        d->bytes += (uint64_t)n;
        c->last_active_ms = now_ms();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return 0; /* wait for EPOLLOUT on out */
      return 2;
    }
    if (d->eof) {
      if (!d->shut) {
        d->shut = 1;
        if (shutdown(d->out, SHUT_WR) < 0 && errno != ENOTCONN) return 2;
      }
      return 0;
    }
    ssize_t n = splice(d->in, NULL, d->pw, NULL, PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->pending += (size_t)n;
      c->last_active_ms = now_ms();
      continue;
    }
    if (n == 0) {
      d->eof = 1;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0; /* wait for EPOLLIN on in */
    return 1;
  }
}

static void pump(conn_t *c) {
  for (int i = 0; i < 2; i++) {
    int side = pump_dir(c, &c->d[i]);
    if (side != 0) {
      int err = errno;
      /* direction 0 reads A and writes B; direction 1 the reverse */
      int failed_a = (i == 0) ? (side == 1) : (side == 2);
      finish(c, failed_a ? R_ERR_A : R_ERR_B, err);
      return;
    }
  }
  if (c->d[0].shut && c->d[1].shut) finish(c, R_DONE, 0);
}

static void add_conn(cmd_t *m) {
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->id = m->id;
  c->fd[0] = m->fa;
  c->fd[1] = m->fb;
  c->idle_ms = m->idle_ms;
  c->last_active_ms = now_ms();
  c->next = P.conns;
  if (P.conns) P.conns->prev = c;
  P.conns = c;
  for (int i = 0; i < 2; i++) {
    dir_t *d = &c->d[i];
    d->in = c->fd[i];
    d->out = c->fd[1 - i];
    d->pr = d->pw = -1;
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
      finish(c, R_SETUP, errno);
      return;
    }
    d->pr = p[0];
    d->pw = p[1];
    fcntl(d->pw, F_SETPIPE_SZ, PIPE_SIZE); /* best effort: the default 64 KiB also works */
  }
  for (int i = 0; i < 2; i++) {
    c->tags[i].c = c;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->tags[i]};
    if (epoll_ctl(P.ep, EPOLL_CTL_ADD, c->fd[i], &ev) < 0) {
      finish(c, R_SETUP, errno);
      return;
    }
  }
  pump(c); /* data may already be waiting */
}

static void run_commands(void) {
  uint64_t v;
  if (read(P.evfd, &v, sizeof v) < 0) { /* nothing queued */ }
  pthread_mutex_lock(&P.mu);
  cmd_t *m = P.head;
  P.head = P.tail = NULL;
  pthread_mutex_unlock(&P.mu);
  while (m != NULL) {
    cmd_t *next = m->next;
    if (m->kind == 1) {
      add_conn(m);
    } else {
      for (conn_t *c = P.conns; c != NULL; c = c->next) {
        if (c->id == m->id) {
          finish(c, R_CANCEL, 0);
          break;
        }
      }
    }
    free(m);
    m = next;
  }
  free_dead();
}

static void sweep_idle(void) {
  uint64_t now = now_ms();
  conn_t *c = P.conns;
  while (c != NULL) {
    conn_t *next = c->next;
    if (c->idle_ms > 0 && now - c->last_active_ms >= c->idle_ms) finish(c, R_IDLE, 0);
    c = next;
  }
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  uint64_t last_sweep = now_ms();
  for (;;) {
    int n = epoll_wait(P.ep, evs, 256, 250);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        run_commands();
        continue;
      }
      struct tag *t = evs[i].data.ptr;
      if (t->c == NULL) continue; /* finished earlier in this batch */
      pump(t->c);
    }
    free_dead();
    uint64_t now = now_ms();
    if (now - last_sweep >= 250) {
      sweep_idle();
      free_dead();
      last_sweep = now;
    }
  }
  return NULL;
}

static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  done_t *d = data;
  if (env != NULL && cb != NULL) {
    napi_value argv[5], undef;
    napi_create_uint32(env, d->id, &argv[0]);
    napi_create_int32(env, d->reason, &argv[1]);
    napi_create_int32(env, d->err, &argv[2]);
    napi_create_double(env, (double)d->ab, &argv[3]);
    napi_create_double(env, (double)d->ba, &argv[4]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, cb, 5, argv, NULL);
  }
  free(d);
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (P.started) return NULL;
  napi_create_string_utf8(env, "zipline-pump", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &P.tsfn) != napi_ok) {
    napi_throw_error(env, "ZL_PUMP", "cannot create the completion callback");
    return NULL;
  }
  napi_unref_threadsafe_function(env, P.tsfn); /* the sockets keep the process alive, not the pump */
  P.ep = epoll_create1(EPOLL_CLOEXEC);
  P.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (P.ep < 0 || P.evfd < 0 || epoll_ctl(P.ep, EPOLL_CTL_ADD, P.evfd, &ev) < 0) {
    napi_throw_error(env, "ZL_PUMP", "epoll/eventfd setup failed");
    return NULL;
  }
  pthread_mutex_init(&P.mu, NULL);
  if (pthread_create(&P.thread, NULL, loop, NULL) != 0) {
    napi_throw_error(env, "ZL_PUMP", "cannot start the pump thread");
    return NULL;
  }
  pthread_detach(P.thread);
  P.started = 1;
  return NULL;
}

static void enqueue(cmd_t *m) {
  pthread_mutex_lock(&P.mu);
  if (P.tail) P.tail->next = m;
  else P.head = m;
  P.tail = m;
  pthread_mutex_unlock(&P.mu);
  uint64_t one = 1;
  if (write(P.evfd, &one, sizeof one) < 0) { /* the counter saturates only after 2^64 pokes */ }
}

/* add(id, fdA, fdB, idleMs) */
static napi_value js_add(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  cmd_t *m = calloc(1, sizeof *m);
  if (m == NULL || !P.started) {
    free(m);
    napi_throw_error(env, "ZL_PUMP", "pump not started or out of memory");
    return NULL;
  }
  m->kind = 1;
  napi_get_value_uint32(env, argv[0], &m->id);
  napi_get_value_int32(env, argv[1], &m->fa);
  napi_get_value_int32(env, argv[2], &m->fb);
  napi_get_value_uint32(env, argv[3], &m->idle_ms);
  enqueue(m);
  return NULL;
}

/* cancel(id) */
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  cmd_t *m = calloc(1, sizeof *m);
  if (m == NULL || !P.started) {
    free(m);
    return NULL;
  }
  m->kind = 2;
  napi_get_value_uint32(env, argv[0], &m->id);
  enqueue(m);
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 3, props);
  return exports;
}
