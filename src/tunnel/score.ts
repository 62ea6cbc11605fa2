/**
 * The agent's choice among relays (the design's adaptive score): lower is better,
 *
 *   score = 0.5 · latency + 0.3 · load + 0.2 · instability
 *
 * latency: the relay's EWMA PING RTT over the slowest candidate's (0–1, relative, so the
 * weights mean the same on a LAN and across continents); load: the relay's event-loop
 * utilisation from HELLO_ACK and periodic `load` REQUESTs (0–1); instability: failed or lost
 * sessions in the last 10 minutes, 5 or more counting as 1. Hysteresis: new streams move off the
 * current relay only when another is better by more than `SWITCH_MARGIN`, so two similar relays
 * do not flap.
 */
export const WEIGHTS = { latency: 0.5, load: 0.3, stability: 0.2 } as const;
export const SWITCH_MARGIN = 0.1;
export const FAILURE_WINDOW_MS = 10 * 60_000;
const FAILURES_FOR_FULL = 5;
/** RTT smoothing, as TCP's SRTT (RFC 6298): 1/8 of each new sample. */
export const RTT_ALPHA = 0.125;

export interface ScoreInput {
  /** EWMA RTT in ms; null before the first PING reply (counted as the slowest). */
  readonly rttMs: number | null;
  /** 0–1. */
  readonly load: number;
  /** Times of recent failures (ms). */
  readonly failures: readonly number[];
}

export function ewma(prev: number | null, sample: number): number {
  return prev === null ? sample : prev + RTT_ALPHA * (sample - prev);
}

export function scores(inputs: readonly ScoreInput[], now = Date.now()): number[] {
  let maxRtt = 0;
  for (const i of inputs) if (i.rttMs !== null && i.rttMs > maxRtt) maxRtt = i.rttMs;
  return inputs.map((i) => {
    const latency = i.rttMs === null || maxRtt === 0 ? (maxRtt === 0 ? 0 : 1) : i.rttMs / maxRtt;
    const recent = i.failures.filter((t) => now - t <= FAILURE_WINDOW_MS).length;
    const instability = Math.min(1, recent / FAILURES_FOR_FULL);
    const load = Math.min(1, Math.max(0, i.load));
    return WEIGHTS.latency * latency + WEIGHTS.load * load + WEIGHTS.stability * instability;
  });
}

/**
 * The index to use among `candidates` (scores, NaN for relays that are not up), keeping
 * `current` unless another is better by more than the margin. -1 when none is up.
 */
export function choose(candidateScores: readonly number[], current: number): number {
  let best = -1;
  for (let i = 0; i < candidateScores.length; i++) {
    const s = candidateScores[i] as number;
    if (Number.isNaN(s)) continue;
    if (best < 0 || s < (candidateScores[best] as number)) best = i;
  }
  if (best < 0) return -1;
  const cur = candidateScores[current];
  if (
    current >= 0 &&
    cur !== undefined &&
    !Number.isNaN(cur) &&
    cur - (candidateScores[best] as number) <= SWITCH_MARGIN
  ) {
    return current;
  }
  return best;
}
