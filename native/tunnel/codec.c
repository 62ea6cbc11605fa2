/*
 * zstd for DATA payloads of native sessions: the rules of src/tunnel/compression.ts
 * (src/tunnel/PAYLOADS.md "Compression"), byte for byte compatible with it. Per stream and
 * direction one zstd stream context (level 3), each payload flushed; payloads under 256 B go as
 * they are; a payload is sent compressed only when it saves at least 10 %; a payload sent as it is
 * ends the context's frame on both sides (the receiver resets its context when it sees one);
 * after 8 payloads in a row that did not compress, the stream stops trying. Contexts are pooled
 * (a context holds megabytes of tables).
 *
 * zstd comes from the optional zstd-napi package's static library (binding.gyp links it when
 * present and defines ZIPLINE_ZSTD); without it the engine negotiates no codec.
 */
#include <stdlib.h>

#include "tunnel.h"

#ifdef ZIPLINE_ZSTD
#include <zstd.h>

#define MIN_COMPRESS 256
#define GIVE_UP_AFTER 8
#define LEVEL 3
#define POOL_MAX 64

struct codec_tx {
  ZSTD_CCtx *c;
  int misses;
  int off;
};
struct codec_rx {
  ZSTD_DCtx *d;
};

static ZSTD_CCtx *cpool[POOL_MAX];
static ZSTD_DCtx *dpool[POOL_MAX];
static int ncpool, ndpool;

int codec_available(void) { return 1; }

int codec_tx_off(const codec_tx_t *c) { return c != NULL && c->off; }

static ZSTD_CCtx *take_c(void) {
  if (ncpool > 0) return cpool[--ncpool];
  ZSTD_CCtx *c = ZSTD_createCCtx();
  if (c != NULL) ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, LEVEL);
  return c;
}

static void give_c(ZSTD_CCtx *c) {
  ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  if (ncpool < POOL_MAX) cpool[ncpool++] = c;
  else ZSTD_freeCCtx(c);
}

static ZSTD_DCtx *take_d(void) { return ndpool > 0 ? dpool[--ndpool] : ZSTD_createDCtx(); }

static void give_d(ZSTD_DCtx *d) {
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  if (ndpool < POOL_MAX) dpool[ndpool++] = d;
  else ZSTD_freeDCtx(d);
}

size_t codec_compress(codec_tx_t **pc, const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint64_t *in,
                      uint64_t *out) {
  codec_tx_t *c = *pc;
  if (c == NULL) {
    c = calloc(1, sizeof *c);
    if (c == NULL) return 0;
    *pc = c;
  }
  if (c->off) return 0;
  if (n < MIN_COMPRESS) {
    if (c->c != NULL) ZSTD_CCtx_reset(c->c, ZSTD_reset_session_only);
    return 0;
  }
  if (c->c == NULL) c->c = take_c();
  if (c->c == NULL) return 0;
  size_t limit = n - (n + 9) / 10; /* must save at least 10 % */
  if (limit > cap) limit = cap;
  ZSTD_outBuffer o = {dst, limit, 0};
  ZSTD_inBuffer i = {src, n, 0};
  size_t left = 1;
  while (left != 0 && o.pos < o.size) {
    left = ZSTD_compressStream2(c->c, &o, &i, ZSTD_e_flush);
    if (ZSTD_isError(left)) break;
  }
  __atomic_store_n(in, *in + n, __ATOMIC_RELAXED);
  if (ZSTD_isError(left) || left != 0 || i.pos < i.size) {
    /* did not fit in 90 %: send it as it is, and end the frame so both sides agree */
    ZSTD_CCtx_reset(c->c, ZSTD_reset_session_only);
    __atomic_store_n(out, *out + n, __ATOMIC_RELAXED);
    if (++c->misses >= GIVE_UP_AFTER) {
      c->off = 1;
      give_c(c->c);
      c->c = NULL;
    }
    return 0;
  }
  c->misses = 0;
  __atomic_store_n(out, *out + o.pos, __ATOMIC_RELAXED);
  return o.pos;
}

long codec_decompress(codec_rx_t **pd, const uint8_t *src, size_t n, uint8_t *dst, size_t max) {
  codec_rx_t *d = *pd;
  if (d == NULL) {
    d = calloc(1, sizeof *d);
    if (d == NULL) return -1;
    *pd = d;
  }
  if (d->d == NULL) d->d = take_d();
  if (d->d == NULL) return -1;
  ZSTD_inBuffer i = {src, n, 0};
  ZSTD_outBuffer o = {dst, max + 1, 0};
  for (;;) {
    size_t before_in = i.pos, before_out = o.pos;
    size_t r = ZSTD_decompressStream(d->d, &o, &i);
    if (ZSTD_isError(r)) return -1;
    if (o.pos > max) return -2; /* no decompression bombs: never more than one payload */
    if (i.pos == i.size && o.pos > 0) break;
    if (i.pos == before_in && o.pos == before_out) break;
  }
  return (long)o.pos;
}

void codec_rx_reset(codec_rx_t *d) {
  if (d != NULL && d->d != NULL) ZSTD_DCtx_reset(d->d, ZSTD_reset_session_only);
}

void codec_tx_release(codec_tx_t **pc) {
  codec_tx_t *c = *pc;
  if (c == NULL) return;
  if (c->c != NULL) give_c(c->c);
  free(c);
  *pc = NULL;
}

void codec_rx_release(codec_rx_t **pd) {
  codec_rx_t *d = *pd;
  if (d == NULL) return;
  if (d->d != NULL) give_d(d->d);
  free(d);
  *pd = NULL;
}

#else /* built without zstd */

int codec_available(void) { return 0; }

int codec_tx_off(const codec_tx_t *c) {
  (void)c;
  return 1;
}

size_t codec_compress(codec_tx_t **pc, const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint64_t *in,
                      uint64_t *out) {
  (void)pc, (void)src, (void)n, (void)dst, (void)cap, (void)in, (void)out;
  return 0;
}

long codec_decompress(codec_rx_t **pd, const uint8_t *src, size_t n, uint8_t *dst, size_t max) {
  (void)pd, (void)src, (void)n, (void)dst, (void)max;
  return -1;
}

void codec_rx_reset(codec_rx_t *d) { (void)d; }
void codec_tx_release(codec_tx_t **pc) { (void)pc; }
void codec_rx_release(codec_rx_t **pd) { (void)pd; }
#endif
