/**
 * One worker process as the primary sees it: the forked child, its state, and requests to it
 * over IPC, each answered once or failed with `ZL_WORKER_UNRESPONSIVE` after its timeout (or at
 * once when the worker exits with requests outstanding).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type ErrorCode, ZiplineError } from '../errors.js';
import { WORKER_ENV, type WorkerAnswer, type WorkerRequest } from './messages.js';

const ENTRY = fileURLToPath(new URL('./worker-main.js', import.meta.url));

export type WorkerState = 'starting' | 'running' | 'restarting' | 'draining' | 'exited';

/** A request without its id (the process numbers them). */
type Ask = WorkerRequest extends infer R ? (R extends WorkerRequest ? Omit<R, 'id'> : never) : never;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export class WorkerProcess {
  child: ChildProcess | null = null;
  state: WorkerState = 'starting';
  /** Times a new process took this index's place after an unexpected exit. */
  restarts = 0;
  /** Unexpected exits in a row (reset once a worker has run for a while): the backoff exponent. */
  failures = 0;
  startedAt = 0;
  lastExit: string | null = null;
  restartTimer: NodeJS.Timeout | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(readonly index: number) {}

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Forks the worker; `onExit` runs once when it exits (after outstanding requests failed). */
  spawn(onExit: (code: number | null, signal: NodeJS.Signals | null) => void): void {
    const child = fork(ENTRY, [], {
      env: { ...process.env, [WORKER_ENV]: String(this.index) },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child = child;
    this.state = 'starting';
    child.on('message', (m: WorkerAnswer) => this.onAnswer(m));
    child.on('error', () => {}); // a send to a dying worker; its exit is handled below
    child.once('exit', (code, signal) => {
      this.child = null;
      this.failPending('ZL_WORKER_UNRESPONSIVE', `worker ${this.index} exited (${signal ?? `code ${code}`})`);
      onExit(code, signal);
    });
  }

  request(ask: Ask, timeoutMs: number): Promise<unknown> {
    const child = this.child;
    if (child === null || !child.connected) {
      return Promise.reject(
        new ZiplineError('ZL_WORKER_UNRESPONSIVE', `worker ${this.index} is not running (${this.state})`),
      );
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new ZiplineError(
            'ZL_WORKER_UNRESPONSIVE',
            `worker ${this.index} did not answer "${ask.t}" within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      child.send({ ...ask, id });
    });
  }

  /** Ends the CPU profile the worker is taking (no answer: the profile's own comes sooner). */
  stopProfile(): void {
    if (this.child?.connected === true) this.child.send({ t: 'profile-stop' });
  }

  /** Asks the worker to drain and exit (no answer: its exit is the answer). */
  drain(): void {
    this.state = 'draining';
    if (this.child?.connected === true) this.child.send({ t: 'drain' });
  }

  kill(): void {
    this.child?.kill('SIGKILL');
  }

  private onAnswer(m: WorkerAnswer): void {
    const p = this.pending.get(m.id);
    if (p === undefined) return; // answered after its timeout
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.value);
    else p.reject(new ZiplineError(m.code, m.message));
  }

  private failPending(code: ErrorCode, message: string): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ZiplineError(code, message));
    }
    this.pending.clear();
  }
}
