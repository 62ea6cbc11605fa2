/*
 * One stream of a native session (the rules of src/tunnel/stream.ts). Received bytes go one of
 * three ways (rx_mode): kept (PENDING, until JavaScript chooses), to JavaScript (JS, as events),
 * or straight to the local socket (FD, after C_ST_ATTACH: the thread reads and writes it).
 * Credit goes back as bytes are *consumed*: written to the socket, or read by JavaScript; a
 * stream's window doubles (up to max_window) when its reader drains it within one PING
 * interval. A stream that stalls holds at most its window; nobody else waits for it.
 *
 * DATA payloads bound for a socket are written in place from the session's receive buffer, and
 * consecutive payloads for one stream go out in one writev(2) (the pending batch is flushed before
 * that buffer changes). Only bytes the socket does not take are copied (rxq).
 *
 * Ends: a clean end (both FINs, everything written) or an abortive one (RST either way, a socket
 * error, idle timeout, the session ending). An attached stream reports once (EV_ST_DONE, then its
 * socket copy is closed); the record is freed once JavaScript has released it too.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel.h"

#define WV_MAX 64

static struct {
  stream_t *st;
  struct iovec iov[WV_MAX];
  int n;
  size_t bytes;
} WV;

/* ---- the table ---- */

static void grow(session_t *s) {
  uint32_t nb = s->nbuckets ? s->nbuckets * 4 : 16;
  stream_t **b = calloc(nb, sizeof *b);
  if (b == NULL) return;
  for (uint32_t i = 0; i < s->nbuckets; i++) {
    stream_t *st = s->buckets[i];
    while (st != NULL) {
      stream_t *next = st->hnext;
      st->hnext = b[st->id % nb];
      b[st->id % nb] = st;
      st = next;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = nb;
}

stream_t *stream_find(session_t *s, uint32_t id) {
  if (s->nbuckets == 0) return NULL;
  for (stream_t *st = s->buckets[id % s->nbuckets]; st != NULL; st = st->hnext)
    if (st->id == id) return st;
  return NULL;
}

stream_t *stream_new(session_t *s, uint32_t id, int ours) {
  if (stream_find(s, id) != NULL) return NULL;
  if (s->nstreams >= s->nbuckets * 2) grow(s);
  if (s->nbuckets == 0) return NULL;
  stream_t *st = calloc(1, sizeof *st);
  if (st == NULL) return NULL;
  st->id = id;
  st->s = s;
  st->ours = (uint8_t)ours;
  st->fd = -1;
  st->tag.kind = TAG_STREAM;
  st->tag.obj = st;
  st->send_window = s->peer_initial_window;
  st->recv_window = s->initial_window;
  st->window_started_ms = now_ms();
  st->last_active_ms = st->window_started_ms;
  st->fd_writable = 1;
  st->hnext = s->buckets[id % s->nbuckets];
  s->buckets[id % s->nbuckets] = st;
  s->nstreams++;
  return st;
}

static void close_fd(stream_t *st) {
  if (st->fd < 0) return;
  epoll_ctl(tun_ep, EPOLL_CTL_DEL, st->fd, NULL);
  close(st->fd);
  st->fd = -1;
}

void stream_free(stream_t *st) {
  session_t *s = st->s;
  if (s->nbuckets > 0) {
    stream_t **pp = &s->buckets[st->id % s->nbuckets];
    while (*pp != NULL && *pp != st) pp = &(*pp)->hnext;
    if (*pp == st) {
      *pp = st->hnext;
      s->nstreams--;
    }
  }
  lane_forget(st);
  if (WV.st == st) {
    WV.n = 0;
    WV.bytes = 0;
    WV.st = NULL;
  }
  if (st->counted) s->peer_streams--;
  st->counted = 0;
  queue_clear(&st->txq);
  queue_clear(&st->rxq);
  codec_tx_release(&st->ctx);
  codec_rx_release(&st->drx);
  close_fd(st);
  st->tag.obj = NULL;
  defer_free(st); /* callers up the stack of this batch may still hold it */
}

/* ---- ends ---- */

static void post_done(stream_t *st, int reason, int err) {
  if (st->done) return;
  st->done = 1;
  close_fd(st);
  post_event(EV_ST_DONE, st->s->id, st->id, (uint32_t)reason, (uint32_t)err, (double)st->fd_read,
             (double)st->fd_written, NULL, 0, NULL);
}

static int wv_holds(stream_t *st) { return WV.st == st && WV.n > 0; }

void stream_maybe_finish(stream_t *st) {
  if (st->tag.obj == NULL) return;
  if (!st->reset && st->rx_mode == RX_FD && !st->done && st->fin_sent && st->fin_received && st->rxq.bytes == 0 &&
      st->fd_shut && !wv_holds(st))
    post_done(st, D_DONE, 0);
  int finished = st->reset || (st->fin_sent && st->fin_received && st->rxq.bytes == 0);
  if (st->released && finished && (st->rx_mode != RX_FD || st->done)) stream_free(st);
}

/*
 * Ends the stream abortively: an RST to the peer (rst_code >= 0), its queues dropped, the credit
 * of bytes received and never consumed returned; an attached stream reports `done_reason`; a
 * stream JavaScript reads hears `js_code` (>= 0).
 */
static void stream_abort(stream_t *st, int rst_code, int done_reason, int js_code, int err) {
  if (st->reset) return;
  session_t *s = st->s;
  st->reset = 1;
  if (rst_code >= 0 && s->state == S_OPEN) session_u32(s, F_RST, st->id, (uint32_t)rst_code);
  if (WV.st == st) {
    WV.n = 0;
    WV.bytes = 0;
    WV.st = NULL;
  }
  if (st->recv_buffered > 0) session_consumed(s, st->recv_buffered);
  st->recv_buffered = 0;
  queue_clear(&st->rxq);
  queue_clear(&st->txq);
  lane_forget(st);
  if (st->rx_mode == RX_FD) post_done(st, done_reason, err);
  else if (js_code >= 0 && !st->released)
    post_event(EV_ST_RESET, s->id, st->id, (uint32_t)js_code, 0, 0, 0, NULL, 0, NULL);
  stream_maybe_finish(st);
}

void stream_reset_local(stream_t *st, uint32_t code) { stream_abort(st, (int)code, D_CANCEL, -1, 0); }

void stream_refused(stream_t *st) { stream_abort(st, -1, D_CANCEL, -1, 0); }

void stream_reset_by_peer(stream_t *st, uint32_t code) { stream_abort(st, -1, D_RESET, (int)code, 0); }

void stream_session_gone(stream_t *st) { stream_abort(st, -1, D_SESSION, -1, 0); }

void stream_socket_failed(stream_t *st, int err) { stream_abort(st, E_CANCEL, D_SOCKET_ERROR, -1, err); }

void stream_sweep(stream_t *st, uint64_t now) {
  if (st->rx_mode == RX_FD && !st->done && !st->reset && st->idle_ms > 0 && now - st->last_active_ms >= st->idle_ms)
    stream_abort(st, E_CANCEL, D_IDLE, -1, 0);
}

/* ---- credit ---- */

void stream_consumed(stream_t *st, int64_t n) {
  if (n <= 0 || st->reset) return;
  if (n > st->recv_buffered) n = st->recv_buffered;
  session_t *s = st->s;
  st->recv_buffered -= n;
  st->unacked += n;
  session_consumed(s, n);
  if (st->unacked >= st->recv_window / 2) {
    uint64_t now = now_ms();
    int64_t grow_by = 0;
    if (now - st->window_started_ms < s->ping_ms && st->recv_window < (int64_t)s->max_window) {
      grow_by = (int64_t)s->max_window - st->recv_window;
      if (grow_by > st->recv_window) grow_by = st->recv_window; /* a fast reader: double it */
      st->recv_window += grow_by;
    }
    st->window_started_ms = now;
    session_u32(s, F_WINDOW_UPDATE, st->id, (uint32_t)(st->unacked + grow_by));
    st->unacked = 0;
  }
}

/* ---- to the socket ---- */

/* After `w` of `total` bytes in iov went out: the rest is kept, the written part credited. */
static void wrote(stream_t *st, const struct iovec *iov, int n, ssize_t w, size_t total) {
  if ((size_t)w < total) {
    st->fd_writable = 0;
    size_t skip = (size_t)w;
    for (int i = 0; i < n; i++) {
      size_t len = iov[i].iov_len;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      if (queue_push(&st->rxq, (const uint8_t *)iov[i].iov_base + skip, len - skip) < 0) {
        stream_socket_failed(st, ENOMEM);
        return;
      }
      skip = 0;
    }
  }
  if (w > 0) {
    st->fd_written += (uint64_t)w;
    st->last_active_ms = now_ms();
    stream_consumed(st, w);
  }
}

static ssize_t do_writev(stream_t *st, const struct iovec *iov, int n) {
  for (;;) {
    ssize_t w = writev(st->fd, iov, n);
    if (w >= 0) return w;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return -1;
  }
}

void stream_flush_writev(void) {
  if (WV.n == 0) return;
  stream_t *st = WV.st;
  struct iovec iov[WV_MAX];
  int n = WV.n;
  size_t total = WV.bytes;
  memcpy(iov, WV.iov, sizeof iov[0] * (size_t)n);
  WV.n = 0;
  WV.bytes = 0;
  WV.st = NULL;
  ssize_t w = do_writev(st, iov, n);
  if (w < 0) {
    stream_socket_failed(st, errno);
    return;
  }
  wrote(st, iov, n, w, total);
  if (!st->reset) stream_flush_rx(st);
}

static void wv_add(stream_t *st, const uint8_t *p, size_t n) {
  if (WV.n > 0 && (WV.st != st || WV.n == WV_MAX)) stream_flush_writev();
  WV.st = st;
  WV.iov[WV.n].iov_base = (void *)p;
  WV.iov[WV.n].iov_len = n;
  WV.n++;
  WV.bytes += n;
}

void stream_flush_rx(stream_t *st) {
  if (st->reset || st->tag.obj == NULL) return;
  session_t *s = st->s;
  if (st->rx_mode == RX_JS) {
    chunk_t *c = st->rxq.head;
    while (c != NULL) {
      chunk_t *next = c->next;
      int last = next == NULL && st->fin_received;
      post_event(EV_ST_DATA, s->id, st->id, (uint32_t)last, 0, 0, 0, c->data + c->off, c->len - c->off, NULL);
      if (last) st->rx_fin_delivered = 1;
      free(c);
      c = next;
    }
    st->rxq.head = st->rxq.tail = NULL;
    st->rxq.bytes = 0; /* still counted in recv_buffered until JavaScript reads them */
    if (st->fin_received && !st->rx_fin_delivered) {
      st->rx_fin_delivered = 1;
      post_event(EV_ST_DATA, s->id, st->id, 1, 0, 0, 0, NULL, 0, NULL);
    }
    stream_maybe_finish(st);
    return;
  }
  if (st->rx_mode != RX_FD || wv_holds(st)) return;
  while (st->rxq.head != NULL && st->fd_writable) {
    struct iovec iov[WV_MAX];
    int n = 0;
    size_t total = 0;
    for (chunk_t *c = st->rxq.head; c != NULL && n < WV_MAX; c = c->next) {
      iov[n].iov_base = c->data + c->off;
      iov[n].iov_len = c->len - c->off;
      total += iov[n].iov_len;
      n++;
    }
    ssize_t w = do_writev(st, iov, n);
    if (w < 0) {
      stream_socket_failed(st, errno);
      return;
    }
    if (w == 0) {
      st->fd_writable = 0;
      break;
    }
    /* drop what went out from the queue's front */
    size_t left = (size_t)w;
    while (left > 0 && st->rxq.head != NULL) {
      chunk_t *c = st->rxq.head;
      size_t avail = c->len - c->off;
      if (left < avail) {
        c->off += (uint32_t)left;
        left = 0;
        break;
      }
      left -= avail;
      st->rxq.head = c->next;
      if (st->rxq.head == NULL) st->rxq.tail = NULL;
      free(c);
    }
    st->rxq.bytes -= (uint64_t)w;
    st->fd_written += (uint64_t)w;
    st->last_active_ms = now_ms();
    if ((size_t)w < total) st->fd_writable = 0;
    stream_consumed(st, w);
    if (st->reset) return;
  }
  if (st->rxq.head == NULL && st->fin_received && !st->fd_shut) {
    st->fd_shut = 1; /* the peer's FIN, after every byte: half-close forwarded */
    if (shutdown(st->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
      stream_socket_failed(st, errno);
      return;
    }
  }
  stream_maybe_finish(st);
}

/* ---- from the peer ---- */

void stream_data(stream_t *st, const uint8_t *p, size_t n, int fin, int compressed) {
  session_t *s = st->s;
  const uint8_t *data = p;
  size_t len = n;
  if (compressed) {
    if (!(s->codecs & 1)) {
      session_fatal(s, E_PROTOCOL_ERROR, "COMPRESSED DATA on a session without a codec");
      return;
    }
    long r = codec_decompress(&st->drx, p, n, scratch, s->max_payload);
    if (r < 0) {
      session_fatal(s, E_PROTOCOL_ERROR,
                    r == -2 ? "a compressed DATA payload expands beyond the max payload" : "zstd: a corrupt payload");
      return;
    }
    data = scratch;
    len = (size_t)r;
  } else if (n > 0 && st->drx != NULL) {
    codec_rx_reset(st->drx); /* the sender ended its zstd frame */
  }
  s->conn_recv_outstanding += (int64_t)len;
  if (s->conn_recv_outstanding > (int64_t)s->conn_window) {
    session_fatal(s, E_FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    return;
  }
  if (st->reset) {
    session_consumed(s, (int64_t)len); /* in flight when we reset it: dropped, credit returned */
    return;
  }
  if (st->fin_received) {
    char why[64];
    snprintf(why, sizeof why, "DATA after FIN on stream %u", st->id);
    session_fatal(s, E_PROTOCOL_ERROR, why);
    return;
  }
  st->recv_buffered += (int64_t)len;
  if (st->recv_buffered > st->recv_window) {
    char why[64];
    snprintf(why, sizeof why, "stream %u sent beyond its window", st->id);
    session_fatal(s, E_FLOW_CONTROL_ERROR, why);
    return;
  }
  if (fin) st->fin_received = 1;
  if (st->rx_mode == RX_FD) {
    if (len > 0) {
      st->last_active_ms = now_ms();
      if (st->rxq.head == NULL && st->fd_writable && data != scratch) {
        wv_add(st, data, len);
      } else if (st->rxq.head == NULL && st->fd_writable) {
        struct iovec one = {.iov_base = (void *)data, .iov_len = len};
        if (wv_holds(st)) stream_flush_writev();
        if (st->reset) return;
        ssize_t w = do_writev(st, &one, 1);
        if (w < 0) {
          stream_socket_failed(st, errno);
          return;
        }
        wrote(st, &one, 1, w, len);
      } else if (queue_push(&st->rxq, data, len) < 0) {
        stream_socket_failed(st, ENOMEM);
        return;
      }
    }
    if (fin && !wv_holds(st)) stream_flush_rx(st);
    return;
  }
  if (st->rx_mode == RX_JS) {
    if (fin) st->rx_fin_delivered = 1;
    post_event(EV_ST_DATA, s->id, st->id, (uint32_t)fin, 0, 0, 0, data, len, NULL);
    stream_maybe_finish(st);
    return;
  }
  if (queue_push(&st->rxq, data, len) < 0) session_fatal(s, E_INTERNAL_ERROR, "out of memory");
}

/* ---- modes ---- */

void stream_to_js(stream_t *st) {
  if (st->rx_mode != RX_PENDING) return;
  st->rx_mode = RX_JS;
  stream_flush_rx(st);
}

void stream_attach(stream_t *st, int fd, uint32_t idle_ms) {
  session_t *s = st->s;
  if (st->reset || st->rx_mode != RX_PENDING || fd < 0) {
    if (fd >= 0) close(fd);
    post_event(EV_ST_DONE, s->id, st->id, st->reset ? D_RESET : D_CANCEL, 0, 0, 0, NULL, 0, NULL);
    st->done = 1;
    return;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int one = 1; /* frames arrive whole: Nagle would only hold the tail of each back (as pipe.ts) */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  st->fd = fd;
  st->rx_mode = RX_FD;
  st->idle_ms = idle_ms;
  st->last_active_ms = now_ms();
  st->fd_readable = 1; /* bytes may already wait: the first edge came before we registered */
  st->fd_writable = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &st->tag};
  if (epoll_ctl(tun_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    stream_socket_failed(st, errno);
    return;
  }
  stream_flush_rx(st);
  if (!st->reset) lane_wake(st);
  session_mark(s);
}

void stream_fd_event(stream_t *st, uint32_t events) {
  if (st->reset) return;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) st->fd_rdhup = 1;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    st->fd_readable = 1;
    if (!st->fd_eof) lane_wake(st);
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
    st->fd_writable = 1;
    stream_flush_rx(st);
  }
  session_mark(st->s);
}
