/**
 * One address of an upstream server: the unit the balancers pick, with its counters and its
 * passive and active health. A server written as a host name becomes one endpoint per address.
 *
 * Passive health follows nginx `max_fails`/`fail_timeout`: `maxFails` failures within
 * `failTimeout` take the endpoint out for `failTimeout`; afterwards it is `probing` and the next
 * outcome decides (a failure takes it out again at once, a success clears it).
 */
import { formatHostPort } from '../config/units.js';

export type EndpointState = 'up' | 'down' | 'probing' | 'unhealthy';

/** Smoothing for latency EWMAs (per sample). */
const LATENCY_ALPHA = 0.3;
/** Decay of the failure EWMA per outcome (0 = success, 1 = failure). */
const FAILURE_ALPHA = 0.2;

export interface EndpointSettings {
  readonly weight: number;
  readonly maxFails: number;
  readonly failTimeoutMs: number;
  readonly maxConnections: number;
  /** Picked only when no other server can be (nginx `backup`). */
  readonly backup: boolean;
}

export class Endpoint {
  /** `host:port` as configured (the server entry this endpoint came from). */
  readonly server: string;
  /** The resolved IP address. */
  readonly ip: string;
  readonly port: number;
  /** `ip:port`, the label used in metrics and logs. */
  readonly address: string;
  settings: EndpointSettings;
  // counters
  active = 0;
  total = 0;
  failures = 0;
  // passive health
  failCount = 0;
  failWindowStart = 0;
  downUntil = 0;
  probing = false;
  /** When true, passive marking is disabled (a lone server is never marked down). */
  lone = false;
  // active health: undefined while no checker runs
  activeHealthy = true;
  checkPasses = 0;
  checkFails = 0;
  lastCheckError: string | null = null;
  // adaptive inputs
  ewmaLatencyMs = 0;
  latencySamples = 0;
  failureEwma = 0;
  // smooth weighted round robin state (nginx)
  currentWeight = 0;

  constructor(server: string, ip: string, port: number, settings: EndpointSettings) {
    this.server = server;
    this.ip = ip;
    this.port = port;
    this.address = formatHostPort(ip, port);
    this.settings = settings;
  }

  get weight(): number {
    return this.settings.weight;
  }

  /** Healthy and not passively marked down (ignores connection limits). */
  isUp(now: number): boolean {
    return this.activeHealthy && (this.lone || this.downUntil <= now);
  }

  hasCapacity(): boolean {
    return this.settings.maxConnections === 0 || this.active < this.settings.maxConnections;
  }

  state(now: number): EndpointState {
    if (!this.activeHealthy) return 'unhealthy';
    if (!this.lone && this.downUntil > now) return 'down';
    return this.probing ? 'probing' : 'up';
  }

  acquire(): void {
    this.active++;
    this.total++;
  }

  release(): void {
    this.active--;
  }

  /** A successful connect or response; `latencyMs` feeds the adaptive balancer. */
  recordSuccess(latencyMs: number): void {
    this.probing = false;
    this.failCount = 0;
    this.failureEwma *= 1 - FAILURE_ALPHA;
    this.ewmaLatencyMs =
      this.latencySamples === 0
        ? latencyMs
        : this.ewmaLatencyMs + LATENCY_ALPHA * (latencyMs - this.ewmaLatencyMs);
    this.latencySamples++;
  }

  /** A failed attempt (connect failure, timeout, reset before any reply). */
  recordFailure(now: number): void {
    this.failures++;
    this.failureEwma += FAILURE_ALPHA * (1 - this.failureEwma);
    const { maxFails, failTimeoutMs } = this.settings;
    if (maxFails === 0 || this.lone) return;
    if (this.probing) {
      this.markDown(now);
      return;
    }
    if (now - this.failWindowStart > failTimeoutMs) {
      this.failWindowStart = now;
      this.failCount = 0;
    }
    this.failCount++;
    if (this.failCount >= maxFails) this.markDown(now);
  }

  private markDown(now: number): void {
    this.downUntil = now + this.settings.failTimeoutMs;
    this.failCount = 0;
    this.probing = true;
  }
}
