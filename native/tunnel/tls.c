/*
 * TLS 1.3 for native sessions, with the OpenSSL that Node links (its symbols are the process's;
 * nothing else is loaded). Contexts are made on the JavaScript thread from PEM text (the same
 * files and settings as src/tunnel/tls.ts) and used by the engine's thread.
 *
 * One BIO per session does the socket I/O: reads go to the socket (with read-ahead, one read(2)
 * takes several records; a short read means the socket is drained until epoll's next edge, so no
 * read ends in EAGAIN just to learn that), and writes append records to the session's `wire`
 * buffer, which the session writes with one write(2) per batch (OpenSSL alone writes each 16 KiB
 * record separately).
 *
 * Verification: a pinned fingerprint is checked by JavaScript against the SHA-256 this file
 * reports (the handshake itself accepts any certificate then, as src/tunnel/tls.ts does); a CA
 * is verified here, with the name (or IP address) checked as Node's checkServerIdentity does.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "tunnel.h"

#define MAX_CTX 1024

static SSL_CTX *contexts[MAX_CTX];
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static BIO_METHOD *method;

/* ---- the BIO ---- */

static int bio_read(BIO *b, char *out, int len) {
  session_t *s = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (s->prepos < s->pre.len) {
    size_t n = s->pre.len - s->prepos;
    if (n > (size_t)len) n = (size_t)len;
    memcpy(out, s->pre.p + s->prepos, n);
    s->prepos += n;
    if (s->prepos == s->pre.len) {
      buf_free(&s->pre);
      s->prepos = 0;
    }
    return (int)n;
  }
  if (s->drained) {
    BIO_set_retry_read(b);
    return -1;
  }
  for (;;) {
    ssize_t n = read(s->fd, out, (size_t)len);
    if (n > 0) {
      if (n < len && !s->rdhup) s->drained = 1;
      return (int)n;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      s->drained = 1;
      BIO_set_retry_read(b);
      return -1;
    }
    return -1;
  }
}

static int bio_write(BIO *b, const char *in, int len) {
  session_t *s = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (buf_reserve(&s->wire, (size_t)len) < 0) return -1;
  memcpy(s->wire.p + s->wire.len, in, (size_t)len);
  s->wire.len += (size_t)len;
  return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method(void) {
  if (method != NULL) return method;
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "zipline tunnel");
  if (m == NULL) return NULL;
  BIO_meth_set_read(m, bio_read);
  BIO_meth_set_write(m, bio_write);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  method = m;
  return m;
}

/* ---- contexts ---- */

static void reason(char *err, size_t err_len, const char *what) {
  unsigned long e = ERR_get_error();
  char detail[200] = {0};
  if (e != 0) ERR_error_string_n(e, detail, sizeof detail);
  snprintf(err, err_len, "%s%s%s", what, detail[0] ? ": " : "", detail);
  ERR_clear_error();
}

static int load_chain(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (bio == NULL) return 0;
  X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
  int ok = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1;
  X509_free(leaf);
  while (ok) {
    X509 *extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (extra == NULL) break;
    if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      ok = 0;
    }
  }
  ERR_clear_error(); /* the end of the PEM text reads as an error */
  BIO_free(bio);
  return ok;
}

static int load_key(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (bio == NULL) return 0;
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  int ok = key != NULL && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  EVP_PKEY_free(key);
  BIO_free(bio);
  return ok;
}

static int load_ca(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (bio == NULL) return 0;
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  int n = 0;
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) break;
    if (X509_STORE_add_cert(store, x) == 1) n++;
    X509_free(x);
  }
  ERR_clear_error();
  BIO_free(bio);
  return n > 0;
}

