/*
 * Native UDP relay: the data plane of a `protocol: udp` listener when `native: auto`.
 *
 * The thread owns the listening socket and every session's connected upstream socket. A datagram
 * from a known client goes straight to its session's upstream; replies go back from the listening
 * socket. A datagram from a new client creates a *pending* session (its datagrams are queued in
 * order, at most max_queue) and one EV_UDP_NEW event: JavaScript picks the server and answers
 * CMD_UDP_ACCEPT (the thread connects, flushes the queue in order, then relays) or
 * CMD_UDP_REFUSE. Ordering within a session therefore holds across the hand-off.
 *
 * A session ends after `responses` replies per datagram sent on for the client, after `idle_ms`
 * without a datagram either way, on an ICMP error (ECONNREFUSED), or on CMD_UDP_END; EV_UDP_END
 * carries its counters.
 * Listener-wide counters are read by JavaScript at scrape time (udp_counters, under pump_lock).
 */
#include "pump.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define BUCKETS 4096
#define BATCH 64

enum { END_RESPONSES = 0, END_IDLE = 1, END_ERROR = 2, END_CANCEL = 3, END_SETUP = 4 };

typedef struct qitem {
  size_t len;
  char data[];
} qitem_t;

typedef struct session {
  tag_t tag;
  uint32_t id;
  struct listener *l;
  struct sockaddr_storage addr;
  socklen_t alen;
  int fd; /* upstream; -1 while pending */
  qitem_t **queue;
  uint32_t nq, qcap;
  uint64_t din, dout, bin, bout, dropped, last;
  struct session *hnext;  /* bucket chain by client address */
  struct session *inext;  /* bucket chain by id */
  struct session *prev, *next; /* listener's list */
} session_t;

typedef struct listener {
  tag_t tag;
  uint32_t id;
  int fd;
  int accepting;
  uint32_t responses, idle_ms, max_queue, max_sessions, nsess;
  /* counters read by JS (doubles: exact to 2^53) */
  double din, dout, bin, bout, drop_limit, drop_draining, drop_queue, drop_send;
  session_t *by_addr[BUCKETS];
  session_t *list;
  struct listener *next;
} listener_t;

static listener_t *listeners;
static session_t *by_id[BUCKETS];
static uint32_t next_session_id = 1;
static char buf[65536];

static uint32_t addr_hash(const struct sockaddr_storage *a) {
  const unsigned char *p;
  size_t n;
  uint16_t port;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)a;
    p = (const unsigned char *)&s->sin_addr;
    n = 4;
    port = s->sin_port;
  } else {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
    p = (const unsigned char *)&s->sin6_addr;
    n = 16;
    port = s->sin6_port;
  }
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  h = (h ^ (port & 0xff)) * 16777619u;
  h = (h ^ (port >> 8)) * 16777619u;
  return h % BUCKETS;
}

static int addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
  return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static listener_t *find_listener(uint32_t lid) {
  for (listener_t *l = listeners; l != NULL; l = l->next)
    if (l->id == lid) return l;
  return NULL;
}

static session_t *find_session(uint32_t id) {
  for (session_t *s = by_id[id % BUCKETS]; s != NULL; s = s->inext)
    if (s->id == id) return s;
  return NULL;
}

static void unlink_chain(session_t **head, session_t *s, int by_address) {
  for (session_t **pp = head; *pp != NULL; pp = by_address ? &(*pp)->hnext : &(*pp)->inext) {
    if (*pp == s) {
      *pp = by_address ? s->hnext : s->inext;
      return;
    }
  }
}

