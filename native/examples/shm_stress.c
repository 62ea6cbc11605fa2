/*
 * Test tool for the shared-memory library (driven by test/integration/shm-c.test.ts):
 *   shm_stress write NAME SECONDS [varying]  a fast snapshot writer (payload: every 8-byte word = version;
 *                                            varying: 1 + version % 512 words, else always 512)
 *   shm_stress read NAME SECONDS checked|unchecked   counts reads and torn reads; prints JSON
 *   shm_stress hold NAME                     takes the writer lock, starts a write, stops forever
 *   shm_stress put NAME TEXT                 one snapshot write; prints JSON with the time it took
 *   shm_stress get NAME                      one snapshot read; prints JSON
 *   shm_stress ring NAME COUNT               sends COUNT messages C -> Node
 *   shm_stress flood NAME COUNT SIZE         sends COUNT messages of SIZE bytes C -> Node, waiting
 *                                            while the ring is full (none dropped)
 *   shm_stress attach NAME CAPACITY          attach only, expecting that snapshot capacity; prints the result
 *   shm_stress scribble NAME WHAT            a peer writing outside the protocol (WHAT below); prints JSON
 *   shm_stress replace NAME CAP SLOTS SLOT   removes the segment and creates another of those sizes at once
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zipline_shm.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

int zl_shm__snapshot_read_unchecked(zl_shm *s, void *out, uint32_t cap, uint32_t *len_out, uint64_t *version_out);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* attaches whatever layout the segment has; creates a small one when it is missing */
static zl_shm *open_or_die(const char *name) {
  zl_shm_options any = {.create = 0};
  zl_shm *s;
  int r = zl_shm_open(name, &any, &s);
  if (r == ZL_SHM_OK) return s;
  zl_shm_options o = {.create = 1, .snapshot_capacity = 4096, .ring_slots = 64, .ring_slot_size = 128};
  if (r == ZL_SHM_ENOENT) r = zl_shm_open(name, &o, &s);
  if (r != ZL_SHM_OK) {
    fprintf(stderr, "open: %s\n", zl_shm_strerror(r));
    exit(1);
  }
  return s;
}

static void wake(_Atomic uint32_t *word) {
#if defined(__linux__)
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
#else
  (void)word;
#endif
}

/* What a buggy or hostile C peer can do to the segment, straight through the header (never the
   library), for test/integration/shm-hostile.test.ts:
     identity   ring_slot_size, snapshot_capacity and snapshot_stride rewritten to huge values
     active     the published-buffer index set to 7
     snaplen    the published buffer's length set over the capacity, then a new version announced
     snapodd    the published buffer's sequence left odd with the lock free, then announced
     slot-len   one C -> Node message whose length is over the slot
     slot-seq   one C -> Node message whose seq is not its position
     head-jump  the C -> Node head moved 1000 past the tail (a ring holds far fewer) */
