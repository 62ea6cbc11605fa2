/*
 * The native tunnel engine (Linux): MS v1 sessions (src/tunnel/SPEC.md) run on one epoll thread,
 * TLS 1.3 included (the OpenSSL that Node itself links), so a byte moving between a local socket
 * and the tunnel never enters JavaScript. JavaScript stays the control plane: it dials, decides
 * (HELLO proof, allow list, relay choice), and tells the thread what to do through commands; the
 * thread reports through events (one threadsafe function). src/tunnel/native/ is the JavaScript
 * side; both follow the same rules as the JavaScript session (src/tunnel/session.ts), which runs
 * where this engine is not built.
 *
 * Files: loop.c (thread, commands, events, timers, the N-API surface), session.c (one connection:
 * transport, frame decoder, control lane, liveness, ends), lane.c (the DATA lane: streams' bytes
 * framed round-robin within windows), stream.c (one stream: windows, queues, the local socket),
 * tls.c (contexts, handshake, the BIO that batches records), codec.c (zstd per stream).
 */
#ifndef ZIPLINE_TUNNEL_H
#define ZIPLINE_TUNNEL_H
#define _GNU_SOURCE
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---- wire constants (src/tunnel/constants.ts; test/unit/native-tunnel-constants.test.ts) ---- */
enum {
  MAGIC = 0x4D53,
  HEADER_SIZE = 12,
  CRC_SIZE = 4,
  FRAME_OVERHEAD = 16,
  MAX_CONTROL_PAYLOAD = 65536,
  FIRST_EXTENSION_TYPE = 0x80,
};
enum {
  F_HELLO = 0x01,
  F_HELLO_ACK = 0x02,
  F_REQUEST = 0x03,
  F_RESPONSE = 0x04,
  F_OPEN = 0x10,
  F_OPEN_ACK = 0x11,
  F_DATA = 0x12,
  F_WINDOW_UPDATE = 0x13,
  F_RST = 0x14,
  F_DATAGRAM = 0x15,
  F_PING = 0x20,
  F_GOAWAY = 0x21,
};
enum { FLAG_FIN = 0x01, FLAG_ACK = 0x02, FLAG_COMPRESSED = 0x04 };
enum {
  E_NO_ERROR = 0,
  E_PROTOCOL_ERROR = 1,
  E_INTERNAL_ERROR = 2,
  E_FLOW_CONTROL_ERROR = 3,
  E_FRAME_SIZE_ERROR = 4,
  E_CRC_ERROR = 5,
  E_AUTH_FAILED = 6,
  E_REFUSED_STREAM = 7,
  E_CANCEL = 8,
  E_IDLE_TIMEOUT = 9,
  E_ENHANCE_YOUR_CALM = 10,
  E_REPLACED = 11,
  E_SHUTTING_DOWN = 12,
};
#define MAX_WINDOW_DELTA 0x7fffffffu
#define READ_DEADLINE_MS 30000u

/* ---- commands from JavaScript (mirrored in src/tunnel/native/binding.ts) ---- */
enum {
  C_START = 1,    /* sid: begin (TLS handshake, or up at once on plain TCP) */
  C_CONTROL,      /* sid, a type, b flags, stream, data: a frame on the control lane */
  C_SET_PEER,     /* sid, a max payload, b initial window, c connection window, d codecs */
  C_PING,         /* sid */
  C_GOAWAY,       /* sid, a code, b retry-after ms */
  C_FATAL,        /* sid, a code, data reason: GOAWAY, then close */
  C_CLOSE,        /* sid: queued frames out, then FIN */
  C_DESTROY,      /* sid: close now */
  C_RELEASE,      /* sid: JavaScript forgot the session; freed once closed */
  C_OPEN,         /* sid, stream, data (kind + address): OPEN a stream of ours */
  C_ANSWER,       /* sid, stream, a status: OPEN_ACK (non-zero ends the stream) */
  C_ST_WRITE,     /* sid, stream, data: bytes for the peer */
  C_ST_END,       /* sid, stream: FIN after the bytes written */
  C_ST_CONSUMED,  /* sid, stream, a bytes: JavaScript read them (credit) */
  C_ST_JS,        /* sid, stream: received bytes go to JavaScript */
  C_ST_ATTACH,    /* sid, stream, fd (a duplicate), a idle ms: the thread moves the bytes */
  C_ST_RESET,     /* sid, stream, a code: RST */
  C_ST_RELEASE,   /* sid, stream: JavaScript forgot the stream */
  C_DATAGRAM,     /* sid, stream, data */
};