static void end_session(session_t *s, int reason, int err) {
  listener_t *l = s->l;
  if (s->fd >= 0) {
    epoll_ctl(pump_ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
  }
  for (uint32_t i = 0; i < s->nq; i++) free(s->queue[i]);
  free(s->queue);
  unlink_chain(&l->by_addr[addr_hash(&s->addr)], s, 1);
  unlink_chain(&by_id[s->id % BUCKETS], s, 0);
  if (s->prev) s->prev->next = s->next;
  else l->list = s->next;
  if (s->next) s->next->prev = s->prev;
  l->nsess--;
  event_t *ev = calloc(1, sizeof *ev);
  if (ev != NULL) {
    ev->type = EV_UDP_END;
    ev->id = s->id;
    ev->lid = l->id;
    ev->reason = reason;
    ev->err = err;
    ev->n[0] = (double)s->din;
    ev->n[1] = (double)s->dout;
    ev->n[2] = (double)s->bin;
    ev->n[3] = (double)s->bout;
    ev->port = (int)s->dropped;
    pump_post(ev);
  }
  s->tag.obj = NULL;
  pump_defer_free(s);
}

static void to_upstream(session_t *s, const char *data, size_t n) {
  listener_t *l = s->l;
  if (send(s->fd, data, n, MSG_DONTWAIT) < 0) {
    if (errno == ECONNREFUSED) {
      end_session(s, END_ERROR, ECONNREFUSED);
      return;
    }
    s->dropped++;
    l->drop_send++;
    return;
  }
  s->din++;
  s->bin += n;
  l->din++;
  l->bin += (double)n;
}

static void new_client(listener_t *l, const struct sockaddr_storage *from, socklen_t alen, const char *data, size_t n) {
  if (!l->accepting) {
    l->drop_draining++;
    return;
  }
  if (l->nsess >= l->max_sessions) {
    l->drop_limit++;
    return;
  }
  session_t *s = calloc(1, sizeof *s);
  qitem_t *first = malloc(sizeof *first + n);
  uint32_t qcap = l->max_queue ? l->max_queue : 1;
  qitem_t **queue = calloc(qcap, sizeof *queue);
  event_t *ev = calloc(1, sizeof *ev);
  if (s == NULL || first == NULL || queue == NULL || ev == NULL) {
    free(s), free(first), free(queue), free(ev);
    l->drop_queue++;
    return;
  }
  s->tag.kind = TAG_UDP_SESSION;
  s->tag.obj = s;
  s->id = next_session_id++;
  if (next_session_id == 0) next_session_id = 1;
  s->l = l;
  memcpy(&s->addr, from, alen);
  s->alen = alen;
  s->fd = -1;
  s->last = pump_now_ms();
  first->len = n;
  memcpy(first->data, data, n);
  s->queue = queue;
  s->qcap = qcap;
  s->queue[s->nq++] = first;
  uint32_t b = addr_hash(&s->addr);
  s->hnext = l->by_addr[b];
  l->by_addr[b] = s;
  s->inext = by_id[s->id % BUCKETS];
  by_id[s->id % BUCKETS] = s;
  s->next = l->list;
  if (l->list) l->list->prev = s;
  l->list = s;
  l->nsess++;
  ev->type = EV_UDP_NEW;
  ev->id = s->id;
  ev->lid = l->id;
  if (from->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)from;
    inet_ntop(AF_INET, &a->sin_addr, ev->ip, sizeof ev->ip);
    ev->port = ntohs(a->sin_port);
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
    inet_ntop(AF_INET6, &a->sin6_addr, ev->ip, sizeof ev->ip);
    ev->port = ntohs(a->sin6_port);
  }
  pump_post(ev);
}

static void from_client(listener_t *l) {
  for (int i = 0; i < BATCH; i++) {
    struct sockaddr_storage from;
    socklen_t alen = sizeof from;
    ssize_t n = recvfrom(l->fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &alen);
    if (n < 0) return; /* EAGAIN, or an error queued by ICMP for a reply we sent: nothing to do */
    session_t *s = l->by_addr[addr_hash(&from)];
    while (s != NULL && !addr_eq(&s->addr, &from)) s = s->hnext;
    if (s == NULL) {
      new_client(l, &from, alen, buf, (size_t)n);
      continue;
    }
    s->last = pump_now_ms();
    if (s->fd >= 0) {
      to_upstream(s, buf, (size_t)n);
      continue;
    }
    if (s->nq >= s->qcap) {
      s->dropped++;
      l->drop_queue++;
      continue;
    }
    qitem_t *q = malloc(sizeof *q + (size_t)n);
    if (q == NULL) {
      l->drop_queue++;
      continue;
    }
    q->len = (size_t)n;
    memcpy(q->data, buf, (size_t)n);
    s->queue[s->nq++] = q;
  }
}

static void from_upstream(session_t *s) {
  listener_t *l = s->l;
  for (int i = 0; i < BATCH; i++) {
    ssize_t n = recv(s->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      end_session(s, END_ERROR, errno);
      return;
    }
    s->last = pump_now_ms();
    if (sendto(l->fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&s->addr, s->alen) < 0) {
      s->dropped++;
      l->drop_send++;
      continue;
    }
    s->dout++;
    s->bout += (uint64_t)n;
    l->dout++;
    l->bout += (double)n;
    // nginx `proxy_responses`: replies expected per datagram the client sent (and that was sent on)
    if (l->responses > 0 && s->dout >= (uint64_t)l->responses * s->din) {
      end_session(s, END_RESPONSES, 0);
      return;
    }
  }
}

