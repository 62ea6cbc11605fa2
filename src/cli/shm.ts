/** `zipline shm create|inspect|rm NAME`: manage segments from the shell (docs/SHM.md). */
import { parseSize } from '../config/units.js';
import { isZiplineError, ZiplineError } from '../errors.js';
import { ShmBridge } from '../shm/bridge.js';
import { SHM_ERRORS, shmLayoutProblems } from '../shm/layout.js';
import { loadShm } from '../shm/native.js';
import { EXIT } from './exit.js';

export interface ShmCreateOptions {
  capacity: string;
  slots: string;
  slotSize: string;
  mode: string;
}

function segmentName(name: string): string {
  const n = name.startsWith('/') ? name : `/${name}`;
  if (!/^\/[A-Za-z0-9_.-]{1,200}$/.test(n))
    throw new ZiplineError('ZL_SHM_ATTACH', `bad segment name ${name}`);
  return n;
}

function open(name: string, create: boolean, o?: ShmCreateOptions): ShmBridge {
  const size = (text: string, what: string): number => {
    const v = parseSize(text);
    if (v === undefined) throw new ZiplineError('ZL_SHM_ATTACH', `bad ${what} "${text}"`);
    return v;
  };
  let layout = { capacity: 0, slots: 0, slotSize: 0, mode: 0o600 }; // inspect: whatever the segment has
  if (o !== undefined) {
    layout = {
      capacity: size(o.capacity, 'capacity'),
      slots: /^\d+$/.test(o.slots) ? Number(o.slots) : Number.NaN,
      slotSize: size(o.slotSize, 'slot size'),
      mode: /^0?[0-7]{3}$/.test(o.mode) ? Number.parseInt(o.mode, 8) : Number.NaN,
    };
    // the same limits as the config's shm section
    const problems = shmLayoutProblems(layout.capacity, layout.slots, layout.slotSize);
    if (Number.isNaN(layout.mode)) problems.push(`mode: an octal mode such as 0600, not "${o.mode}"`);
    if (problems.length > 0) throw new ZiplineError('ZL_SHM_ATTACH', problems.join('; '));
  }
  const bridge = new ShmBridge({
    name: 'cli',
    segment: segmentName(name),
    snapshotCapacity: layout.capacity,
    uploadBuffer: 0, // no /shm HTTP API here
    slots: layout.slots,
    slotSize: layout.slotSize,
    create,
    mode: layout.mode,
    removeOnExit: false,
    http: '',
    wake: 'futex',
  });
  // an observer: inspecting a segment must not consume what C sent for zipline
  bridge.open('observe');
  return bridge;
}

export function shmCommand(action: string, name: string, opts: ShmCreateOptions): number {
  try {
    if (action === 'rm') {
      const r = loadShm().unlink(segmentName(name));
      if (r === SHM_ERRORS.enoent) {
        process.stderr.write(`zipline: no segment ${segmentName(name)}\n`);
        return EXIT.config;
      }
      process.stdout.write(`removed ${segmentName(name)}\n`);
      return EXIT.ok;
    }
    if (action !== 'create' && action !== 'inspect') {
      process.stderr.write(`zipline shm: unknown action "${action}" (create, inspect, rm)\n`);
      return EXIT.usage;
    }
    const bridge = open(name, action === 'create', action === 'create' ? opts : undefined);
    try {
      process.stdout.write(`${JSON.stringify(bridge.stats(), null, 2)}\n`);
    } finally {
      bridge.close();
    }
    return EXIT.ok;
  } catch (err) {
    if (!isZiplineError(err)) throw err;
    process.stderr.write(`zipline: ${err.code}: ${err.message}\n`);
    return err.code === 'ZL_SHM_UNAVAILABLE' ? EXIT.start : EXIT.config;
  }
}