/* ---- events to JavaScript (mirrored in src/tunnel/native/binding.ts) ---- */
enum {
  EV_TLS_DONE = 1, /* sid, a ok; data exporter(32) + peer certificate SHA-256(32); text cipher or error */
  EV_FRAME,        /* sid, a type, b flags, stream, data: HELLO, HELLO_ACK, REQUEST, RESPONSE, DATAGRAM */
  EV_OPEN,         /* sid, stream, data: a peer OPEN (kind + address) */
  EV_OPEN_ACK,     /* sid, stream, a status */
  EV_REFUSED,      /* sid, stream: a peer OPEN refused here (RST REFUSED_STREAM) */
  EV_GOAWAY,       /* sid, a code, b retry-after ms */
  EV_RTT,          /* sid, x rtt in ms */
  EV_FATAL,        /* sid, a code, text reason: a fatal error found here (GOAWAY sent) */
  EV_CLOSED,       /* sid: the connection is closed; every stream event came before */
  EV_ST_DATA,      /* sid, stream, data, a fin */
  EV_ST_RESET,     /* sid, stream, a code: reset by the peer (or its session ended) */
  EV_ST_TAKEN,     /* sid, stream, x bytes taken so far: every byte JavaScript wrote is framed */
  EV_ST_DONE,      /* sid, stream, a reason, b errno, x bytes read from the socket, y written to it */
};

/* how an attached stream ended (EV_ST_DONE a; mirrored in binding.ts) */
enum { D_DONE = 0, D_SOCKET_ERROR = 1, D_RESET = 2, D_IDLE = 3, D_CANCEL = 4, D_SESSION = 5 };

/* ---- shared helpers ---- */
typedef struct buf {
  uint8_t *p;
  size_t len, cap;
} buf_t;
int buf_reserve(buf_t *b, size_t extra); /* 0, or -1 out of memory */
void buf_free(buf_t *b);

typedef struct chunk {
  struct chunk *next;
  uint32_t len, off;
  uint8_t data[];
} chunk_t;
typedef struct {
  chunk_t *head, *tail;
  uint64_t bytes;
} queue_t;
int queue_push(queue_t *q, const uint8_t *p, size_t n); /* copies; 0 or -1 */
void queue_clear(queue_t *q);

uint64_t now_ms(void);
uint64_t now_ns(void);
uint32_t rd32(const uint8_t *p);
void wr32(uint8_t *p, uint32_t v);

/* epoll registrations point at a tag */
enum { TAG_CMD = 0, TAG_SESSION = 1, TAG_STREAM = 2 };
typedef struct tag {
  int kind;
  void *obj; /* NULL once the owner is gone (events already fetched in this batch are skipped) */
} tag_t;

/* ---- zstd per stream (codec.c; stubs when built without zstd) ---- */
typedef struct codec_tx codec_tx_t;
typedef struct codec_rx codec_rx_t;
int codec_available(void);
int codec_tx_off(const codec_tx_t *c); /* this stream gave up compressing (or there is no zstd) */
/* Compresses src into dst (room for `cap`); returns the compressed size, or 0: send src as it is. */
size_t codec_compress(codec_tx_t **c, const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint64_t *in,
                      uint64_t *out);
/* Decompresses into dst (at most `max`); returns the size, or -1 (corrupt, or more than max). */
long codec_decompress(codec_rx_t **c, const uint8_t *src, size_t n, uint8_t *dst, size_t max);
void codec_rx_reset(codec_rx_t *c);
void codec_tx_release(codec_tx_t **c);
void codec_rx_release(codec_rx_t **c);

