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
#include "pump.h"

#include "../common/deferred.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#define PIPE_SIZE (256 * 1024)

/* completion reasons, mirrored in src/l4/native-pump.ts */
enum { R_DONE = 0, R_ERR_A = 1, R_ERR_B = 2, R_IDLE = 3, R_CANCEL = 4, R_SETUP = 5 };

/* R_IDLE's second word: the sides that left bytes unread (mirrored as IDLE_UNREAD) */
enum { UNREAD_A = 1, UNREAD_B = 2 };

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
  tag_t tags[2]; /* epoll tags, one per fd */
} conn_t;

int pump_ep = -1;

static struct {
  int started;
  int evfd;
  tag_t cmd_tag;
  pthread_t thread;
  pthread_mutex_t mu;
  cmd_t *head, *tail;
  conn_t *conns;
  deferred_t dead; /* freed after the current epoll batch (its events may still name them) */
  napi_threadsafe_function tsfn;
} P;

uint64_t pump_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void pump_post(event_t *ev) {
  if (napi_call_threadsafe_function(P.tsfn, ev, napi_tsfn_blocking) != napi_ok) free(ev);
}

void pump_defer_free(void *p) { deferred_add(&P.dead, p); }

static void free_dead(void) { deferred_run(&P.dead); }

static void post_tcp(conn_t *c, int reason, int err) {
  event_t *ev = calloc(1, sizeof *ev);
  if (ev == NULL) return;
  ev->type = EV_TCP_DONE;
  ev->id = c->id;
  ev->reason = reason;
  ev->err = err;
  ev->n[0] = (double)c->d[0].bytes;
  ev->n[1] = (double)c->d[1].bytes;
  pump_post(ev);
}

static void finish(conn_t *c, int reason, int err) {
  for (int i = 0; i < 2; i++) {
    epoll_ctl(pump_ep, EPOLL_CTL_DEL, c->fd[i], NULL);
    if (c->d[i].pr >= 0) close(c->d[i].pr);
    if (c->d[i].pw >= 0) close(c->d[i].pw);
  }
  if (c->prev) c->prev->next = c->next;
  else P.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  post_tcp(c, reason, err);
  c->tags[0].obj = c->tags[1].obj = NULL;
  pump_defer_free(c);
}

