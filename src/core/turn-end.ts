/**
 * Work done once at the end of an event-loop turn, in the check phase (`setImmediate`), after
 * libuv has run every I/O callback that was ready: the held writes of `src/http/write-batch.ts`
 * go out, and the turn's clock (`clock.ts`) is forgotten. One `setImmediate` per turn serves
 * them all, whichever asks first.
 *
 * Tasks register once, when their module loads; they run in that order.
 */
const tasks: (() => void)[] = [];
let scheduled = false;

/** Adds `task` to what runs at the end of every turn that asked for it (at module load only). */
export function onTurnEnd(task: () => void): void {
  tasks.push(task);
}

/** Asks for the end-of-turn tasks to run at the end of this turn (cheap to call again). */
export function scheduleTurnEnd(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(runTurnEnd);
}

function runTurnEnd(): void {
  // a task that asks again (a write failing into a handler that writes) gets the next turn
  scheduled = false;
  for (let i = 0; i < tasks.length; i++) (tasks[i] as () => void)();
}
