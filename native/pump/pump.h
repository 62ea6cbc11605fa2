/*
 * Shared by the native data-path thread's parts: pump.c (the thread, the JS binding, TCP splice)
 * and udp.c (the UDP relay). One epoll thread owns all data-path state; JavaScript talks to it
 * through a command queue (+ eventfd) and hears back through one threadsafe function.
 */
#ifndef ZIPLINE_PUMP_H
#define ZIPLINE_PUMP_H
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/socket.h>

/* what an epoll registration points at */
enum { TAG_CMD = 0, TAG_TCP = 1, TAG_UDP_LISTENER = 2, TAG_UDP_SESSION = 3, TAG_ACCEPT = 4, TAG_BODY = 5 };
typedef struct tag {
  int kind;
  void *obj; /* NULL once the owner finished (events already fetched in this batch are skipped) */
} tag_t;

/* events to JavaScript (mirrored in src/l4/native-pump.ts) */
enum { EV_TCP_DONE = 0, EV_UDP_NEW = 1, EV_UDP_END = 2, EV_ACCEPTED = 3, EV_BODY_DONE = 4, EV_ACCEPT_CLOSED = 5, EV_ACCEPT_PAUSED = 6 };
typedef struct {
  int type;
  uint32_t id;  /* TCP connection id, UDP session id, or an accepted fd */
  uint32_t lid; /* UDP listener id, or the acceptor's */
  int reason;
  int err;
  double n[4];
  char ip[64]; /* a new UDP client's address, an accepted connection's peer ("" if not IP) */
  int port;
} event_t;

/* commands from JavaScript */
enum {
  CMD_TCP_ADD = 1,
  CMD_TCP_CANCEL,
  CMD_UDP_LISTEN,
  CMD_UDP_ACCEPT,
  CMD_UDP_REFUSE,
  CMD_UDP_END,
  CMD_UDP_STOP_ACCEPTING,
  CMD_UDP_UPDATE,
  CMD_UDP_CLOSE,
  CMD_ACCEPT_ADD,
  CMD_ACCEPT_REMOVE,
  CMD_BODY_ADD,
  CMD_BODY_CANCEL,
};
typedef struct cmd {
  int kind;
  uint32_t id, lid;
  int fa, fb;
  uint32_t u[4];
  char ip[64];
  int port;
  struct cmd *next;
} cmd_t;

extern int pump_ep;
uint64_t pump_now_ms(void);
void pump_post(event_t *ev); /* takes ownership of a malloc'd event */
void pump_defer_free(void *p); /* freed after the current epoll batch */
void pump_lock(void);   /* the lock JS-thread readers of shared state take */
void pump_unlock(void);

/* udp.c */
void udp_command(cmd_t *m);
void udp_event(tag_t *t, uint32_t events);
void udp_sweep(uint64_t now);
int udp_counters(uint32_t lid, double out[9]);

/* accept.c */
void accept_command(cmd_t *m);
void accept_event(tag_t *t);
void accept_sweep(uint64_t now); /* watches again the sockets paused for want of descriptors */

/* body.c */
void body_command(cmd_t *m);
void body_event(tag_t *t);
void body_sweep(uint64_t now);
#endif
