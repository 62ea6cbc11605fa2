/*
 * Load generator for `npm run bench -- shm` (built with cc at run time):
 *   shmbench latency NAME COUNT GAP_US    C -> Node messages of 64 bytes, each stamped with its
 *                                         CLOCK_MONOTONIC send time (ns, first 8 bytes), GAP_US apart
 *   shmbench flood NAME COUNT             as fast as the ring takes them (a full ring is retried)
 *   shmbench unix PATH COUNT GAP_US       the same stamped 64-byte messages over a Unix stream socket
 *   shmbench recv NAME COUNT              receives COUNT Node -> C messages (futex wait) and prints the
 *                                         one-way latency p50/p99 from their stamps
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "zipline_shm.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void gap(uint64_t us) {
  uint64_t until = now_ns() + us * 1000u;
  while (now_ns() < until) {
  }
}

int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *mode = argv[1];
  long count = atol(argv[3]);
  uint64_t gap_us = argc > 4 ? (uint64_t)atol(argv[4]) : 0;
  uint8_t msg[64];
  memset(msg, 0x5a, sizeof msg);
  if (strcmp(mode, "unix") == 0) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[2], sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    for (long i = 0; i < count; i++) {
      uint64_t t = now_ns();
      memcpy(msg, &t, 8);
      if (write(fd, msg, sizeof msg) != (ssize_t)sizeof msg) return 1;
      gap(gap_us);
    }
    close(fd);
    return 0;
  }
  zl_shm_options o = {.create = 0};
  zl_shm *s;
  int r = zl_shm_open(argv[2], &o, &s);
  if (r != ZL_SHM_OK) {
    fprintf(stderr, "open: %s\n", zl_shm_strerror(r));
    return 1;
  }
  if (strcmp(mode, "recv") == 0) {
    double *lat = malloc(sizeof(double) * (size_t)count);
    long got = 0;
    uint8_t buf[256];
    printf("ready\n");
    fflush(stdout);
    while (got < count) {
      uint32_t len = 0;
      r = zl_shm_recv(s, buf, sizeof buf, &len, 5000);
      if (r == ZL_SHM_ETIMEDOUT) break;
      if (r != ZL_SHM_OK || len < 8) continue;
      uint64_t t;
      memcpy(&t, buf, 8);
      lat[got++] = (double)(now_ns() - t) / 1000.0;
    }
    long skip = got / 10;
    qsort(lat + skip, (size_t)(got - skip), sizeof(double), cmp);
    long n = got - skip;
    printf("{\"received\":%ld,\"p50_us\":%.2f,\"p99_us\":%.2f}\n", got, n ? lat[skip + n / 2] : 0.0,
           n ? lat[skip + (long)(n * 0.99)] : 0.0);
    free(lat);
    zl_shm_close(s);
    return 0;
  }
  uint64_t t0 = now_ns(), retries = 0;
  for (long i = 0; i < count; i++) {
    uint64_t t = now_ns();
    memcpy(msg, &t, 8);
    while (zl_shm_send(s, msg, sizeof msg) == ZL_SHM_EFULL) retries++;
    if (gap_us) gap(gap_us);
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  printf("{\"sent\":%ld,\"seconds\":%.6f,\"full_retries\":%llu}\n", count, secs, (unsigned long long)retries);
  zl_shm_close(s);
  return 0;
}
