/*
 * l4bench: the load side of `npm run bench -- l4`. Plain C so the measuring tool costs as
 * little as possible and the same for every proxy under test.
 *
 *   l4bench echo-server PORT            TCP echo (a thread per connection)
 *   l4bench sink-server PORT            reads to EOF, answers the byte count (8 bytes), closes
 *   l4bench udp-echo-server PORT        UDP echo
 *   l4bench pingpong HOST PORT N SIZE   N round trips of SIZE bytes on one connection
 *   l4bench bulk HOST PORT BYTES        sends BYTES, waits for the sink's count
 *   l4bench count-server PORT           reads an 8-byte length N, then N bytes; answers the count
 *   l4bench bulkn HOST PORT BYTES       bulk for count-server: no half-close needed (for tunnels
 *                                       such as ss-tunnel that close both ways on EOF)
 *   l4bench udp-pingpong HOST PORT N SIZE
 *   l4bench udp-flood HOST PORT N SIZE WINDOW   N datagrams, at most WINDOW unanswered; datagrams/s
 *
 * Results are printed as one JSON line (latencies in microseconds).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int listen_on(int port, int type) {
  int fd = socket(AF_INET, type, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (type == SOCK_STREAM && listen(fd, 512) < 0) die("listen");
  return fd;
}

static int dial(const char *host, int port, int type) {
  int fd = socket(AF_INET, type, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  int one = 1;
  if (type == SOCK_STREAM) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void *echo_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(fd, buf + off, n - off);
      if (w <= 0) goto out;
      off += w;
    }
  }
out:
  close(fd);
  return NULL;
}

static void *sink_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  static __thread char buf[1 << 18];
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    total += (uint64_t)n;
  }
  if (write(fd, &total, sizeof total) != sizeof total) { /* peer gone */ }
  close(fd);
  return NULL;
}

static void serve(int port, void *(*fn)(void *)) {
  int lfd = listen_on(port, SOCK_STREAM);
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, fn, (void *)(intptr_t)fd);
    pthread_detach(t);
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *kind, double *lat, long n) {
  qsort(lat, n, sizeof *lat, cmp);
  double sum = 0;
  for (long i = 0; i < n; i++) sum += lat[i];
  printf("{\"kind\":\"%s\",\"n\":%ld,\"p50_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f}\n", kind, n, lat[n / 2],
         lat[(long)(n * 0.99)], sum / n);
}

static void pingpong(const char *host, int port, long n, int size, int type) {
  int fd = dial(host, port, type);
  char *buf = calloc(1, size);
  double *lat = malloc(sizeof(double) * n);
  long warm = n / 10;
  if (type == SOCK_DGRAM) {
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  for (long i = -warm; i < n; i++) {
    double t0 = now_us();
    if (write(fd, buf, size) != size) die("write");
    for (int got = 0; got < size;) {
      ssize_t r = read(fd, buf + got, size - got);
      if (r <= 0) die("read");
      got += r;
    }
    if (i >= 0) lat[i] = now_us() - t0;
  }
  report(type == SOCK_DGRAM ? "udp-pingpong" : "pingpong", lat, n);
  close(fd);
}

static void *count_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  static __thread char buf[1 << 18];
  uint64_t want = 0, total = 0;
  size_t have = 0;
  while (have < sizeof want) {
    ssize_t n = read(fd, (char *)&want + have, sizeof want - have);
    if (n <= 0) goto out;
    have += (size_t)n;
  }
  while (total < want) {
    size_t ask = want - total < sizeof buf ? (size_t)(want - total) : sizeof buf;
    ssize_t n = read(fd, buf, ask);
    if (n <= 0) break;
    total += (uint64_t)n;
  }
  if (write(fd, &total, sizeof total) != sizeof total) { /* peer gone */ }
out:
  close(fd);
  return NULL;
}

