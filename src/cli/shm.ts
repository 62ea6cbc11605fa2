/** `zipline shm create|inspect|rm NAME`: manage segments from the shell (docs/SHM.md). */
import { parseSize } from '../config/units.js';
import { isZiplineError, ZiplineError } from '../errors.js';
import { ShmBridge } from '../shm/bridge.js';
import { SHM_ERRORS } from '../shm/layout.js';
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
  const bridge = new ShmBridge({
    name: 'cli',
    segment: segmentName(name),
    snapshotCapacity: o === undefined ? 0 : size(o.capacity, 'capacity'),
    slots: o === undefined ? 0 : Number(o.slots),
    slotSize: o === undefined ? 0 : size(o.slotSize, 'slot size'),
    create,
    mode: o === undefined ? 0o600 : Number.parseInt(o.mode, 8),
    removeOnExit: false,
    http: '',
    wake: 'futex',
  });
  bridge.open();
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
