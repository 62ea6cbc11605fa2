/*
 * One tunnel connection on the engine's thread (src/tunnel/SPEC.md; the same rules as
 * src/tunnel/session.ts): TLS or plain transport, the frame decoder (a frame is checked — magic,
 * type, length against its limit, CRC — in place in the receive buffer, before anything is
 * allocated), dispatch, the control lane, liveness, and the ends (GOAWAY, close, fatal errors).
 *
 * Buffers: `rbuf` holds decrypted bytes not yet decoded (a frame never exceeds 64 KiB + 16, so a
 * partial frame always fits; it moves to the front before the next read); `ctl` queues control
 * frames; each flush builds one batch in `pbuf` (control frames first, then DATA round-robin),
 * which TLS turns into records in `wire` (our BIO appends, so a batch leaves in one write(2)).
 * A new batch is built only once `wire` has gone out: that is the backpressure toward the local
 * sockets (a stream's socket is read only when its frame can be sent).
 */
#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../crc/crc32.h"
#include "tunnel.h"

#define RBUF_CAP (96 * 1024)
#define BATCH (64 * 1024)
#define MAX_CTL_QUEUE (4 * 1024 * 1024)
#define CLOSE_LINGER_MS 1000

int frame_index(int type) {
  switch (type) {
    case F_HELLO: return 1;
    case F_HELLO_ACK: return 2;
    case F_REQUEST: return 3;
    case F_RESPONSE: return 4;
    case F_OPEN: return 5;
    case F_OPEN_ACK: return 6;
    case F_DATA: return 7;
    case F_WINDOW_UPDATE: return 8;
    case F_RST: return 9;
    case F_DATAGRAM: return 10;
    case F_PING: return 11;
    case F_GOAWAY: return 12;
    default: return 0;
  }
}

static int core_type(int t) { return frame_index(t) != 0; }

/* counters are written by this thread only and read by JavaScript: plain atomic stores */
static inline void bump(uint64_t *c, uint64_t n) { __atomic_store_n(c, *c + n, __ATOMIC_RELAXED); }

/* ---- writing frames ---- */

static void put_frame(uint8_t *out, int type, int flags, uint32_t stream, const uint8_t *p, size_t n) {
  out[0] = MAGIC >> 8;
  out[1] = MAGIC & 0xff;
  wr32(out + 2, (uint32_t)n);
  out[6] = (uint8_t)type;
  out[7] = (uint8_t)flags;
  wr32(out + 8, stream);
  if (n > 0 && p != out + HEADER_SIZE) memcpy(out + HEADER_SIZE, p, n);
  wr32(out + HEADER_SIZE + n, zl_crc32(out, HEADER_SIZE + n));
}

void session_control(session_t *s, int type, int flags, uint32_t stream, const uint8_t *p, size_t n) {
  if (s->state != S_OPEN && !(s->state == S_CLOSING && type == F_GOAWAY)) return;
  if (s->ctl.len > MAX_CTL_QUEUE) {
    /* a peer that never reads while making us answer (PINGs, window updates) */
    if (type != F_GOAWAY) session_fatal(s, E_ENHANCE_YOUR_CALM, "control frames not read by the peer");
    return;
  }
  if (buf_reserve(&s->ctl, FRAME_OVERHEAD + n) < 0) return;
  put_frame(s->ctl.p + s->ctl.len, type, flags, stream, p, n);
  s->ctl.len += FRAME_OVERHEAD + n;
  bump(&s->frames_out[frame_index(type)], 1);
  session_mark(s);
}

void session_u32(session_t *s, int type, uint32_t stream, uint32_t v) {
  uint8_t p[4];
  wr32(p, v);
  session_control(s, type, 0, stream, p, 4);
}

static void goaway_frame(session_t *s, uint32_t code, uint32_t retry_ms, const char *reason) {
  uint8_t p[12 + 200];
  size_t rl = reason == NULL ? 0 : strnlen(reason, 200);
  wr32(p, s->last_peer_stream);
  wr32(p + 4, code);
  wr32(p + 8, retry_ms);
  if (rl > 0) memcpy(p + 12, reason, rl);
  session_control(s, F_GOAWAY, 0, 0, p, 12 + rl);
}

/* ---- the transport ---- */

