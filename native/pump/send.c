/*
 * Direct sends from the JavaScript thread (Linux): sendLatin1(fd, text) writes a latin1 string
 * to a connected, non-blocking TCP socket with one send(2) and returns the bytes sent, or
 * -errno. src/http/write-batch.ts uses it at the end of an event-loop turn for sockets whose
 * Node write queue is empty: a small HTTP head or body goes out without Node's Writable, its
 * WriteWrap and the stream machinery (~0.3 µs per write). Whatever is not sent (a partial send,
 * EAGAIN, an error) is handed to Node's own write path by the caller, which queues it or reports
 * the error as it would have.
 *
 * The copy goes through a buffer on the stack: a string longer than SEND_MAX is refused
 * (-EMSGSIZE) rather than sent in part; the caller hands it to Node instead.
 */
#include "pump.h"

#include <errno.h>
#include <node_api.h>

#define SEND_MAX (16 * 1024)

napi_value js_send_latin1(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  char buf[SEND_MAX + 2];
  size_t len = 0;
  ssize_t n;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_string_latin1(env, argv[1], buf, sizeof buf, &len) != napi_ok) {
    n = -EINVAL;
  } else if (len > SEND_MAX) {
    /* the copy stops at sizeof buf - 1 characters: past SEND_MAX it may not be whole */
    n = -EMSGSIZE;
  } else {
    n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) n = -errno;
  }
  napi_create_int32(env, (int32_t)n, &out);
  return out;
}