static void accept_session(cmd_t *m) {
  session_t *s = find_session(m->id);
  if (s == NULL || s->fd >= 0) return;
  struct sockaddr_storage to;
  memset(&to, 0, sizeof to);
  socklen_t tlen;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&to;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&to;
  if (inet_pton(AF_INET, m->ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)m->port);
    tlen = sizeof *a4;
  } else if (inet_pton(AF_INET6, m->ip, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)m->port);
    tlen = sizeof *a6;
  } else {
    end_session(s, END_SETUP, EINVAL);
    return;
  }
  int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, tlen) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    end_session(s, END_SETUP, e);
    return;
  }
  s->fd = fd;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->tag};
  if (epoll_ctl(pump_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    end_session(s, END_SETUP, errno);
    return;
  }
  /* in arrival order, before anything read later; the queue is detached first because a send
     error may end (and free) the session half-way */
  qitem_t **queue = s->queue;
  uint32_t nq = s->nq;
  s->queue = NULL;
  s->nq = 0;
  for (uint32_t i = 0; i < nq; i++) {
    if (s->tag.obj != NULL) to_upstream(s, queue[i]->data, queue[i]->len);
    free(queue[i]);
  }
  free(queue);
}

void udp_command(cmd_t *m) {
  switch (m->kind) {
    case CMD_UDP_LISTEN: {
      listener_t *l = calloc(1, sizeof *l);
      if (l == NULL) {
        close(m->fa);
        return;
      }
      l->tag.kind = TAG_UDP_LISTENER;
      l->tag.obj = l;
      l->id = m->lid;
      l->fd = m->fa;
      l->accepting = 1;
      l->responses = m->u[0];
      l->idle_ms = m->u[1];
      l->max_queue = m->u[2];
      l->max_sessions = m->u[3];
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->tag};
      epoll_ctl(pump_ep, EPOLL_CTL_ADD, l->fd, &ev);
      pump_lock();
      l->next = listeners;
      listeners = l;
      pump_unlock();
      return;
    }
    case CMD_UDP_ACCEPT:
      accept_session(m);
      return;
    case CMD_UDP_REFUSE:
    case CMD_UDP_END: {
      session_t *s = find_session(m->id);
      if (s != NULL) end_session(s, END_CANCEL, 0);
      return;
    }
    case CMD_UDP_STOP_ACCEPTING: {
      listener_t *l = find_listener(m->lid);
      if (l == NULL) return;
      l->accepting = 0;
      /* u[0] = 1 (an upgrade: the successor process reads this socket now): stop reading it;
         the sessions still answer their clients through it */
      if (m->u[0] == 1) epoll_ctl(pump_ep, EPOLL_CTL_DEL, l->fd, NULL);
      return;
    }
    case CMD_UDP_UPDATE: {
      listener_t *l = find_listener(m->lid);
      if (l == NULL) return;
      l->responses = m->u[0];
      l->idle_ms = m->u[1];
      l->max_queue = m->u[2]; /* applies to sessions created from now on */
      l->max_sessions = m->u[3];
      return;
    }
    case CMD_UDP_CLOSE: {
      listener_t *l = find_listener(m->lid);
      if (l == NULL) return;
      while (l->list != NULL) end_session(l->list, END_CANCEL, 0);
      epoll_ctl(pump_ep, EPOLL_CTL_DEL, l->fd, NULL);
      close(l->fd);
      pump_lock();
      for (listener_t **pp = &listeners; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
          *pp = l->next;
          break;
        }
      }
      pump_unlock();
      l->tag.obj = NULL;
      pump_defer_free(l);
      return;
    }
    default:
      return;
  }
}

void udp_event(tag_t *t, uint32_t events) {
  (void)events;
  if (t->kind == TAG_UDP_LISTENER) from_client(t->obj);
  else from_upstream(t->obj);
}

void udp_sweep(uint64_t now) {
  for (listener_t *l = listeners; l != NULL; l = l->next) {
    if (l->idle_ms == 0) continue;
    session_t *s = l->list;
    while (s != NULL) {
      session_t *next = s->next;
      if (now - s->last >= l->idle_ms) end_session(s, END_IDLE, 0);
      s = next;
    }
  }
}

int udp_counters(uint32_t lid, double out[9]) {
  listener_t *l = find_listener(lid);
  if (l == NULL) return 0;
  out[0] = l->din;
  out[1] = l->dout;
  out[2] = l->bin;
  out[3] = l->bout;
  out[4] = l->drop_limit;
  out[5] = l->drop_draining;
  out[6] = l->drop_queue;
  out[7] = l->drop_send;
  out[8] = l->nsess;
  return 1;
}