/* Writes what `wire` holds. 0 all out, 1 some left (wait for EPOLLOUT), -1 error. */
static int write_wire(session_t *s) {
  while (s->woff < s->wire.len) {
    if (!s->writable) return 1;
    ssize_t n = write(s->fd, s->wire.p + s->woff, s->wire.len - s->woff);
    if (n > 0) {
      s->woff += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      s->writable = 0;
      return 1;
    }
    return -1;
  }
  s->wire.len = s->woff = 0;
  return 0;
}

/* Reads plaintext into p. >0 bytes, 0 would block, -1 EOF or error (`*eof` says which). */
static long transport_read(session_t *s, uint8_t *p, size_t cap, int *eof) {
  *eof = 0;
  if (s->ssl != NULL) {
    size_t n = 0;
    /* the thread's error queue is empty here: every path that fills it clears it (below), so
       no ERR_clear_error() per call (it and its thread-local lookups were ~1 % of a round trip) */
    if (SSL_read_ex(s->ssl, p, cap, &n) == 1) return (long)n;
    int e = SSL_get_error(s->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) *eof = 1;
    ERR_clear_error();
    return -1;
  }
  if (s->drained) return 0;
  for (;;) {
    ssize_t n = read(s->fd, p, cap);
    if (n > 0) {
      /* Linux signals every new arrival: no need to see EAGAIN (but after the peer's FIN, none come) */
      if ((size_t)n < cap && !s->rdhup) s->drained = 1;
      return n;
    }
    if (n == 0) {
      *eof = 1;
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      s->drained = 1;
      return 0;
    }
    return -1;
  }
}

/* ---- ends ---- */

static void post_closed(session_t *s) {
  if (s->closed_posted) return;
  s->closed_posted = 1;
  post_event(EV_CLOSED, s->id, 0, 0, 0, 0, 0, NULL, 0, NULL);
}

static void free_streams(session_t *s) {
  for (uint32_t b = 0; b < s->nbuckets; b++) {
    stream_t *st = s->buckets[b];
    while (st != NULL) {
      stream_t *next = st->hnext;
      stream_free(st);
      st = next;
    }
  }
}

/* Everything released and closed: out of the tables (memory after this batch). */
static void maybe_free(session_t *s) {
  if (s->state != S_CLOSED || !s->released || s->tag.obj == NULL) return;
  free_streams(s);
  buf_free(&s->rbuf);
  buf_free(&s->pre);
  buf_free(&s->ctl);
  buf_free(&s->pbuf);
  buf_free(&s->wire);
  free(s->buckets);
  s->buckets = NULL;
  s->nbuckets = 0;
  if (s->ssl != NULL) SSL_free(s->ssl);
  s->ssl = NULL;
  session_unlink(s);
}

/* Ends every stream (their sockets close; attached ones report) and the connection, now. */
static void close_now(session_t *s) {
  if (s->state == S_CLOSED) return;
  s->state = S_CLOSED;
  if (s->fd >= 0) {
    epoll_ctl(tun_ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
  }
  for (uint32_t b = 0; b < s->nbuckets; b++)
    for (stream_t *st = s->buckets[b]; st != NULL; st = st->hnext) stream_session_gone(st);
  s->ready_head = s->ready_tail = NULL;
  post_closed(s);
  maybe_free(s);
}

/* Graceful: queued control frames go out (a GOAWAY among them), then TLS close_notify and FIN;
   the connection closes when the peer's FIN comes, or after a linger. Streams end now. */
static void close_soon(session_t *s) {
  if (s->state == S_CLOSED || s->state == S_CLOSING) return;
  if (s->state != S_OPEN) {
    close_now(s);
    return;
  }
  s->state = S_CLOSING;
  for (uint32_t b = 0; b < s->nbuckets; b++)
    for (stream_t *st = s->buckets[b]; st != NULL; st = st->hnext) stream_session_gone(st);
  s->ready_head = s->ready_tail = NULL;
  s->close_at_ms = now_ms() + CLOSE_LINGER_MS;
  timers_changed(s->close_at_ms);
  session_mark(s);
}

void session_fatal(session_t *s, uint32_t code, const char *reason) {
  if (s->state != S_OPEN || s->fatal_sent) return;
  s->fatal_sent = 1;
  goaway_frame(s, code, 0, reason);
  post_event(EV_FATAL, s->id, 0, code, 0, 0, 0, NULL, 0, reason);
  close_soon(s);
}

/* ---- liveness ---- */

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t dead_limit(session_t *s) {
  uint64_t limit = (uint64_t)s->ping_ms * s->misses;
  return limit < READ_DEADLINE_MS ? limit : READ_DEADLINE_MS;
}

static void send_ping(session_t *s) {
  uint8_t p[8];
  uint64_t t = now_ns();
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)t;
    t >>= 8;
  }
  session_control(s, F_PING, 0, 0, p, 8);
}

