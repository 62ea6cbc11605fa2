/*
 * The DATA lane of a native session (src/tunnel/SPEC.md "Scheduling"; src/tunnel/data-lane.ts):
 * streams with something to send take turns, one frame each, within the stream's send window,
 * the connection window and the batch. An attached stream's socket is read straight into the
 * frame's payload slot (no copy); bytes JavaScript wrote (txq) go first. With zstd the payload is
 * read into the scratch buffer and compressed into the slot, or copied when that does not pay.
 *
 * A stream out of send window is parked (not on the list) until its WINDOW_UPDATE; with the
 * connection window spent, filling stops and the list waits for the connection's update.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "../crc/crc32.h"
#include "tunnel.h"

static int fin_ready(const stream_t *st) {
  return st->tx_fin && !st->fin_sent && st->txq.bytes == 0 && (st->fd < 0 || st->fd_eof);
}

static int has_bytes(const stream_t *st) {
  return st->txq.bytes > 0 || (st->fd >= 0 && st->fd_readable && !st->fd_eof);
}

void lane_wake(stream_t *st) {
  if (st->reset || st->fin_sent || st->in_ready || st->tag.obj == NULL) return;
  if (!has_bytes(st) && !fin_ready(st)) return;
  if (st->send_window <= 0 && !fin_ready(st)) {
    st->parked = 1;
    return;
  }
  session_t *s = st->s;
  st->parked = 0;
  st->in_ready = 1;
  st->rnext = NULL;
  if (s->ready_tail) s->ready_tail->rnext = st;
  else s->ready_head = st;
  s->ready_tail = st;
  session_mark(s);
}

void lane_forget(stream_t *st) {
  st->parked = 0;
  if (!st->in_ready) return;
  session_t *s = st->s;
  stream_t *prev = NULL;
  for (stream_t *x = s->ready_head; x != NULL; prev = x, x = x->rnext) {
    if (x != st) continue;
    if (prev) prev->rnext = x->rnext;
    else s->ready_head = x->rnext;
    if (s->ready_tail == x) s->ready_tail = prev;
    break;
  }
  st->in_ready = 0;
  st->rnext = NULL;
}

/* Copies up to `max` bytes of st->txq into dst. */
static size_t take_txq(stream_t *st, uint8_t *dst, size_t max) {
  size_t got = 0;
  while (got < max && st->txq.head != NULL) {
    chunk_t *c = st->txq.head;
    size_t n = c->len - c->off;
    if (n > max - got) n = max - got;
    memcpy(dst + got, c->data + c->off, n);
    got += n;
    c->off += (uint32_t)n;
    if (c->off == c->len) {
      st->txq.head = c->next;
      if (st->txq.head == NULL) st->txq.tail = NULL;
      free(c);
    }
  }
  st->txq.bytes -= got;
  st->tx_taken += got;
  return got;
}

/* Reads the stream's socket into dst. >= 0 bytes (EOF sets fd_eof), -1 the socket failed (errno). */
static long read_socket(stream_t *st, uint8_t *dst, size_t max) {
  for (;;) {
    ssize_t r = read(st->fd, dst, max);
    if (r > 0) {
      /* drained: the next arrival signals again (but after the peer's FIN none will) */
      if ((size_t)r < max && !st->fd_rdhup) st->fd_readable = 0;
      st->fd_read += (uint64_t)r;
      st->last_active_ms = now_ms();
      return r;
    }
    if (r == 0) {
      st->fd_eof = 1;
      st->tx_fin = 1;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      st->fd_readable = 0;
      return 0;
    }
    return -1;
  }
}

size_t lane_fill(session_t *s, buf_t *out, size_t budget) {
  size_t start = out->len;
  if (buf_reserve(out, budget + FRAME_OVERHEAD) < 0) return 0;
  int session_zstd = s->codecs & 1;
  while (s->ready_head != NULL) {
    stream_t *st = s->ready_head;
    size_t used = out->len - start;
    if (used + FRAME_OVERHEAD >= budget) break;
    if (s->conn_send_window <= 0 && !fin_ready(st)) break; /* the connection's WINDOW_UPDATE resumes */
    s->ready_head = st->rnext;
    if (s->ready_head == NULL) s->ready_tail = NULL;
    st->in_ready = 0;
    st->rnext = NULL;
    size_t max = s->send_payload;
    if ((int64_t)max > st->send_window) max = st->send_window > 0 ? (size_t)st->send_window : 0;
    if ((int64_t)max > s->conn_send_window) max = s->conn_send_window > 0 ? (size_t)s->conn_send_window : 0;
    if (max > budget - used - FRAME_OVERHEAD) max = budget - used - FRAME_OVERHEAD;
    /* a stream that gave up on zstd reads straight into the slot, as without zstd */
    int zstd = session_zstd && !codec_tx_off(st->ctx);
    uint8_t *frame = out->p + out->len;
    uint8_t *slot = frame + HEADER_SIZE;
    uint8_t *src = zstd ? scratch : slot;
    size_t got = 0;
    if (max > 0) {
      got = take_txq(st, src, max);
      if (got < max && st->txq.bytes == 0 && st->fd >= 0 && st->fd_readable && !st->fd_eof) {
        long r = read_socket(st, src + got, max - got);
        if (r < 0) {
          stream_socket_failed(st, errno); /* the peer hears RST, JavaScript the errno */
          continue;
        }
        got += (size_t)r;
      }
    }
    int fin = fin_ready(st);
    if (got > 0 || fin) {
      size_t plen = got;
      int flags = fin ? FLAG_FIN : 0;
      if (got > 0 && zstd) {
        size_t z = codec_compress(&st->ctx, scratch, got, slot, max, &s->comp_in, &s->comp_out);
        if (z > 0) {
          plen = z;
          flags |= FLAG_COMPRESSED;
        } else {
          memcpy(slot, scratch, got);
        }
      }
      frame[0] = MAGIC >> 8;
      frame[1] = MAGIC & 0xff;
      wr32(frame + 2, (uint32_t)plen);
      frame[6] = F_DATA;
      frame[7] = (uint8_t)flags;
      wr32(frame + 8, st->id);
      wr32(slot + plen, zl_crc32(frame, HEADER_SIZE + plen));
      out->len += FRAME_OVERHEAD + plen;
      st->send_window -= (int64_t)got;
      s->conn_send_window -= (int64_t)got;
      __atomic_store_n(&s->frames_out[frame_index(F_DATA)], s->frames_out[frame_index(F_DATA)] + 1,
                       __ATOMIC_RELAXED);
      if (fin) st->fin_sent = 1;
    }
    if (st->taken_due && st->txq.bytes == 0) {
      st->taken_due = 0;
      post_event(EV_ST_TAKEN, s->id, st->id, 0, 0, (double)st->tx_taken, 0, NULL, 0, NULL);
    }
    if (st->fin_sent) {
      stream_maybe_finish(st);
      continue;
    }
    lane_wake(st); /* back at the tail while it has more (or parked, out of window) */
  }
  return out->len - start;
}