/* Moves what it can in one direction. Returns 0, or the failing side (1 = in, 2 = out) with errno set. */
static int pump_dir(conn_t *c, dir_t *d) {
  for (;;) {
    while (d->pending > 0) {
      ssize_t n = splice(d->pr, NULL, d->out, NULL, d->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->pending -= (size_t)n;
        d->bytes += (uint64_t)n;
        c->last_active_ms = pump_now_ms();
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
      c->last_active_ms = pump_now_ms();
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
  c->idle_ms = m->u[0];
  c->last_active_ms = pump_now_ms();
  c->next = P.conns;
  if (P.conns) P.conns->prev = c;
  P.conns = c;
  /* both directions first: a failure below calls finish(), which closes every pipe fd >= 0, and
     calloc's zeroes would otherwise name fd 0 */
  for (int i = 0; i < 2; i++) {
    c->d[i].in = c->fd[i];
    c->d[i].out = c->fd[1 - i];
    c->d[i].pr = c->d[i].pw = -1;
  }
  for (int i = 0; i < 2; i++) {
    dir_t *d = &c->d[i];
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
    c->tags[i].kind = TAG_TCP;
    c->tags[i].obj = c;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->tags[i]};
    if (epoll_ctl(pump_ep, EPOLL_CTL_ADD, c->fd[i], &ev) < 0) {
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
    if (m->kind == CMD_TCP_ADD) {
      add_conn(m);
    } else if (m->kind == CMD_TCP_CANCEL) {
      for (conn_t *c = P.conns; c != NULL; c = c->next) {
        if (c->id == m->id) {
          finish(c, R_CANCEL, 0);
          break;
        }
      }
    } else if (m->kind == CMD_ACCEPT_ADD || m->kind == CMD_ACCEPT_REMOVE) {
      accept_command(m);
    } else if (m->kind == CMD_BODY_ADD || m->kind == CMD_BODY_CANCEL) {
      body_command(m);
    } else {
      udp_command(m);
    }
    free(m);
    m = next;
  }
}

/* At the idle timeout, the sides not reading what waits for them (in the pipe towards them, or
   unsent in their socket: SIOCOUTQ); JavaScript resets them, so the kernel drops those bytes. */
static int unread_sides(const conn_t *c) {
  int mask = 0;
  for (int i = 0; i < 2; i++) {
    const dir_t *d = &c->d[i];
    int queued = 0;
    if (d->pending > 0 || (ioctl(d->out, SIOCOUTQ, &queued) == 0 && queued > 0))
      mask |= d->out == c->fd[0] ? UNREAD_A : UNREAD_B;
  }
  return mask;
}

static void sweep_idle(void) {
  uint64_t now = pump_now_ms();
  conn_t *c = P.conns;
  while (c != NULL) {
    conn_t *next = c->next;
    if (c->idle_ms > 0 && now - c->last_active_ms >= c->idle_ms) finish(c, R_IDLE, unread_sides(c));
    c = next;
  }
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  uint64_t last_sweep = pump_now_ms();
  for (;;) {
    int n = epoll_wait(pump_ep, evs, 256, 250);
    for (int i = 0; i < n; i++) {
      tag_t *t = evs[i].data.ptr;
      if (t->kind == TAG_CMD) run_commands();
      else if (t->obj == NULL) continue; /* finished earlier in this batch */
      else if (t->kind == TAG_TCP) pump(t->obj);
      else if (t->kind == TAG_ACCEPT) accept_event(t);
      else if (t->kind == TAG_BODY) body_event(t);
      else udp_event(t, evs[i].events);
    }
    free_dead();
    uint64_t now = pump_now_ms();
    if (now - last_sweep >= 250) {
      sweep_idle();
      udp_sweep(now);
      body_sweep(now);
      accept_sweep(now);
      free_dead();
      last_sweep = now;
    }
  }
  return NULL;
}

/* callback(type, id, lid, reason, err, n0, n1, n2, n3, ip, port) */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  event_t *e = data;
  if (env != NULL && cb != NULL) {
    napi_value argv[11], undef;
    napi_create_int32(env, e->type, &argv[0]);
    napi_create_uint32(env, e->id, &argv[1]);
    napi_create_uint32(env, e->lid, &argv[2]);
    napi_create_int32(env, e->reason, &argv[3]);
    napi_create_int32(env, e->err, &argv[4]);
    for (int i = 0; i < 4; i++) napi_create_double(env, e->n[i], &argv[5 + i]);
    napi_create_string_utf8(env, e->ip, NAPI_AUTO_LENGTH, &argv[9]);
    napi_create_int32(env, e->port, &argv[10]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, cb, 11, argv, NULL);
  }
  free(e);
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
  pump_ep = epoll_create1(EPOLL_CLOEXEC);
  P.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  P.cmd_tag.kind = TAG_CMD;
  P.cmd_tag.obj = &P;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &P.cmd_tag};
  if (pump_ep < 0 || P.evfd < 0 || epoll_ctl(pump_ep, EPOLL_CTL_ADD, P.evfd, &ev) < 0) {
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

static int get_u32(napi_env env, napi_value v, uint32_t *out) { return napi_get_value_uint32(env, v, out) == napi_ok; }

/* command(kind, id, lid, fa, fb, u0, u1, u2, u3, ip, port): queue a command for the thread */
static napi_value js_command(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!P.started || argc < 11) {
    napi_throw_error(env, "ZL_PUMP", "native pump not started, or a bad command");
    return NULL;
  }
  cmd_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    napi_throw_error(env, "ZL_PUMP", "out of memory");
    return NULL;
  }
  uint32_t kind = 0;
  get_u32(env, argv[0], &kind);
  m->kind = (int)kind;
  get_u32(env, argv[1], &m->id);
  get_u32(env, argv[2], &m->lid);
  napi_get_value_int32(env, argv[3], &m->fa);
  napi_get_value_int32(env, argv[4], &m->fb);
  for (int i = 0; i < 4; i++) get_u32(env, argv[5 + i], &m->u[i]);
  size_t len = 0;
  napi_get_value_string_utf8(env, argv[9], m->ip, sizeof m->ip, &len);
  napi_get_value_int32(env, argv[10], &m->port);
  if (m->kind == CMD_BODY_ADD || m->kind == CMD_ACCEPT_ADD) {
    /* the thread's own fds, taken now: JS may close its sockets before the thread sees the command */
    int a = fcntl(m->fa, F_DUPFD_CLOEXEC, 0);
    int b = (a < 0 || m->kind == CMD_ACCEPT_ADD) ? -1 : fcntl(m->fb, F_DUPFD_CLOEXEC, 0);
    if (a < 0 || (m->kind == CMD_BODY_ADD && b < 0)) {
      if (a >= 0) close(a);
      free(m);
      napi_throw_error(env, "ZL_PUMP", "cannot duplicate a socket for the native thread");
      return NULL;
    }
    m->fa = a;
    m->fb = b;
  }
  enqueue(m);
  return NULL;
}

/*
 * bindSocket(ip, port, tcp, reusePort, rcvbuf) -> [fd, boundPort]: a non-blocking socket, bound now so
 * errors are synchronous. UDP sockets are served by the native thread; TCP ones are handed to
 * Node (`server.listen({ fd })`, which calls listen(2)). `reusePort` sets SO_REUSEPORT, so that
 * each worker process binds its own socket on the same address and the kernel spreads new
 * connections and UDP flows across them (by 4-tuple hash). `rcvbuf` > 0 sets SO_RCVBUF (the
 * kernel caps it at net.core.rmem_max).
 */
static napi_value js_bind_socket(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char ip[64] = {0};
  size_t len = 0;
  int32_t port = 0;
  bool tcp = false, reuse_port = false;
  napi_get_value_string_utf8(env, argv[0], ip, sizeof ip, &len);
  napi_get_value_int32(env, argv[1], &port);
  if (argc > 2) napi_get_value_bool(env, argv[2], &tcp);
  if (argc > 3) napi_get_value_bool(env, argv[3], &reuse_port);
  int32_t rcvbuf = 0;
  if (argc > 4) napi_get_value_int32(env, argv[4], &rcvbuf);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t slen;
  int family;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    family = AF_INET;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    slen = sizeof *a4;
  } else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
    family = AF_INET6;
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    slen = sizeof *a6;
  } else {
    napi_throw_error(env, "EINVAL", "not an IP address");
    return NULL;
  }
  int fd = socket(family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  int ok = fd >= 0;
  /* as libuv does for TCP listeners: a restarted process can rebind while old connections linger */
  if (ok && tcp) ok = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0;
  if (ok && reuse_port) ok = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
  if (ok && rcvbuf > 0) ok = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0;
  if (!ok || bind(fd, (struct sockaddr *)&ss, slen) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    napi_throw_error(env, e == EADDRINUSE ? "EADDRINUSE" : e == EACCES ? "EACCES" : "EBIND", strerror(e));
    return NULL;
  }
  getsockname(fd, (struct sockaddr *)&ss, &slen);
  int bound = family == AF_INET ? ntohs(a4->sin_port) : ntohs(a6->sin6_port);
  napi_value out, vfd, vport;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fd, &vfd);
  napi_create_int32(env, bound, &vport);
  napi_set_element(env, out, 0, vfd);
  napi_set_element(env, out, 1, vport);
  return out;
}