static void live_start(session_t *s) {
  uint64_t now = now_ms();
  s->last_frame_ms = now;
  s->last_tick_mono = now;
  s->last_tick_wall = wall_ms();
  s->next_tick_ms = now + s->ping_ms;
  timers_changed(s->next_tick_ms);
}

void session_timers(session_t *s, uint64_t now, uint64_t *next) {
  if (s->state == S_CLOSING) {
    if (now >= s->close_at_ms) close_now(s);
    else if (s->close_at_ms < *next) *next = s->close_at_ms;
    return;
  }
  if (s->state != S_OPEN || s->ping_ms == 0) return;
  uint64_t limit = dead_limit(s);
  if (now >= s->next_tick_ms) {
    uint64_t wall = wall_ms();
    int64_t drift = (int64_t)(wall - s->last_tick_wall) - (int64_t)(now - s->last_tick_mono);
    s->last_tick_wall = wall;
    s->last_tick_mono = now;
    if (drift > (int64_t)s->ping_ms || drift < -(int64_t)s->ping_ms) s->last_frame_ms = now; /* sleep/resume */
    s->next_tick_ms = now + s->ping_ms;
    if (now - s->last_frame_ms < limit) send_ping(s);
  }
  if (now - s->last_frame_ms >= limit) {
    char why[96];
    snprintf(why, sizeof why, "no frame for %llu ms (%u PING intervals)",
             (unsigned long long)(now - s->last_frame_ms), s->misses);
    session_fatal(s, E_IDLE_TIMEOUT, why);
    return;
  }
  uint64_t dead_at = s->last_frame_ms + limit;
  if (s->next_tick_ms < *next) *next = s->next_tick_ms;
  if (dead_at < *next) *next = dead_at;
}

/* ---- reading ---- */

