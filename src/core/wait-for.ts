/**
 * Resolves when `done()` holds or after `ms`, checked every 10 ms: for conditions no event
 * announces (a drain waiting for connections to close; not a hot path).
 */
export function waitFor(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const check = (): void => {
      if (done() || Date.now() >= deadline) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}