static int scribble(zl_shm *s, const char *what) {
  zl_shm_header *h = zl_shm_header_of(s);
  const zl_shm_identity *id = zl_shm_identity_of(s);
  zl_shm_snapshot_buffer *pub = (zl_shm_snapshot_buffer *)((uint8_t *)h + id->snapshot_offset +
                                                           (atomic_load(&h->snap.active) & 1u) * id->snapshot_stride);
  uint64_t head = atomic_load(&h->c2n_prod.head);
  zl_shm_slot *slot = (zl_shm_slot *)((uint8_t *)h + id->ring_c2n_offset + (head & (id->ring_slots - 1u)) * id->ring_slot_size);
  if (strcmp(what, "identity") == 0) {
    h->id.ring_slot_size = 0xfffffff0u;
    h->id.snapshot_capacity = 0xfffffff0u;
    h->id.snapshot_stride = (uint64_t)1 << 40;
  } else if (strcmp(what, "active") == 0) {
    atomic_store(&h->snap.active, 7u);
  } else if (strcmp(what, "snaplen") == 0 || strcmp(what, "snapodd") == 0) {
    if (what[4] == 'l') pub->len = 0x7fffffffu;
    else atomic_fetch_add(&pub->seq, 1u);
    atomic_fetch_add(&h->snap.version, 1u);
    atomic_fetch_add(&h->snap.notify, 1u);
    wake(&h->snap.notify);
  } else if (strcmp(what, "slot-len") == 0 || strcmp(what, "slot-seq") == 0 || strcmp(what, "head-jump") == 0) {
    int jump = strcmp(what, "head-jump") == 0;
    slot->len = what[5] == 'l' ? 0xfffffff0u : 3;
    slot->seq = what[5] == 's' ? head + 12345 : head;
    memcpy((uint8_t *)(slot + 1), "bad", 3);
    atomic_store(&h->c2n_prod.head, head + (jump ? 1000 : 1));
    atomic_store(&h->c2n_prod.notify, (uint32_t)(head + (jump ? 1000 : 1)));
    wake(&h->c2n_prod.notify);
  } else {
    return 2;
  }
  printf("{\"scribbled\":\"%s\"}\n", what);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *cmd = argv[1];
  if (strcmp(cmd, "attach") == 0) {
    zl_shm_options o = {.create = 0, .snapshot_capacity = (uint32_t)atoi(argv[3])};
    zl_shm *a = NULL;
    int r = zl_shm_open(argv[2], &o, &a);
    printf("{\"result\":%d,\"error\":\"%s\"}\n", r, zl_shm_strerror(r));
    if (a) zl_shm_close(a);
    return 0;
  }
  if (strcmp(cmd, "replace") == 0 && argc >= 6) {
    zl_shm_unlink(argv[2]);
    zl_shm_options o = {.create = 1, .snapshot_capacity = (uint32_t)atoi(argv[3]),
                        .ring_slots = (uint32_t)atoi(argv[4]), .ring_slot_size = (uint32_t)atoi(argv[5])};
    zl_shm *a = NULL;
    int r = zl_shm_open(argv[2], &o, &a);
    printf("{\"result\":%d}\n", r);
    if (a) zl_shm_close(a);
    return 0;
  }
  zl_shm *s = open_or_die(argv[2]);
  if (strcmp(cmd, "scribble") == 0) return argc < 4 ? 2 : scribble(s, argv[3]);
  static uint64_t buf[512];
  if (strcmp(cmd, "write") == 0) {
    double end = now_s() + atof(argv[3]);
    int varying = argc > 4 && strcmp(argv[4], "varying") == 0;
    uint64_t writes = 0;
    while (now_s() < end) {
      uint64_t v = writes + 1;
      uint32_t words = varying ? 1u + (uint32_t)(v % 512u) : 512u;
      for (uint32_t i = 0; i < words; i++) buf[i] = v;
      if (zl_shm_snapshot_write(s, buf, words * 8u, NULL) == ZL_SHM_OK) writes++;
    }
    printf("{\"writes\":%llu}\n", (unsigned long long)writes);
  } else if (strcmp(cmd, "read") == 0) {
    int checked = strcmp(argv[4], "checked") == 0;
    double end = now_s() + atof(argv[3]);
    uint64_t reads = 0, torn = 0;
    while (now_s() < end) {
      uint32_t len = 0;
      uint64_t version = 0;
      int r = checked ? zl_shm_snapshot_read(s, buf, sizeof buf, &len, &version)
                      : zl_shm__snapshot_read_unchecked(s, buf, sizeof buf, &len, &version);
      if (r != ZL_SHM_OK) continue;
      reads++;
      for (uint32_t i = 1; i < len / 8; i++) {
        if (buf[i] != buf[0]) {
          torn++;
          break;
        }
      }
    }
    printf("{\"reads\":%llu,\"torn\":%llu}\n", (unsigned long long)reads, (unsigned long long)torn);
  } else if (strcmp(cmd, "hold") == 0) {
    /* take the lock and die mid-write: what a crash looks like to the next writer */
    zl_shm_header *h = zl_shm_header_of(s);
    uint32_t expected = 0;
    if (!atomic_compare_exchange_strong(&h->snap.lock, &expected, (uint32_t)getpid())) return 1;
    uint32_t next = 1u - atomic_load(&h->snap.active);
    zl_shm_snapshot_buffer *b =
        (zl_shm_snapshot_buffer *)((uint8_t *)h + h->id.snapshot_offset + next * h->id.snapshot_stride);
    atomic_fetch_add(&b->seq, 1u); /* odd: a write in progress */
    memset((uint8_t *)(b + 1), 'X', 100);
    printf("holding\n");
    fflush(stdout);
    for (;;) pause();
  } else if (strcmp(cmd, "put") == 0) {
    double t0 = now_s();
    uint64_t v = 0;
    int r = zl_shm_snapshot_write(s, argv[3], (uint32_t)strlen(argv[3]), &v);
    printf("{\"result\":%d,\"version\":%llu,\"ms\":%.3f,\"steals\":%llu}\n", r, (unsigned long long)v,
           (now_s() - t0) * 1000, (unsigned long long)atomic_load(&zl_shm_header_of(s)->snap.steals));
  } else if (strcmp(cmd, "get") == 0) {
    char text[4096];
    uint32_t len = 0;
    uint64_t v = 0;
    int r = zl_shm_snapshot_read(s, text, sizeof text - 1, &len, &v);
    text[r == ZL_SHM_OK ? len : 0] = 0;
    printf("{\"result\":%d,\"version\":%llu,\"text\":\"%s\"}\n", r, (unsigned long long)v, text);
  } else if (strcmp(cmd, "ring") == 0) {
    int n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
      char m[32];
      int len = snprintf(m, sizeof m, "m%d", i);
      zl_shm_send(s, m, (uint32_t)len);
    }
    printf("{\"sent\":%d}\n", n);
  } else if (strcmp(cmd, "flood") == 0) {
    int n = atoi(argv[3]);
    int size = atoi(argv[4]);
    char m[4096];
    if (size < 16 || size > (int)sizeof m) return 2;
    memset(m, 'x', sizeof m);
    for (int i = 0; i < n; i++) {
      int len = snprintf(m, sizeof m, "m%d ", i);
      m[len] = 'x'; /* the rest of the message stays padding */
      int r;
      while ((r = zl_shm_send(s, m, (uint32_t)size)) == ZL_SHM_EFULL) usleep(20);
      if (r != ZL_SHM_OK) {
        printf("{\"error\":\"%s\",\"sent\":%d}\n", zl_shm_strerror(r), i);
        return 1;
      }
    }
    printf("{\"sent\":%d}\n", n);
  }
  zl_shm_close(s);
  return 0;
}