static void dispatch(session_t *s, int type, int flags, uint32_t id, const uint8_t *p, size_t n) {
  switch (type) {
    case F_DATA: {
      stream_t *st = stream_find(s, id);
      if (st != NULL) {
        stream_data(st, p, n, (flags & FLAG_FIN) != 0, (flags & FLAG_COMPRESSED) != 0);
        return;
      }
      /* a stream already gone: its bytes are dropped and their credit returned */
      s->conn_recv_outstanding += (int64_t)n;
      if (s->conn_recv_outstanding > (int64_t)s->conn_window) {
        session_fatal(s, E_FLOW_CONTROL_ERROR, "DATA beyond the connection window");
        return;
      }
      session_consumed(s, (int64_t)n);
      return;
    }
    case F_WINDOW_UPDATE: {
      uint32_t delta = rd32(p); /* frame_check took only 4-byte payloads of 1 … 2^31−1 */
      if (id == 0) {
        s->conn_send_window += delta;
        if (s->conn_send_window > (int64_t)MAX_WINDOW_DELTA) {
          session_fatal(s, E_FLOW_CONTROL_ERROR, "connection window overflow");
          return;
        }
      } else {
        stream_t *st = stream_find(s, id);
        if (st == NULL) return;
        st->send_window += delta;
        if (st->send_window > (int64_t)MAX_WINDOW_DELTA) {
          char why[64];
          snprintf(why, sizeof why, "stream %u window overflow", id);
          session_fatal(s, E_FLOW_CONTROL_ERROR, why);
          return;
        }
        if (st->parked) lane_wake(st);
      }
      session_mark(s);
      return;
    }
    case F_OPEN: {
      if ((id & 1) == (s->next_id & 1) || id <= s->last_peer_stream) {
        char why[80];
        snprintf(why, sizeof why, "OPEN with stream id %u: wrong parity or not increasing", id);
        session_fatal(s, E_PROTOCOL_ERROR, why);
        return;
      }
      s->last_peer_stream = id;
      if (s->gone_away || s->closing_down || n < 1 || s->peer_streams >= s->max_streams) {
        session_u32(s, F_RST, id, E_REFUSED_STREAM);
        post_event(EV_REFUSED, s->id, id, 0, 0, 0, 0, NULL, 0, NULL);
        return;
      }
      stream_t *st = stream_new(s, id, 0);
      if (st == NULL) {
        session_u32(s, F_RST, id, E_REFUSED_STREAM);
        return;
      }
      st->counted = 1;
      s->peer_streams++;
      post_event(EV_OPEN, s->id, id, 0, 0, 0, 0, p, n, NULL);
      return;
    }
    case F_OPEN_ACK: {
      stream_t *st = stream_find(s, id);
      if (st == NULL || !st->ours) return;
      uint32_t status = n > 0 ? p[0] : 1;
      /* a refusal ends the stream without an RST (JavaScript learns it from the event) */
      post_event(EV_OPEN_ACK, s->id, id, status, 0, 0, 0, NULL, 0, NULL);
      if (status != 0) stream_refused(st);
      return;
    }
    case F_RST: {
      stream_t *st = stream_find(s, id);
      if (st != NULL) stream_reset_by_peer(st, n >= 4 ? rd32(p) : E_CANCEL);
      return;
    }
    case F_PING: {
      if (flags & FLAG_ACK) {
        if (n == 8) {
          uint64_t t = 0;
          for (int i = 0; i < 8; i++) t = t << 8 | p[i];
          uint64_t now = now_ns();
          /* an echo of a PING of ours (not from the future, not older than a live session's
             silence can be): anything else is a peer's garbage and would skew the relay choice */
          if (now >= t && now - t <= (uint64_t)READ_DEADLINE_MS * 1000000u)
            post_event(EV_RTT, s->id, 0, 0, 0, (double)(now - t) / 1e6, 0, NULL, 0, NULL);
        }
      } else {
        session_control(s, F_PING, FLAG_ACK, 0, p, n);
      }
      return;
    }
    case F_GOAWAY: {
      if (s->gone_away) return;
      s->gone_away = 1;
      post_event(EV_GOAWAY, s->id, 0, n >= 8 ? rd32(p + 4) : E_NO_ERROR, n >= 12 ? rd32(p + 8) : 0, 0, 0, NULL, 0,
                 NULL);
      return;
    }
    default:
      /* HELLO, HELLO_ACK, REQUEST, RESPONSE, DATAGRAM: for the layers above */
      post_event(EV_FRAME, s->id, id, (uint32_t)type, (uint32_t)flags, 0, 0, p, n, NULL);
  }
}

/*
 * Checks the frame at f (avail bytes there): magic, type, length against its limit (before the
 * payload is even there), then CRC, then a WINDOW_UPDATE's delta. Returns the frame's size,
 * 0 when more bytes are needed, or -1 with the GOAWAY code and reason. The same checks, in the same
 * order, as the JavaScript decoder (src/tunnel/frame.ts): test/fuzz/tunnel-decoder.test.ts feeds
 * both the same inputs (checkFrames in loop.c) and compares their verdicts.
 */
long frame_check(const uint8_t *f, size_t avail, uint32_t max_payload, uint32_t *code, char *why, size_t why_len) {
  if (avail < HEADER_SIZE) return 0;
  if (((uint32_t)f[0] << 8 | f[1]) != MAGIC) {
    *code = E_PROTOCOL_ERROR;
    snprintf(why, why_len, "bad magic (not an MS frame)");
    return -1;
  }
  uint32_t len = rd32(f + 2);
  int type = f[6];
  if (type < FIRST_EXTENSION_TYPE && !core_type(type)) {
    *code = E_PROTOCOL_ERROR;
    snprintf(why, why_len, "unknown frame type 0x%x", type);
    return -1;
  }
  uint32_t limit = type == F_DATA || type == F_DATAGRAM ? max_payload : MAX_CONTROL_PAYLOAD;
  if (len > limit) {
    *code = E_FRAME_SIZE_ERROR;
    snprintf(why, why_len, "frame of %u bytes over the limit of %u", len, limit);
    return -1;
  }
  if (avail < (size_t)len + FRAME_OVERHEAD) return 0;
  if (zl_crc32(f, HEADER_SIZE + len) != rd32(f + HEADER_SIZE + len)) {
    *code = E_CRC_ERROR;
    snprintf(why, why_len, "CRC mismatch on a frame of type 0x%x", type);
    return -1;
  }
  if (type == F_WINDOW_UPDATE) {
    uint32_t delta = len == 4 ? rd32(f + HEADER_SIZE) : 0;
    if (delta == 0 || delta > MAX_WINDOW_DELTA) {
      *code = E_FLOW_CONTROL_ERROR;
      snprintf(why, why_len, "WINDOW_UPDATE delta %u out of 1…2^31−1", delta);
      return -1;
    }
  }
  return (long)len + FRAME_OVERHEAD;
}

