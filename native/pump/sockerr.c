/*
 * The error a socket's peer left pending (Linux): socketError(fd) returns getsockopt SO_ERROR,
 * 0 when there is none, or -errno when the call itself fails (a closed fd).
 *
 * Why JavaScript needs it: libuv reports the end of a stream without reading the socket's error
 * when epoll says HUP after a partial read (uv__stream_io's POLLHUP short-cut), so an RST that
 * arrives with the last bytes (a server that wrote and crashed, or reset on purpose) reaches Node
 * as a plain 'end', exactly like a FIN. The kernel still holds the reset as the socket's pending
 * error (ECONNRESET), which this reads (and so clears). src/l4/reset-socket.ts `endedByReset`
 * asks on each 'end' whose FIN and RST mean different things: a close-delimited HTTP response is
 * complete at a FIN and truncated at an RST; a proxied stream passes an RST on as an RST.
 */
#include "pump.h"

#include <errno.h>
#include <node_api.h>
#include <sys/socket.h>

napi_value js_socket_error(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  int32_t result;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    result = -EBADF;
  } else {
    int err = 0;
    socklen_t len = sizeof err;
    result = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 ? err : -errno;
  }
  napi_create_int32(env, result, &out);
  return out;
}
