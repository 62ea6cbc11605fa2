/*
 * What `zipline run` needs of systemd's protocols that Node cannot do itself:
 * - notify: sd_notify(3) (`Type=notify`): one datagram with `text` ("READY=1", "RELOADING=1\n
 *   MONOTONIC_USEC=…", "STOPPING=1", "MAINPID=N", "WATCHDOG=1", "STATUS=…") to the AF_UNIX socket
 *   systemd names in $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace). Node has no
 *   AF_UNIX datagrams. src/core/systemd.ts calls it.
 * - sockinfo: what a socket passed by socket activation (sd_listen_fds(3), fd 3 on) is: stream or
 *   datagram, and its port (src/core/socket-activation.ts).
 */
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proc.h"

#define TEXT_MAX 4096

/* notify(socketPath: string, text: string): number (0, or the errno) */
napi_value zl_proc_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_value result;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  struct sockaddr_un addr;
  char text[TEXT_MAX];
  size_t path_len = 0, text_len = 0;
  int err = EINVAL;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (argc == 2 &&
      napi_get_value_string_utf8(env, args[0], addr.sun_path, sizeof addr.sun_path, &path_len) == napi_ok &&
      napi_get_value_string_utf8(env, args[1], text, sizeof text, &text_len) == napi_ok && path_len >= 2 &&
      path_len < sizeof addr.sun_path - 1 && text_len > 0 && text_len < sizeof text - 1 &&
      (addr.sun_path[0] == '/' || addr.sun_path[0] == '@')) {
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
    } else {
      /* never waits: a full notify queue is an error to log, not a stalled event loop */
      ssize_t n = sendto(fd, text, text_len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&addr, len);
      err = n < 0 ? errno : 0;
      close(fd);
    }
  }
  napi_create_int32(env, err, &result);
  return result;
}

/* sockinfo(fd: number): [kind, port] with kind 1 (SOCK_STREAM) or 2 (SOCK_DGRAM) of an IPv4/IPv6
   socket, or [0, errno] (not a socket, another family or type) */
napi_value zl_proc_sockinfo(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  int32_t fd = -1;
  int kind = 0, value = EINVAL;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc == 1 && napi_get_value_int32(env, args[0], &fd) == napi_ok && fd > 2) {
    int type = 0;
    socklen_t tlen = sizeof type;
    struct sockaddr_storage ss;
    socklen_t slen = sizeof ss;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || getsockname(fd, (struct sockaddr *)&ss, &slen) < 0) {
      value = errno;
    } else if ((type != SOCK_STREAM && type != SOCK_DGRAM) || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
      value = EAFNOSUPPORT;
    } else {
      kind = type == SOCK_STREAM ? 1 : 2;
      value = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  napi_value result, k, v;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, kind, &k);
  napi_create_int32(env, value, &v);
  napi_set_element(env, result, 0, k);
  napi_set_element(env, result, 1, v);
  return result;
}