/* Decodes whole frames from rbuf[rpos..len), at most *budget of them. 0 ok, -1 the session failed. */
static int decode(session_t *s, uint32_t *budget) {
  while (*budget > 0) {
    const uint8_t *f = s->rbuf.p + s->rpos;
    uint32_t code = 0;
    char why[96];
    long size = frame_check(f, s->rbuf.len - s->rpos, s->max_payload, &code, why, sizeof why);
    if (size == 0) return 0;
    if (size < 0) {
      session_fatal(s, code, why);
      return -1;
    }
    s->rpos += (size_t)size;
    (*budget)--;
    s->last_frame_ms = now_ms();
    int type = f[6];
    if (type >= FIRST_EXTENSION_TYPE) continue; /* unknown extensions are ignored */
    bump(&s->frames_in[frame_index(type)], 1);
    dispatch(s, type, f[7], rd32(f + 8), f + HEADER_SIZE, (size_t)size - FRAME_OVERHEAD);
    if (s->state != S_OPEN) return -1;
  }
  return 0;
}

/* Reads and decodes until the socket has nothing more (or this batch's budget is spent, or
   JavaScript is behind with the events decoding makes: then again in a later batch). */
static void read_input(session_t *s) {
  uint32_t budget = s->frames_per_turn;
  for (;;) {
    if (events_backlogged()) {
      session_again(s);
      return;
    }
    if (decode(s, &budget) < 0) {
      stream_flush_writev();
      return;
    }
    stream_flush_writev(); /* DATA written from rbuf before it moves */
    if (budget == 0) {
      session_again(s);
      return;
    }
    if (s->rpos > 0) {
      memmove(s->rbuf.p, s->rbuf.p + s->rpos, s->rbuf.len - s->rpos);
      s->rbuf.len -= s->rpos;
      s->rpos = 0;
    }
    int eof = 0, got = 0;
    while (s->rbuf.len < s->rbuf.cap) {
      long n = transport_read(s, s->rbuf.p + s->rbuf.len, s->rbuf.cap - s->rbuf.len, &eof);
      if (n <= 0) {
        if (n < 0) {
          /* the peer closed (or the connection failed): what was read is decoded first */
          decode(s, &budget);
          stream_flush_writev();
          close_now(s);
          return;
        }
        break;
      }
      s->rbuf.len += (size_t)n;
      bump(&s->bytes_in, (uint64_t)n);
      got = 1;
      /* nothing left in OpenSSL and the socket drained: asking SSL_read again would only run its
         record state machine to say so (once per message on a round-trip path) */
      if (s->ssl != NULL && s->drained && !SSL_has_pending(s->ssl)) break;
    }
    if (!got) return;
  }
}

/* While closing: read and drop until the peer's FIN, so our last frames are not lost to a reset. */
static void drain_input(session_t *s) {
  uint8_t sink[16384];
  int eof = 0;
  for (;;) {
    long n = transport_read(s, sink, sizeof sink, &eof);
    if (n == 0) return;
    if (n < 0) {
      close_now(s);
      return;
    }
  }
}

/* ---- the thread's entry points ---- */

void session_start(session_t *s) {
  if (buf_reserve(&s->rbuf, RBUF_CAP - s->rbuf.len) < 0) {
    close_now(s);
    return;
  }
  s->rbuf.cap = RBUF_CAP; /* never realloc'd again: DATA is written from it in place */
  s->writable = 1;
  int one = 1; /* a batch goes out in one write: Nagle would only delay the next */
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &s->tag};
  if (epoll_ctl(tun_ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
    post_event(EV_TLS_DONE, s->id, 0, 0, 0, 0, 0, NULL, 0, strerror(errno));
    close_now(s);
    return;
  }
  if (s->ssl != NULL) {
    s->state = S_HANDSHAKE;
    session_event(s, 0);
    return;
  }
  s->state = S_OPEN;
  uint8_t zero[64] = {0};
  post_event(EV_TLS_DONE, s->id, 0, 1, 0, 0, 0, zero, sizeof zero, "plain");
  live_start(s);
  session_event(s, 0);
}

