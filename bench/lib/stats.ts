/** Medians with their spread, as testing.md asks: quote the median of 3 and the min–max beside it. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  const v = [...values].sort((a, b) => a - b);
  return {
    median: v[Math.floor(v.length / 2)] ?? Number.NaN,
    min: v[0] ?? Number.NaN,
    max: v[v.length - 1] ?? Number.NaN,
  };
}

export function fmt(s: Spread | undefined, digits = 1): string {
  if (s === undefined || Number.isNaN(s.median)) return '—';
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
}

export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '—';
  return `${(a / b).toFixed(2)}×`;
}
