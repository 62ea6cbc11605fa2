/**
 * systemd's service notification protocol (sd_notify(3)) for `zipline run` under a unit with
 * `Type=notify` (or `notify-reload`), as HAProxy and Caddy speak it: systemd sets
 * `NOTIFY_SOCKET`, and zipline says `READY=1` once every listener is bound (so `systemctl start`
 * returns when it serves and units ordered after it start then), `RELOADING=1` … `READY=1` around
 * a reload, `STOPPING=1` when it drains, `MAINPID=N` when an upgrade hands the service to a new
 * process (so systemd follows it instead of ending the service when the old one exits), `STATUS=`
 * lines for `systemctl status`, and `WATCHDOG=1` at half of `WatchdogSec=` while the event loop
 * turns. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent. Linux only (the addon sends
 * the datagram: Node has no AF_UNIX datagram sockets); docs/OPERATIONS.md, "systemd".
 */
import type { Logger } from '../log/logger.js';
import { type ProcBinding, procBinding } from './proc-binding.js';

/** Tells systemd what the service is doing; every method is a no-op when not under systemd. */
export class ServiceNotifier {
  private watchdog: NodeJS.Timeout | null = null;
  private failed = false;

  private constructor(
    private readonly socketPath: string,
    private readonly binding: ProcBinding,
    private readonly log: Logger,
  ) {}

  /** From the environment: null when `NOTIFY_SOCKET` is unset, or (logged) when the addon that sends is not built. */
  static fromEnv(env: NodeJS.ProcessEnv, log: Logger): ServiceNotifier | null {
    const socketPath = env.NOTIFY_SOCKET ?? '';
    if (socketPath === '') return null;
    const binding = procBinding();
    if (binding === null) {
      log.warn(
        { notify_socket: socketPath },
        'NOTIFY_SOCKET is set but the native module is not built (Linux, npm install): systemd is not told when zipline is ready; use Type=simple or build it',
      );
      return null;
    }
    return new ServiceNotifier(socketPath, binding, log);
  }

  /** Serving (at start, and after a reload). */
  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${status}`);
  }

  /** A reload begins (`Type=notify-reload` waits for the `READY=1` after it). */
  reloading(): void {
    this.send(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}\nSTATUS=reloading`);
  }

  stopping(): void {
    this.stopWatchdog();
    this.send('STOPPING=1\nSTATUS=draining');
  }

  /** An upgrade: `pid` serves now; systemd follows it (this process drains and exits, its watchdog off). */
  mainPid(pid: number): void {
    this.stopWatchdog();
    this.send(`MAINPID=${pid}\nSTATUS=serving (process ${pid}, upgraded from ${process.pid})`);
  }

  /**
   * `WatchdogSec=`: pings at half the interval systemd set (`WATCHDOG_USEC`), meant for this
   * process (`WATCHDOG_PID`, or the process an upgrade replaced). A stalled event loop stops them.
   */
  startWatchdog(env: NodeJS.ProcessEnv, successor: boolean): void {
    const usec = Number(env.WATCHDOG_USEC ?? '');
    const pid = env.WATCHDOG_PID === undefined ? process.pid : Number(env.WATCHDOG_PID);
    if (!Number.isFinite(usec) || usec <= 0 || (pid !== process.pid && !successor)) return;
    this.watchdog = setInterval(() => this.send('WATCHDOG=1'), Math.max(1, Math.floor(usec / 2000)));
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  private send(text: string): void {
    // one assignment per line, the last ended too (systemd takes either; a reader of several sees lines)
    const errno = this.binding.notify(this.socketPath, `${text}\n`);
    if (errno === 0 || this.failed) return;
    this.failed = true; // logged once: a watchdog would repeat it every few seconds
    this.log.warn(
      { notify_socket: this.socketPath, errno },
      `could not notify systemd (${text.split('\n')[0]}): errno ${errno}`,
    );
  }
}