void session_event(session_t *s, uint32_t events) {
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->rdhup = 1;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->drained = 0;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->writable = 1;
  if (s->state == S_HANDSHAKE) {
    char err[256] = {0};
    int r = tls_handshake(s, err, sizeof err);
    if (r < 0) {
      post_event(EV_TLS_DONE, s->id, 0, 0, 0, 0, 0, NULL, 0, err[0] ? err : "TLS handshake failed");
      write_wire(s); /* an alert, when there is one */
      close_now(s);
      return;
    }
    if (write_wire(s) < 0) {
      post_event(EV_TLS_DONE, s->id, 0, 0, 0, 0, 0, NULL, 0, "the connection failed during the TLS handshake");
      close_now(s);
      return;
    }
    if (r == 0) return;
    uint8_t info[64];
    tls_session_info(s, info);
    s->state = S_OPEN;
    post_event(EV_TLS_DONE, s->id, 0, 1, 0, 0, 0, info, sizeof info, SSL_get_cipher_name(s->ssl));
    live_start(s);
  }
  if (s->state == S_OPEN) {
    read_input(s);
    session_mark(s); /* frames to answer, and TLS may have something to write */
  } else if (s->state == S_CLOSING) {
    drain_input(s);
    if (s->state == S_CLOSING) session_mark(s);
  }
}

/* One batch of frames into pbuf, through TLS into wire. 0 nothing to send, 1 a batch made. */
static int build_batch(session_t *s) {
  s->pbuf.len = 0;
  if (s->ctl.len > 0) {
    if (buf_reserve(&s->pbuf, s->ctl.len) < 0) return 0;
    memcpy(s->pbuf.p, s->ctl.p, s->ctl.len);
    s->pbuf.len = s->ctl.len;
    s->ctl.len = 0;
  }
  if (s->state == S_OPEN && s->pbuf.len < BATCH) lane_fill(s, &s->pbuf, BATCH - s->pbuf.len);
  if (s->pbuf.len == 0) return 0;
  bump(&s->bytes_out, s->pbuf.len);
  if (s->ssl != NULL) {
    size_t done = 0;
    /* our BIO takes every record (wire grows), so this never waits */
    if (SSL_write_ex(s->ssl, s->pbuf.p, s->pbuf.len, &done) != 1 || done != s->pbuf.len) {
      ERR_clear_error();
      return -1;
    }
  } else {
    if (buf_reserve(&s->wire, s->pbuf.len) < 0) return -1;
    memcpy(s->wire.p + s->wire.len, s->pbuf.p, s->pbuf.len);
    s->wire.len += s->pbuf.len;
  }
  return 1;
}

static void finish_closing(session_t *s) {
  if (s->ssl != NULL && !(SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN)) {
    SSL_shutdown(s->ssl); /* close_notify into wire */
    ERR_clear_error();
    if (write_wire(s) != 0) return;
  }
  shutdown(s->fd, SHUT_WR);
  s->fin_out = 1; /* from now on we only wait for the peer's FIN (drain_input) or the linger */
}

void session_flush(session_t *s) {
  if (s->state == S_HANDSHAKE) {
    if (write_wire(s) < 0) close_now(s);
    return;
  }
  if (s->state != S_OPEN && s->state != S_CLOSING) return;
  if (s->state == S_CLOSING && s->fin_out) return;
  for (int round = 0; round < 8; round++) {
    int w = write_wire(s);
    if (w < 0) {
      close_now(s);
      return;
    }
    if (w > 0) return; /* EPOLLOUT resumes */
    int b = build_batch(s);
    if (b < 0) {
      close_now(s);
      return;
    }
    if (b == 0) {
      if (s->state == S_CLOSING) finish_closing(s);
      return;
    }
  }
  session_mark(s); /* more to send: next batch, after other sessions had their turn */
}

void session_consumed(session_t *s, int64_t n) {
  s->conn_recv_outstanding -= n;
  s->conn_recv_unacked += n;
  if (s->conn_recv_unacked >= (int64_t)s->conn_window / 4) {
    session_u32(s, F_WINDOW_UPDATE, 0, (uint32_t)s->conn_recv_unacked);
    s->conn_recv_unacked = 0;
  }
}