/* ---- streams (stream.c) ---- */
enum { RX_PENDING = 0, RX_JS = 1, RX_FD = 2 };
struct session;
typedef struct stream {
  uint32_t id;
  struct session *s;
  struct stream *hnext; /* the session's hash chain */
  struct stream *rnext; /* the DATA lane's ready list */
  uint8_t in_ready, parked, rx_mode, ours;
  int fd; /* RX_FD: the thread's own duplicate of the local socket; -1 else */
  tag_t tag;
  /* toward the peer */
  int64_t send_window;
  queue_t txq;          /* bytes JavaScript wrote, not yet framed */
  uint8_t tx_fin;       /* no more bytes after txq (JavaScript ended, or the socket's EOF) */
  uint8_t fin_sent;
  uint8_t fd_readable;  /* the socket may have bytes (edge seen, no short read since) */
  uint8_t fd_eof;
  uint8_t fd_rdhup;     /* the peer's FIN (or an error) is signalled: read on until EOF, no more edges come */
  uint8_t taken_due;    /* tell JavaScript when txq empties */
  uint64_t tx_taken;    /* bytes JavaScript wrote that were framed (EV_ST_TAKEN x) */
  /* from the peer */
  int64_t recv_window, recv_buffered, unacked;
  uint64_t window_started_ms;
  queue_t rxq;          /* received, not yet written to the socket (or kept until a mode is chosen) */
  uint8_t fin_received, fd_shut, fd_writable, rx_fin_delivered;
  uint8_t reset;        /* ended abortively: RST sent or received, refused, or its session ended */
  uint8_t released;     /* JavaScript forgot it */
  uint8_t done;         /* EV_ST_DONE posted (attached streams) */
  uint8_t counted;      /* a peer-opened stream counted in peer_streams */
  uint32_t idle_ms;
  uint64_t last_active_ms;
  uint64_t fd_read, fd_written;
  codec_tx_t *ctx;
  codec_rx_t *drx;
} stream_t;

stream_t *stream_new(struct session *s, uint32_t id, int ours);
stream_t *stream_find(struct session *s, uint32_t id);
void stream_free(stream_t *st);               /* unlinks and frees; the fd must be closed already */
void stream_data(stream_t *st, const uint8_t *p, size_t n, int fin, int compressed); /* a DATA frame */
void stream_consumed(stream_t *st, int64_t n); /* credit for bytes read by the application */
void stream_attach(stream_t *st, int fd, uint32_t idle_ms);
void stream_to_js(stream_t *st);
void stream_reset_local(stream_t *st, uint32_t code); /* RST to the peer, end here */
void stream_reset_by_peer(stream_t *st, uint32_t code);
void stream_refused(stream_t *st);            /* ended by an OPEN_ACK refusal: no RST either way */
void stream_session_gone(stream_t *st);       /* the session closed under it */
void stream_socket_failed(stream_t *st, int err); /* its socket failed: RST to the peer, report */
void stream_fd_event(stream_t *st, uint32_t events);
void stream_flush_rx(stream_t *st);           /* queued bytes to the socket / JavaScript */
void stream_maybe_finish(stream_t *st);       /* done both ways: report, and free if released */
void stream_sweep(stream_t *st, uint64_t now); /* idle timeout */
void stream_flush_writev(void);              /* batched DATA writes of this parse pass */