static void bulkn(const char *host, int port, uint64_t bytes) {
  int fd = dial(host, port, SOCK_STREAM);
  size_t chunk = 1 << 18;
  char *buf = calloc(1, chunk);
  double t0 = now_us();
  if (write(fd, &bytes, sizeof bytes) != sizeof bytes) die("write length");
  for (uint64_t sent = 0; sent < bytes;) {
    size_t want = bytes - sent < chunk ? (size_t)(bytes - sent) : chunk;
    ssize_t w = write(fd, buf, want);
    if (w <= 0) die("write");
    sent += (uint64_t)w;
  }
  uint64_t total = 0;
  if (read(fd, &total, sizeof total) != sizeof total) die("read count");
  double secs = (now_us() - t0) / 1e6;
  printf("{\"kind\":\"bulk\",\"bytes\":%llu,\"received\":%llu,\"seconds\":%.4f,\"mb_s\":%.1f}\n",
         (unsigned long long)bytes, (unsigned long long)total, secs, bytes / secs / 1e6);
  close(fd);
}

static void bulk(const char *host, int port, uint64_t bytes) {
  int fd = dial(host, port, SOCK_STREAM);
  size_t chunk = 1 << 18;
  char *buf = calloc(1, chunk);
  double t0 = now_us();
  for (uint64_t sent = 0; sent < bytes;) {
    size_t want = bytes - sent < chunk ? (size_t)(bytes - sent) : chunk;
    ssize_t w = write(fd, buf, want);
    if (w <= 0) die("write");
    sent += (uint64_t)w;
  }
  shutdown(fd, SHUT_WR);
  uint64_t total = 0;
  if (read(fd, &total, sizeof total) != sizeof total) die("read count");
  double secs = (now_us() - t0) / 1e6;
  printf("{\"kind\":\"bulk\",\"bytes\":%llu,\"received\":%llu,\"seconds\":%.4f,\"mb_s\":%.1f}\n",
         (unsigned long long)bytes, (unsigned long long)total, secs, bytes / secs / 1e6);
  close(fd);
}

/* Keeps up to `window` datagrams in flight; a reply frees a slot. A lost datagram would stall
   the window, so a 1 s receive timeout ends the run and reports how many came back. */
static void udp_flood(const char *host, int port, long n, int size, int window) {
  int fd = dial(host, port, SOCK_DGRAM);
  struct timeval tv = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char *buf = calloc(1, size);
  long sent = 0, got = 0;
  double t0 = now_us();
  while (got < n) {
    while (sent < n && sent - got < window) {
      if (write(fd, buf, size) != size) die("write");
      sent++;
    }
    if (read(fd, buf, size) <= 0) break;
    got++;
  }
  double secs = (now_us() - t0) / 1e6;
  printf("{\"kind\":\"udp-flood\",\"sent\":%ld,\"received\":%ld,\"seconds\":%.4f,\"dgrams_s\":%.0f}\n", sent, got, secs,
         got / secs);
  close(fd);
}

static void udp_echo(int port) {
  int fd = listen_on(port, SOCK_DGRAM);
  char buf[65536];
  for (;;) {
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n >= 0) sendto(fd, buf, n, 0, (struct sockaddr *)&from, len);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top of l4bench.c\n");
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "echo-server")) serve(atoi(argv[2]), echo_conn);
  else if (!strcmp(cmd, "sink-server")) serve(atoi(argv[2]), sink_conn);
  else if (!strcmp(cmd, "count-server")) serve(atoi(argv[2]), count_conn);
  else if (!strcmp(cmd, "bulkn") && argc == 5) bulkn(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10));
  else if (!strcmp(cmd, "udp-echo-server")) udp_echo(atoi(argv[2]));
  else if (!strcmp(cmd, "pingpong") && argc == 6) pingpong(argv[2], atoi(argv[3]), atol(argv[4]), atoi(argv[5]), SOCK_STREAM);
  else if (!strcmp(cmd, "udp-pingpong") && argc == 6) pingpong(argv[2], atoi(argv[3]), atol(argv[4]), atoi(argv[5]), SOCK_DGRAM);
  else if (!strcmp(cmd, "udp-flood") && argc == 7) udp_flood(argv[2], atoi(argv[3]), atol(argv[4]), atoi(argv[5]), atoi(argv[6]));
  else if (!strcmp(cmd, "bulk") && argc == 5) bulk(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10));
  else {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  return 0;
}