SSL_CTX *tls_ctx_new(int server, const char *cert, size_t cert_len, const char *key, size_t key_len,
                     const char *ca, size_t ca_len, const char *ciphers, char *err, size_t err_len) {
  ERR_clear_error();
  if (bio_method() == NULL) {
    reason(err, err_len, "cannot make the tunnel BIO");
    return NULL;
  }
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    reason(err, err_len, "cannot make a TLS context");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
  if (ciphers != NULL && SSL_CTX_set_ciphersuites(ctx, ciphers) != 1) {
    reason(err, err_len, "no usable TLS 1.3 cipher suite in the list");
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (server) {
    SSL_CTX_set_num_tickets(ctx, 0); /* sessions are long-lived: no resumption */
    if (cert == NULL || !load_chain(ctx, cert, cert_len)) {
      reason(err, err_len, "cannot use the relay certificate");
      SSL_CTX_free(ctx);
      return NULL;
    }
    if (key == NULL || !load_key(ctx, key, key_len)) {
      reason(err, err_len, "cannot use the relay key (or it does not match the certificate)");
      SSL_CTX_free(ctx);
      return NULL;
    }
  } else if (ca != NULL && ca_len > 0) {
    if (!load_ca(ctx, ca, ca_len)) {
      reason(err, err_len, "no certificate in the CA file");
      SSL_CTX_free(ctx);
      return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* pinned: JavaScript checks the fingerprint */
  }
  return ctx;
}

/* 0 when the table is full. JavaScript frees a context it replaces (tls_ctx_drop). */
uint32_t tls_ctx_register(SSL_CTX *ctx) {
  uint32_t id = 0;
  pthread_mutex_lock(&ctx_mu);
  for (uint32_t i = 0; i < MAX_CTX; i++) {
    if (contexts[i] == NULL) {
      contexts[i] = ctx;
      id = i + 1;
      break;
    }
  }
  pthread_mutex_unlock(&ctx_mu);
  return id;
}

/* Sessions made from it keep their own reference (SSL_new): dropping it here is safe. */
void tls_ctx_drop(uint32_t id) {
  pthread_mutex_lock(&ctx_mu);
  if (id >= 1 && id <= MAX_CTX && contexts[id - 1] != NULL) {
    SSL_CTX_free(contexts[id - 1]);
    contexts[id - 1] = NULL;
  }
  pthread_mutex_unlock(&ctx_mu);
}

/* The caller (js_session, on the JavaScript thread) uses it before any drop can run there. */
SSL_CTX *tls_ctx_get(uint32_t id) {
  pthread_mutex_lock(&ctx_mu);
  SSL_CTX *ctx = id >= 1 && id <= MAX_CTX ? contexts[id - 1] : NULL;
  pthread_mutex_unlock(&ctx_mu);
  return ctx;
}

/* ---- per session ---- */

int tls_attach(session_t *s, SSL_CTX *ctx, const char *server_name, int verify_name) {
  ERR_clear_error();
  SSL *ssl = SSL_new(ctx);
  BIO *bio = ssl != NULL ? BIO_new(bio_method()) : NULL;
  if (bio == NULL) {
    SSL_free(ssl);
    return -1;
  }
  BIO_set_data(bio, s);
  SSL_set_bio(ssl, bio, bio);
  if (!SSL_is_server(ssl)) { /* a client context's method */
    SSL_set_connect_state(ssl);
    if (server_name != NULL && server_name[0] != 0) {
      unsigned char ip[16];
      int literal = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
      if (!literal) SSL_set_tlsext_host_name(ssl, server_name);
      if (verify_name) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) : SSL_set1_host(ssl, server_name);
        if (ok != 1) {
          SSL_free(ssl);
          return -1;
        }
      }
    }
  } else {
    SSL_set_accept_state(ssl);
  }
  s->ssl = ssl;
  return 0;
}

int tls_handshake(session_t *s, char *err, size_t err_len) {
  int r = SSL_do_handshake(s->ssl);
  if (r == 1) return 1;
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  long verify = SSL_get_verify_result(s->ssl);
  if (verify != X509_V_OK) {
    snprintf(err, err_len, "the relay's certificate: %s", X509_verify_cert_error_string(verify));
  } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
    snprintf(err, err_len, "the peer closed the connection during the TLS handshake%s%s",
             errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
  } else {
    reason(err, err_len, "TLS handshake failed");
  }
  ERR_clear_error(); /* the thread's queue is shared by every session: leave it empty */
  return -1;
}

void tls_session_info(session_t *s, uint8_t out[64]) {
  static const char label[] = "EXPORTER-zipline-tunnel-v1";
  memset(out, 0, 64);
  /* the same bytes as Node's exportKeyingMaterial(32, label, Buffer.alloc(0)) */
  SSL_export_keying_material(s->ssl, out, 32, label, sizeof label - 1, (const unsigned char *)"", 0, 1);
  X509 *peer = SSL_get1_peer_certificate(s->ssl);
  if (peer != NULL) {
    unsigned int n = 0;
    X509_digest(peer, EVP_sha256(), out + 32, &n);
    X509_free(peer);
  }
  ERR_clear_error();
}