/* ---- sessions (session.c) ---- */
enum { S_NEW = 0, S_HANDSHAKE, S_OPEN, S_CLOSING, S_CLOSED };
typedef struct session {
  uint32_t id;
  int fd;
  int role_agent; /* agent opens odd stream ids */
  int state;
  tag_t tag;
  SSL *ssl;
  int drained;    /* the socket gave a short read: wait for the next edge before reading */
  int rdhup;      /* the peer's FIN (or an error) is signalled: read on until EOF, no more edges come */
  int writable;
  int fin_out;    /* closing: our close_notify and FIN are out; waiting for the peer's FIN */
  /* TLS bytes JavaScript read before the engine took the socket (a relay behind a PROXY-protocol
     balancer: the ClientHello came with the header): the BIO serves them before the socket */
  buf_t pre;
  size_t prepos;
  /* incoming: plaintext to decode */
  buf_t rbuf;
  size_t rpos;    /* decoded up to here */
  /* outgoing */
  buf_t ctl;      /* control frames queued */
  buf_t pbuf;     /* one batch of frames (plaintext) */
  buf_t wire;     /* bytes for write(2): TLS records, or the frames themselves on plain TCP */
  size_t woff;
  int dirty;
  struct session *dnext;
  /* streams */
  stream_t **buckets;
  uint32_t nbuckets, nstreams;
  stream_t *ready_head, *ready_tail;
  uint32_t next_id, last_peer_stream, peer_streams;
  /* sizes and windows */
  uint32_t max_payload, send_payload, initial_window, max_window, conn_window, max_streams;
  uint32_t peer_initial_window;
  int64_t conn_send_window, conn_recv_outstanding, conn_recv_unacked;
  int codecs;
  int gone_away, closing_down;
  uint32_t frames_per_turn;
  /* liveness */
  uint32_t ping_ms, misses;
  uint64_t last_frame_ms, next_tick_ms, last_tick_wall, last_tick_mono, close_at_ms;
  /* ends */
  int fatal_sent, closed_posted;
  int released;
  /* counters read by JavaScript (relaxed atomics) */
  uint64_t bytes_in, bytes_out, comp_in, comp_out, dgram_dropped;
  uint64_t frames_in[16], frames_out[16];
  int again;       /* more input waits (bounded work per batch): run again next batch */
  struct session *anext;
  struct session *next, *prev, *hnext; /* the thread's list and table */
  struct session *jnext;               /* JavaScript's table (stats), under the lock */
} session_t;

int frame_index(int type); /* counters' slot of a frame type (0 = other) */
long frame_check(const uint8_t *f, size_t avail, uint32_t max_payload, uint32_t *code, char *why, size_t why_len);
session_t *session_find(uint32_t id); /* the thread's table */
void session_again(session_t *s);      /* run its input again in the next batch */
void session_start(session_t *s);   /* the thread takes it over (C_START) */
void session_unlink(session_t *s);  /* out of both tables; freed after the batch */
void session_event(session_t *s, uint32_t events);
void session_command(session_t *s, int kind, uint32_t stream, uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                     const uint8_t *data, size_t len, int fd);
void session_control(session_t *s, int type, int flags, uint32_t stream, const uint8_t *p, size_t n);
void session_u32(session_t *s, int type, uint32_t stream, uint32_t v); /* WINDOW_UPDATE, RST */
void session_mark(session_t *s);            /* flush at the end of this batch */
void session_flush(session_t *s);
void session_consumed(session_t *s, int64_t n);
void session_fatal(session_t *s, uint32_t code, const char *reason);
void session_timers(session_t *s, uint64_t now, uint64_t *next);
void session_free(session_t *s);
extern uint8_t *scratch; /* decompression and compression staging, 64 KiB + slack */

/* ---- DATA lane (lane.c) ---- */
void lane_wake(stream_t *st);   /* st has bytes or a FIN to send */
void lane_forget(stream_t *st);
size_t lane_fill(session_t *s, buf_t *out, size_t budget);

/* ---- TLS (tls.c) ---- */
SSL_CTX *tls_ctx_new(int server, const char *cert, size_t cert_len, const char *key, size_t key_len,
                     const char *ca, size_t ca_len, const char *ciphers, char *err, size_t err_len);
int tls_attach(session_t *s, SSL_CTX *ctx, const char *server_name, int verify_name);
/* 1 done, 0 more to do, -1 failed (message in err) */
int tls_handshake(session_t *s, char *err, size_t err_len);
void tls_session_info(session_t *s, uint8_t out[64]);
SSL_CTX *tls_ctx_get(uint32_t id);
uint32_t tls_ctx_register(SSL_CTX *ctx);
void tls_ctx_drop(uint32_t id);

/* ---- the loop (loop.c) ---- */
extern int tun_ep;
void post_event(int type, uint32_t sid, uint32_t stream, uint32_t a, uint32_t b, double x, double y,
                const uint8_t *data, size_t len, const char *text);
void defer_free(void *p); /* freed after the current epoll batch */
int events_backlogged(void); /* JavaScript has not run many of the events posted: stop decoding */
void timers_changed(uint64_t at);
#endif
