/*
 * Native accept (Linux): drains a listening socket's accept queue on the pump thread and hands
 * every new connection's fd to JavaScript, which wraps it in a net.Socket.
 *
 * Why: libuv (Node 20) accepts one connection per event-loop iteration. Under load an iteration
 * serves hundreds of reads first, so a burst of new connections waits in the kernel's queue for
 * seconds (1,000 connections took ~2.5 s to be accepted; clients timed out). Here the queue is
 * emptied as soon as it is readable, up to ACCEPT_BATCH per wake-up so the splice pump is not
 * starved; libuv keeps watching the same socket and may still accept some itself (each
 * connection is accepted exactly once by whoever calls accept4 first).
 *
 * The thread works on its own dup() of the listening fd (made on the JavaScript thread when the
 * command is queued), so JavaScript may close its fd at any time; CMD_ACCEPT_REMOVE closes the dup. An fd posted after JavaScript stopped the listener is
 * closed there.
 */
#include "pump.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 256
/* out of descriptors or memory: stop watching the socket this long (nginx waits 500 ms). The
   socket stays readable while connections wait, so watching it meanwhile would spin the thread;
   libuv, which watches it too, meanwhile accepts and closes them with its spare descriptor. */
#define ACCEPT_PAUSE_MS 250

typedef struct acceptor {
  uint32_t lid;
  int fd; /* our dup of the listening socket */
  tag_t tag;
  uint64_t paused_until; /* 0: watched */
  struct acceptor *next;
} acceptor_t;

static acceptor_t *acceptors;

/* The peer's address goes with the fd: accept4() gives it even when the peer has reset the
   connection since (getpeername() would then fail with ENOTCONN, and the access log would have
   no client address for exactly the connections worth looking into). */
static void post_fd(uint32_t lid, int fd, const struct sockaddr_storage *from) {
  event_t *ev = calloc(1, sizeof *ev);
  if (ev == NULL) {
    close(fd);
    return;
  }
  ev->type = EV_ACCEPTED;
  ev->lid = lid;
  ev->id = (uint32_t)fd;
  if (from->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)from;
    inet_ntop(AF_INET, &a->sin_addr, ev->ip, sizeof ev->ip);
    ev->port = ntohs(a->sin_port);
  } else if (from->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
    inet_ntop(AF_INET6, &a->sin6_addr, ev->ip, sizeof ev->ip);
    ev->port = ntohs(a->sin6_port);
  }
  pump_post(ev);
}

void accept_command(cmd_t *m) {
  if (m->kind == CMD_ACCEPT_ADD) {
    acceptor_t *a = calloc(1, sizeof *a);
    if (a == NULL) {
      close(m->fa);
      return;
    }
    a->lid = m->lid;
    a->fd = m->fa; /* already our dup (pump.c) */
    a->tag.kind = TAG_ACCEPT;
    a->tag.obj = a;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &a->tag};
    if (epoll_ctl(pump_ep, EPOLL_CTL_ADD, a->fd, &ev) < 0) {
      close(a->fd);
      free(a);
      return;
    }
    a->next = acceptors;
    acceptors = a;
    return;
  }
  /* CMD_ACCEPT_REMOVE: close our copy, then tell JavaScript, which closes the listening socket
     only after this (while our dup is open the socket still listens and would take connections) */
  for (acceptor_t **p = &acceptors; *p != NULL; p = &(*p)->next) {
    acceptor_t *a = *p;
    if (a->lid != m->lid) continue;
    *p = a->next;
    epoll_ctl(pump_ep, EPOLL_CTL_DEL, a->fd, NULL);
    close(a->fd);
    a->tag.obj = NULL;
    pump_defer_free(a);
    break;
  }
  event_t *ev = calloc(1, sizeof *ev);
  if (ev == NULL) return;
  ev->type = EV_ACCEPT_CLOSED;
  ev->lid = m->lid;
  pump_post(ev);
}

void accept_event(tag_t *t) {
  acceptor_t *a = t->obj;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    from.ss_family = AF_UNSPEC;
    int fd = accept4(a->fd, (struct sockaddr *)&from, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      post_fd(a->lid, fd, &from);
      continue;
    }
    int err = errno;
    if (err == EINTR || err == ECONNABORTED) continue;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      struct epoll_event ev = {.events = 0, .data.ptr = &a->tag};
      epoll_ctl(pump_ep, EPOLL_CTL_MOD, a->fd, &ev);
      a->paused_until = pump_now_ms() + ACCEPT_PAUSE_MS;
      /* told to JavaScript (a warning and a count): nginx logs its accept4() failures too */
      event_t *e = calloc(1, sizeof *e);
      if (e != NULL) {
        e->type = EV_ACCEPT_PAUSED;
        e->lid = a->lid;
        e->err = err;
        pump_post(e);
      }
    }
    return; /* EAGAIN: drained (or libuv took it) */
  }
}

void accept_sweep(uint64_t now) {
  for (acceptor_t *a = acceptors; a != NULL; a = a->next) {
    if (a->paused_until == 0 || now < a->paused_until) continue;
    a->paused_until = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &a->tag};
    epoll_ctl(pump_ep, EPOLL_CTL_MOD, a->fd, &ev);
  }
}