/* udpCounters(lid) -> [datagramsIn, datagramsOut, bytesIn, bytesOut, dropLimit, dropDraining, dropQueue, dropSend, sessions] */
static napi_value js_udp_counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t lid = 0;
  get_u32(env, argv[0], &lid);
  double c[9] = {0};
  pthread_mutex_lock(&P.mu);
  udp_counters(lid, c);
  pthread_mutex_unlock(&P.mu);
  napi_create_array_with_length(env, 9, &out);
  for (uint32_t i = 0; i < 9; i++) {
    napi_value v;
    napi_create_double(env, c[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

napi_value js_send_latin1(napi_env env, napi_callback_info info);  /* send.c */
napi_value js_socket_error(napi_env env, napi_callback_info info); /* sockerr.c */

/* lets udp.c change its listener list under the same lock udpCounters reads it with */
void pump_lock(void) { pthread_mutex_lock(&P.mu); }
void pump_unlock(void) { pthread_mutex_unlock(&P.mu); }

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"command", NULL, js_command, NULL, NULL, NULL, napi_default, NULL},
      {"bindSocket", NULL, js_bind_socket, NULL, NULL, NULL, napi_default, NULL},
      {"udpCounters", NULL, js_udp_counters, NULL, NULL, NULL, napi_default, NULL},
      {"sendLatin1", NULL, js_send_latin1, NULL, NULL, NULL, napi_default, NULL},
      {"socketError", NULL, js_socket_error, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
