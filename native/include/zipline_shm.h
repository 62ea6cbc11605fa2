/*
 * zipline shared-memory bridge: the C side (plain C11, no dependency on Node).
 *
 *   cc -std=c11 -O2 -Inative/include app.c native/lib/zipline_shm.c -o app
 *
 * One POSIX shared-memory object holds a fixed 4 KiB header and three data areas:
 *   - a snapshot: the latest value (GET/POST semantics), double-buffered, each buffer guarded by
 *     its own sequence counter (a seqlock): readers never block and never see a torn value;
 *     writers hold a pid-stamped lock word that a later writer steals when the owner is dead;
 *   - a ring C -> Node and a ring Node -> C: single-producer/single-consumer, 64-bit head/tail,
 *     power-of-two slot counts; a full ring drops (counted), it never blocks the producer.
 * Layout: docs/SHM.md; every offset is pinned below with _Static_assert and mirrored in
 * src/shm/layout.ts (a test compiles this header and compares).
 */
#ifndef ZIPLINE_SHM_H
#define ZIPLINE_SHM_H

/* C11 atomics; a C++ program including this header sees the same layout as std::atomic
   (same size and representation for these lock-free integer types on every supported ABI) */
#ifdef __cplusplus
#include <atomic>
#include <cstddef>
#include <cstdint>
#define ZL_ATOMIC(T) std::atomic<T>
#define ZL_STATIC_ASSERT(cond, what) static_assert(cond, what)
extern "C" {
#else
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#define ZL_ATOMIC(T) _Atomic T
#define ZL_STATIC_ASSERT(cond, what) _Static_assert(cond, what)
#endif

/* ---- layout (version 1) -------------------------------------------------------------------- */

#define ZL_SHM_MAGIC "ZLSHM\0\0\1"
#define ZL_SHM_VERSION 1u
#define ZL_SHM_HEADER_SIZE 4096u
#define ZL_SHM_BLOCK 128u
/* per snapshot buffer and per ring slot: a 16-byte prefix before the data */
#define ZL_SHM_PREFIX 16u

/* block 0: identity, written once by the creator */
typedef struct {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint32_t snapshot_capacity; /* max snapshot bytes */
  uint32_t ring_slots;        /* per ring, a power of two */
  uint32_t ring_slot_size;    /* bytes per slot, prefix included, a multiple of 16 */
  uint32_t creator_pid;
  uint64_t total_size;
  uint64_t created_unix_ms;
  uint64_t snapshot_offset; /* of buffer 0; buffer 1 follows at + snapshot_stride */
  uint64_t snapshot_stride;
  uint64_t ring_c2n_offset;
  uint64_t ring_n2c_offset;
  uint8_t reserved[48];
} zl_shm_identity;

/* block 1: snapshot writers' side */
typedef struct {
  ZL_ATOMIC(uint32_t) lock;          /* 0, or the pid of the writer holding it */
  ZL_ATOMIC(uint32_t) notify;        /* futex word: bumped on every publish */
  ZL_ATOMIC(uint64_t) lock_start;    /* the holder's process start time (clock ticks since boot) */
  ZL_ATOMIC(uint64_t) version;       /* version of the published snapshot; 0 = none yet */
  ZL_ATOMIC(uint32_t) active;        /* index of the published buffer (0 or 1) */
  uint32_t pad0;
  ZL_ATOMIC(uint64_t) steals;        /* locks taken over from dead writers */
  ZL_ATOMIC(uint64_t) writes;
  uint8_t reserved[80];
} zl_shm_snapshot_writer;

/* a ring's producer side and consumer side (separate blocks) */
typedef struct {
  ZL_ATOMIC(uint64_t) head;          /* slots ever written */
  ZL_ATOMIC(uint32_t) notify;        /* futex word: the low 32 bits of head, for waiters */
  ZL_ATOMIC(uint32_t) pid;           /* producer pid (0 = none attached) */
  ZL_ATOMIC(uint64_t) dropped;       /* messages refused because the ring was full */
  ZL_ATOMIC(uint64_t) heartbeat_ms;  /* producer's last sign of life (unix ms) */
  uint8_t reserved[96];
} zl_shm_ring_producer;

typedef struct {
  ZL_ATOMIC(uint64_t) tail;          /* slots ever consumed */
  ZL_ATOMIC(uint32_t) waiting;       /* 1 while the consumer sleeps on the producer's notify */
  ZL_ATOMIC(uint32_t) pid;           /* consumer pid */
  ZL_ATOMIC(uint64_t) heartbeat_ms;
  uint8_t reserved[104];
} zl_shm_ring_consumer;

/* the 4 KiB header */
typedef struct {
  zl_shm_identity id;                /*    0 */
  zl_shm_snapshot_writer snap;       /*  128 */
  zl_shm_ring_producer c2n_prod;     /*  256: C writes */
  zl_shm_ring_consumer c2n_cons;     /*  384: Node writes */
  zl_shm_ring_producer n2c_prod;     /*  512: Node writes */
  zl_shm_ring_consumer n2c_cons;     /*  640: C writes */
  uint8_t reserved[ZL_SHM_HEADER_SIZE - 6 * ZL_SHM_BLOCK];
} zl_shm_header;

/* the prefix of each snapshot buffer (data follows) */
typedef struct {
  ZL_ATOMIC(uint32_t) seq;   /* odd while being written */
  uint32_t len;
  uint64_t version;
} zl_shm_snapshot_buffer;

/* the prefix of each ring slot (data follows) */
typedef struct {
  uint32_t len;
  uint32_t pad;
  uint64_t seq;           /* the head value this slot was written at */
} zl_shm_slot;

ZL_STATIC_ASSERT(sizeof(zl_shm_identity) == 128, "identity block");
ZL_STATIC_ASSERT(sizeof(zl_shm_snapshot_writer) == 128, "snapshot block");
ZL_STATIC_ASSERT(sizeof(zl_shm_ring_producer) == 128, "producer block");
ZL_STATIC_ASSERT(sizeof(zl_shm_ring_consumer) == 128, "consumer block");
ZL_STATIC_ASSERT(sizeof(zl_shm_header) == ZL_SHM_HEADER_SIZE, "header");
ZL_STATIC_ASSERT(sizeof(zl_shm_snapshot_buffer) == ZL_SHM_PREFIX, "snapshot prefix");
ZL_STATIC_ASSERT(sizeof(zl_shm_slot) == ZL_SHM_PREFIX, "slot prefix");
ZL_STATIC_ASSERT(offsetof(zl_shm_header, snap) == 128, "snap");
ZL_STATIC_ASSERT(offsetof(zl_shm_header, c2n_prod) == 256, "c2n_prod");
ZL_STATIC_ASSERT(offsetof(zl_shm_header, c2n_cons) == 384, "c2n_cons");
ZL_STATIC_ASSERT(offsetof(zl_shm_header, n2c_prod) == 512, "n2c_prod");
ZL_STATIC_ASSERT(offsetof(zl_shm_header, n2c_cons) == 640, "n2c_cons");
ZL_STATIC_ASSERT(sizeof(ZL_ATOMIC(uint64_t)) == 8 && sizeof(ZL_ATOMIC(uint32_t)) == 4, "plain-sized atomics");

/* ---- API ------------------------------------------------------------------------------------ */

typedef struct zl_shm zl_shm;

typedef struct {
  int create;                  /* 1: create when missing (mode 0600 unless `mode`), 0: attach only */
  unsigned mode;               /* permission bits on create; 0 means 0600 */
  uint32_t snapshot_capacity;  /* on create (default 64 KiB); on attach 0 = accept the segment's */
  uint32_t ring_slots;         /* on create (default 1024, a power of two) */
  uint32_t ring_slot_size;     /* on create (default 256, prefix included, multiple of 16) */
  int role;                    /* ZL_SHM_ROLE_C (default) or ZL_SHM_ROLE_NODE: which rings it produces;
                                  ZL_SHM_ROLE_OBSERVER: neither (inspection tools, see below) */
} zl_shm_options;

#define ZL_SHM_ROLE_C 0
#define ZL_SHM_ROLE_NODE 1
/* Attaches without taking a ring end: stamps no pid, and zl_shm_send / zl_shm_recv answer
   ZL_SHM_EINVAL; snapshot reads and the header's figures work as for the other roles
   (`zipline shm inspect` and `create` use it, so that they neither consume messages nor pose as
   a peer). */
#define ZL_SHM_ROLE_OBSERVER 2

/* errors (negative); zl_shm_strerror() describes them */
#define ZL_SHM_OK 0
#define ZL_SHM_ENOENT (-1)      /* no such segment (attach without create) */
#define ZL_SHM_EMAGIC (-2)      /* not a zipline segment */
#define ZL_SHM_EVERSION (-3)    /* another layout version */
#define ZL_SHM_ESIZE (-4)       /* sizes disagree with the segment or the options */
#define ZL_SHM_ETOOBIG (-5)     /* larger than the snapshot capacity or a ring slot */
#define ZL_SHM_EBUSY (-6)       /* the snapshot lock is held by a live writer (after a bounded spin) */
#define ZL_SHM_EFULL (-7)       /* the ring is full: the message was dropped (counted) */
#define ZL_SHM_EEMPTY (-8)      /* nothing to read (no snapshot yet, or an empty ring) */
#define ZL_SHM_ETIMEDOUT (-9)   /* recv waited `timeout_ms` */
#define ZL_SHM_ETRUNC (-10)     /* the caller's buffer is too small; *len_out says how much is needed */
#define ZL_SHM_EINVAL (-11)     /* bad arguments */
#define ZL_SHM_ESYS (-12)       /* a system call failed; errno says which */
#define ZL_SHM_ECONFLICT (-13)  /* write_if: the published version is not the expected one */
#define ZL_SHM_ECORRUPT (-14)   /* snapshot_read: what is published is malformed (a peer wrote outside the protocol) */

/* One handle per thread for the rings (each ring has one producer and one consumer). */
int zl_shm_open(const char *name, const zl_shm_options *opts, zl_shm **out);
int zl_shm_snapshot_write(zl_shm *shm, const void *buf, uint32_t len, uint64_t *version_out);
int zl_shm_snapshot_read(zl_shm *shm, void *buf, uint32_t cap, uint32_t *len_out, uint64_t *version_out);
/* compare-and-set: writes only when the published version is `expected` (0: nothing published yet) */
int zl_shm_snapshot_write_if(zl_shm *shm, const void *buf, uint32_t len, uint64_t expected, uint64_t *version_out);
int zl_shm_send(zl_shm *shm, const void *msg, uint32_t len); /* to the other side's ring */
int zl_shm_recv(zl_shm *shm, void *buf, uint32_t cap, uint32_t *len_out, int timeout_ms);
void zl_shm_close(zl_shm *shm);
int zl_shm_unlink(const char *name);
const char *zl_shm_strerror(int code);
/* ring slots this handle's recv skipped as malformed (wrong seq, a length over the slot) */
uint64_t zl_shm_corrupt(zl_shm *shm);
/* the mapped header, for inspection tools (its identity is the peers' to scribble on) */
zl_shm_header *zl_shm_header_of(zl_shm *shm);
/* the identity as validated at open: the sizes and offsets this handle uses */
const zl_shm_identity *zl_shm_identity_of(zl_shm *shm);
/* for the addon: zl_shm_recv without waiting that also says which sequence it took. `*seq_io`:
   in, the sequence the message must have (UINT64_MAX: any), else EEMPTY and nothing is taken
   (a batch's sequences are consecutive); out, the sequence taken */
int zl_shm__recv_seq(zl_shm *shm, void *buf, uint32_t cap, uint32_t *len_out, uint64_t *seq_io);

#ifdef __cplusplus
}
#endif
#endif
