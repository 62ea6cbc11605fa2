/**
 * What the primary and its workers say to each other over the fork() IPC channel (structured
 * clone: `serialization: 'advanced'`). Requests carry an `id`; the worker answers each exactly
 * once with the same `id`, a value or a coded error.
 *
 *   primary → worker   start { config }         → answer: listener addresses, or the start error
 *                      reload { config }        → answer: the worker's ReloadReport
 *                      stats | metrics | ready  → answer: Runtime.localStats() / metrics JSON / readiness
 *                      profile { seconds }      → answer: a .cpuprofile (JSON text)
 *                      profile-stop             → (no answer) the profile being taken ends now (its
 *                                                 client went away; its answer still comes)
 *                      close-sockets            → answer: null once its listening sockets are closed
 *                                                 (it serves on; every worker's close before any drains)
 *                      drain                    → (no answer) the worker drains and exits 0
 */
import type { ValidConfig } from '../config/schema.js';
import type { ErrorCode } from '../errors.js';

export type WorkerRequest =
  | { readonly id: number; readonly t: 'start'; readonly config: ValidConfig }
  | { readonly id: number; readonly t: 'reload'; readonly config: ValidConfig }
  | { readonly id: number; readonly t: 'stats' | 'metrics' | 'ready' | 'close-sockets' }
  | { readonly id: number; readonly t: 'profile'; readonly seconds: number };

export type WorkerCommand = WorkerRequest | { readonly t: 'drain' } | { readonly t: 'profile-stop' };

export type WorkerAnswer =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly code: ErrorCode; readonly message: string };

/** The environment variable a worker process is started with: its index, 0…N-1. */
export const WORKER_ENV = 'ZIPLINE_WORKER_INDEX';