/* DATA payloads we send: whole TLS records per frame (src/tunnel/frame.ts recordAligned). */
static uint32_t record_aligned(uint32_t max_payload) {
  uint32_t k = (max_payload + FRAME_OVERHEAD) / 16384;
  return k >= 1 ? k * 16384 - FRAME_OVERHEAD : max_payload;
}

void session_command(session_t *s, int kind, uint32_t id, uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                     const uint8_t *data, size_t len, int fd) {
  if (kind == C_RELEASE) {
    s->released = 1;
    if (s->state != S_CLOSED) close_now(s);
    maybe_free(s);
    return;
  }
  if (kind == C_ST_RELEASE) {
    stream_t *st = stream_find(s, id);
    if (st != NULL) {
      st->released = 1;
      if (!st->reset && !(st->tx_fin && st->fin_received)) stream_reset_local(st, E_CANCEL);
      stream_maybe_finish(st);
    }
    return;
  }
  if (s->state == S_CLOSED || (s->state == S_CLOSING && kind != C_DESTROY)) {
    if (fd >= 0) {
      /* a socket handed over as the session ended: JavaScript hears of it as an ended stream */
      close(fd);
      post_event(EV_ST_DONE, s->id, id, D_SESSION, 0, 0, 0, NULL, 0, NULL);
    }
    return;
  }
  switch (kind) {
    case C_CONTROL:
      session_control(s, (int)a, (int)b, id, data, len);
      return;
    case C_SET_PEER: {
      uint32_t mp = a < s->max_payload ? a : s->max_payload;
      if (mp < 1024) mp = 1024;
      s->send_payload = record_aligned(mp);
      s->peer_initial_window = b;
      s->conn_send_window = c;
      s->codecs = (int)d & (codec_available() ? 1 : 0);
      session_mark(s);
      return;
    }
    case C_PING:
      send_ping(s);
      return;
    case C_GOAWAY:
      s->closing_down = 1;
      goaway_frame(s, a, b, NULL);
      return;
    case C_FATAL: {
      char why[200];
      size_t n = len < sizeof why - 1 ? len : sizeof why - 1;
      memcpy(why, data, n);
      why[n] = 0;
      if (s->state == S_OPEN && !s->fatal_sent) {
        s->fatal_sent = 1;
        goaway_frame(s, a, 0, why);
        close_soon(s);
      } else {
        close_now(s);
      }
      return;
    }
    case C_CLOSE:
      close_soon(s);
      return;
    case C_DESTROY:
      close_now(s);
      return;
    default:
      break;
  }
  if (s->state != S_OPEN) {
    if (fd >= 0) close(fd);
    return;
  }
  if (kind == C_OPEN) {
    stream_t *st = stream_new(s, id, 1);
    if (st == NULL) return;
    if (id >= s->next_id) s->next_id = id + 2;
    session_control(s, F_OPEN, 0, id, data, len);
    return;
  }
  if (kind == C_DATAGRAM) {
    if (len > s->send_payload || s->wire.len - s->woff > 256 * 1024 || s->ctl.len > 256 * 1024) {
      bump(&s->dgram_dropped, 1);
      return;
    }
    /* not window-controlled: it rides the control lane, after what is queued there */
    session_control(s, F_DATAGRAM, 0, id, data, len);
    return;
  }
  stream_t *st = stream_find(s, id);
  if (st == NULL) {
    if (fd >= 0) {
      close(fd);
      post_event(EV_ST_DONE, s->id, id, D_RESET, 0, 0, 0, NULL, 0, NULL);
    }
    return;
  }
  switch (kind) {
    case C_ANSWER:
      session_control(s, F_OPEN_ACK, 0, id, (const uint8_t[]){(uint8_t)a}, 1);
      if (a != 0) stream_refused(st); /* the OPEN_ACK ends it: no RST */
      return;
    case C_ST_WRITE:
      if (st->reset || st->tx_fin) return;
      if (queue_push(&st->txq, data, len) == 0) {
        st->taken_due = 1;
        lane_wake(st);
      }
      return;
    case C_ST_END:
      if (st->reset) return;
      st->tx_fin = 1;
      lane_wake(st);
      return;
    case C_ST_CONSUMED:
      stream_consumed(st, (int64_t)a);
      return;
    case C_ST_JS:
      stream_to_js(st);
      return;
    case C_ST_ATTACH:
      stream_attach(st, fd, a);
      return;
    case C_ST_RESET:
      stream_reset_local(st, a);
      return;
    default:
      (void)c;
      return;
  }
}
