/*
 * Native HTTP bodies (Linux): splices exactly N bytes of a Content-Length response body from
 * the upstream socket to the client socket (socket -> pipe -> socket, as the L4 pump), then
 * hands both connections back to JavaScript, which reads the next head on them (keep-alive).
 *
 * JavaScript stops libuv reading the upstream socket first and only starts a job when nothing of
 * the response is queued in Node for the client. The job works on dup()s of both fds, made on the
 * JavaScript thread when the command is queued: JavaScript may destroy its sockets at any time
 * (a client reset, a drain timeout) without an fd number being reused under the thread; it then
 * cancels the job, and the thread closes its dups.
 *
 * Ends (EV_BODY_DONE, reason): done (all N bytes delivered), upstream EOF or error before N
 * (R_ERR_A), client write error (R_ERR_B), no byte from the upstream for the job's idle timeout
 * (R_IDLE), cancel (R_CANCEL), setup failure (R_SETUP), or no byte taken by the client for its
 * client idle timeout while bytes wait for it in the pipe (B_CLIENT_IDLE: its stall, not the
 * upstream's; a client idle of 0 leaves the idle timeout as the bound). n[0] is the bytes
 * delivered to the client.
 */
#include "pump.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define BODY_PIPE (256 * 1024)

/* mirrors pump.c's completion reasons, and one of its own */
enum { B_DONE = 0, B_ERR_A = 1, B_ERR_B = 2, B_IDLE = 3, B_CANCEL = 4, B_SETUP = 5, B_CLIENT_IDLE = 6 };

typedef struct body {
  uint32_t id;
  int in, out;      /* our dups: upstream, client */
  int pr, pw;       /* pipe */
  uint64_t left;    /* bytes still to read from `in` */
  size_t pending;   /* bytes in the pipe */
  uint64_t sent;    /* bytes delivered to `out` */
  uint32_t idle_ms;
  uint32_t client_idle_ms;
  uint64_t last_ms;
  tag_t tags[2];
  struct body *next;
} body_t;

static body_t *bodies;

static void body_finish(body_t *b, int reason, int err) {
  epoll_ctl(pump_ep, EPOLL_CTL_DEL, b->in, NULL);
  epoll_ctl(pump_ep, EPOLL_CTL_DEL, b->out, NULL);
  if (b->pr >= 0) close(b->pr);
  if (b->pw >= 0) close(b->pw);
  close(b->in);
  close(b->out);
  for (body_t **p = &bodies; *p != NULL; p = &(*p)->next) {
    if (*p == b) {
      *p = b->next;
      break;
    }
  }
  event_t *ev = calloc(1, sizeof *ev);
  if (ev != NULL) {
    ev->type = EV_BODY_DONE;
    ev->id = b->id;
    ev->reason = reason;
    ev->err = err;
    ev->n[0] = (double)b->sent;
    pump_post(ev);
  }
  b->tags[0].obj = b->tags[1].obj = NULL;
  pump_defer_free(b);
}

static void body_pump(body_t *b) {
  for (;;) {
    while (b->pending > 0) {
      ssize_t n = splice(b->pr, NULL, b->out, NULL, b->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        b->pending -= (size_t)n;
        b->sent += (uint64_t)n;
        b->last_ms = pump_now_ms();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return; /* EPOLLOUT on the client */
      body_finish(b, B_ERR_B, n < 0 ? errno : 0);
      return;
    }
    if (b->left == 0) {
      body_finish(b, B_DONE, 0);
      return;
    }
    size_t want = b->left < BODY_PIPE ? (size_t)b->left : BODY_PIPE;
    ssize_t n = splice(b->in, NULL, b->pw, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      b->left -= (uint64_t)n;
      b->pending += (size_t)n;
      b->last_ms = pump_now_ms();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return; /* EPOLLIN on the upstream */
    body_finish(b, B_ERR_A, n < 0 ? errno : 0); /* EOF (n == 0) before the declared length */
    return;
  }
}

void body_command(cmd_t *m) {
  if (m->kind == CMD_BODY_CANCEL) {
    for (body_t *b = bodies; b != NULL; b = b->next) {
      if (b->id == m->id) {
        body_finish(b, B_CANCEL, 0);
        return;
      }
    }
    return;
  }
  body_t *b = calloc(1, sizeof *b);
  if (b == NULL) {
    close(m->fa);
    close(m->fb);
    return;
  }
  b->id = m->id;
  b->in = m->fa;
  b->out = m->fb;
  b->pr = b->pw = -1;
  b->left = (uint64_t)m->u[0] | ((uint64_t)m->u[1] << 32);
  b->idle_ms = m->u[2];
  b->client_idle_ms = m->u[3];
  b->last_ms = pump_now_ms();
  b->next = bodies;
  bodies = b;
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
    body_finish(b, B_SETUP, errno);
    return;
  }
  b->pr = p[0];
  b->pw = p[1];
  fcntl(b->pw, F_SETPIPE_SZ, BODY_PIPE); /* best effort */
  b->tags[0].kind = b->tags[1].kind = TAG_BODY;
  b->tags[0].obj = b->tags[1].obj = b;
  struct epoll_event ein = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = &b->tags[0]};
  struct epoll_event eout = {.events = EPOLLOUT | EPOLLET, .data.ptr = &b->tags[1]};
  if (epoll_ctl(pump_ep, EPOLL_CTL_ADD, b->in, &ein) < 0 || epoll_ctl(pump_ep, EPOLL_CTL_ADD, b->out, &eout) < 0) {
    body_finish(b, B_SETUP, errno);
    return;
  }
  body_pump(b); /* bytes may already be waiting */
}

void body_event(tag_t *t) { body_pump(t->obj); }

void body_sweep(uint64_t now) {
  body_t *b = bodies;
  while (b != NULL) {
    body_t *next = b->next;
    /* bytes wait in the pipe only while the client takes none (body_pump returns on its EAGAIN) */
    int held = b->pending > 0;
    uint32_t limit = held && b->client_idle_ms > 0 ? b->client_idle_ms : b->idle_ms;
    if (limit > 0 && now - b->last_ms >= limit) body_finish(b, held ? B_CLIENT_IDLE : B_IDLE, 0);
    b = next;
  }
}
