/*
 * A C program sharing memory with zipline: publishes a snapshot, sends messages to Node, and
 * prints what Node sends back.
 *
 *   cc -std=c11 -O2 -Inative/include native/examples/shm_example.c native/lib/zipline_shm.c -o shm_example
 *   ./shm_example /zipline-demo "hello from C" 3
 *
 * Arguments: segment name, snapshot text, messages to send (then it waits up to 1 s for one reply).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zipline_shm.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s /NAME SNAPSHOT [MESSAGES]\n", argv[0]);
    return 2;
  }
  zl_shm_options opts = {.create = 1};
  zl_shm *shm;
  int r = zl_shm_open(argv[1], &opts, &shm);
  if (r != ZL_SHM_OK) {
    fprintf(stderr, "open %s: %s\n", argv[1], zl_shm_strerror(r));
    return 1;
  }
  uint64_t version = 0;
  r = zl_shm_snapshot_write(shm, argv[2], (uint32_t)strlen(argv[2]), &version);
  if (r != ZL_SHM_OK) {
    fprintf(stderr, "snapshot: %s\n", zl_shm_strerror(r));
    return 1;
  }
  printf("snapshot version %llu\n", (unsigned long long)version);
  int messages = argc > 3 ? atoi(argv[3]) : 0;
  for (int i = 0; i < messages; i++) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "message %d from C", i);
    r = zl_shm_send(shm, msg, (uint32_t)n);
    if (r != ZL_SHM_OK) fprintf(stderr, "send: %s\n", zl_shm_strerror(r));
  }
  char buf[4096];
  uint32_t len = 0;
  r = zl_shm_recv(shm, buf, sizeof buf, &len, 1000);
  if (r == ZL_SHM_OK) printf("from node: %.*s\n", (int)len, buf);
  else printf("from node: (%s)\n", zl_shm_strerror(r));
  zl_shm_close(shm);
  return 0;
}
