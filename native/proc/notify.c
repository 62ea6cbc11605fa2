/*
 * sd_notify(3) for `zipline run` under systemd (`Type=notify`): one datagram with `text`
 * ("READY=1", "RELOADING=1\nMONOTONIC_USEC=…", "STOPPING=1", "MAINPID=N", "WATCHDOG=1",
 * "STATUS=…") to the AF_UNIX socket systemd names in $NOTIFY_SOCKET (a path, or `@name` in the
 * abstract namespace). Node has no AF_UNIX datagrams, hence this. src/core/systemd.ts calls it.
 */
#include <errno.h>
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
      ssize_t n = sendto(fd, text, text_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, len);
      err = n < 0 ? errno : 0;
      close(fd);
    }
  }
  napi_create_int32(env, err, &result);
  return result;
}
