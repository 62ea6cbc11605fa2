/**
 * Follows the name of a served segment. A C program that removes the segment (`zl_shm_unlink`
 * at its exit, say) and creates it again at its next start gets a new file under the same name,
 * while zipline still maps the old one: each side then talks to nobody, with no error anywhere.
 * Once a second the file behind the name is compared with the one mapped; when it was replaced,
 * or removed, the bridge is told (it attaches to the new file, or creates it again).
 *
 * POSIX shared-memory names live in /dev/shm on Linux (the only platform the bridge runs on).
 */
import { statSync } from 'node:fs';

/** How often the name is looked at. */
export const SEGMENT_CHECK_MS = 1_000;

type FileId = { readonly dev: number; readonly ino: number };

export class SegmentWatch {
  private mapped: FileId | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly path: string;

  constructor(
    segment: string,
    private readonly onChange: (now: 'replaced' | 'removed') => void,
  ) {
    this.path = `/dev/shm${segment}`;
  }

  /** The file behind the name now is the one just mapped; checks start (once). */
  markMapped(): void {
    this.mapped = fileId(this.path);
    if (this.mapped === null) {
      // the segment just opened is not where it is looked for: nothing to compare, no following
      // (rather than taking it for removed each second)
      this.stop();
      return;
    }
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.check(), SEGMENT_CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private check(): void {
    const now = fileId(this.path);
    const was = this.mapped;
    if (now !== null && was !== null && now.dev === was.dev && now.ino === was.ino) return;
    this.onChange(now === null ? 'removed' : 'replaced');
  }
}

function fileId(path: string): FileId | null {
  try {
    const s = statSync(path);
    return { dev: s.dev, ino: s.ino };
  } catch {
    return null;
  }
}
