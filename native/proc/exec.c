/*
 * execv(2) for the `zipline` launcher (Linux): replaces the process image, same PID, so that
 * `zipline run` can restart itself once with the V8 heap flags it needs (src/cli/heap-flags.ts).
 * Node 20 has no process.execve. Standard input, output and error are kept (Node marks them
 * close-on-exec). Returns only on failure (the errno, as a number). Also `cloexec` (below) and
 * `notify`, `sockinfo` (systemd.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"

static char *dup_string(napi_env env, napi_value v) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return NULL;
  char *s = malloc(n + 1);
  if (s == NULL) return NULL;
  napi_get_value_string_utf8(env, v, s, n + 1, &n);
  return s;
}

static void keep_open(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
}

/* exec(path: string, argv: string[]): number (errno; never returns on success) */
static napi_value js_exec(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_value result;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  uint32_t n = 0;
  if (argc < 2 || napi_get_array_length(env, args[1], &n) != napi_ok || n == 0) {
    napi_create_int32(env, EINVAL, &result);
    return result;
  }
  char *path = dup_string(env, args[0]);
  char **argv = calloc(n + 1, sizeof *argv);
  int err = ENOMEM;
  if (path != NULL && argv != NULL) {
    uint32_t i = 0;
    for (; i < n; i++) {
      napi_value item;
      napi_get_element(env, args[1], i, &item);
      if ((argv[i] = dup_string(env, item)) == NULL) break;
    }
    if (i == n) {
      /* Node marks its stdio close-on-exec: keep 0-2 for the new image, and the sockets systemd
         passed this process (socket activation: LISTEN_FDS from 3, LISTEN_PID ours, same PID after) */
      for (int fd = 0; fd <= 2; fd++) keep_open(fd);
      const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
      if (pid != NULL && fds != NULL && strtol(pid, NULL, 10) == (long)getpid()) {
        long n = strtol(fds, NULL, 10);
        for (long fd = 3; n > 0 && n < 1024 && fd < 3 + n; fd++) keep_open((int)fd);
      }
      execv(path, argv);
      err = errno;
    }
    for (uint32_t j = 0; j < n; j++) free(argv[j]);
  }
  free(argv);
  free(path);
  napi_create_int32(env, err, &result);
  return result;
}

/* cloexec(fd: number): number (0, or the errno). Marks a descriptor close-on-exec: the listening
   sockets an upgrade hands to this process (src/core/handover.ts) are not to reach its own
   children (workers, the config checker). */
static napi_value js_cloexec(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  napi_value result;
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int err = EINVAL;
  if (argc == 1 && napi_get_value_int32(env, args[0], &fd) == napi_ok && fd > 2) {
    int flags = fcntl(fd, F_GETFD);
    err = flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0 ? errno : 0;
  }
  napi_create_int32(env, err, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "exec", NAPI_AUTO_LENGTH, js_exec, NULL, &fn);
  napi_set_named_property(env, exports, "exec", fn);
  napi_create_function(env, "cloexec", NAPI_AUTO_LENGTH, js_cloexec, NULL, &fn);
  napi_set_named_property(env, exports, "cloexec", fn);
  napi_create_function(env, "notify", NAPI_AUTO_LENGTH, zl_proc_notify, NULL, &fn);
  napi_set_named_property(env, exports, "notify", fn);
  napi_create_function(env, "sockinfo", NAPI_AUTO_LENGTH, zl_proc_sockinfo, NULL, &fn);
  napi_set_named_property(env, exports, "sockinfo", fn);
  return exports;
}
