/**
 * The `shm:` section at run time: every bridge opened, and one `/shm` HTTP server per distinct
 * address. Bridges are set up at start and kept across reloads (a changed `shm:` section is
 * reported by the reload and applies at restart: segments outlive config generations).
 */
import type { ShmBridgeConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { ShmBridge, type ShmBridgeSettings } from './bridge.js';
import { ShmHttpServer } from './http.js';

export function bridgeSettings(cfg: ShmBridgeConfig): ShmBridgeSettings {
  return Object.freeze({
    name: cfg.name,
    segment: cfg.segment,
    snapshotCapacity: cfg.snapshot_capacity,
    uploadBuffer: cfg.upload_buffer,
    slots: cfg.slots,
    slotSize: cfg.slot_size,
    create: cfg.create,
    allowOtherOwner: cfg.allow_other_owner,
    mode: Number.parseInt(cfg.mode, 8),
    removeOnExit: cfg.remove_on_exit,
    http: cfg.http,
    wake: cfg.wake,
  });
}

export class ShmBridges {
  readonly bridges = new Map<string, ShmBridge>();
  private readonly servers: ShmHttpServer[] = [];

  constructor(private readonly log: Logger) {}

  async start(configs: readonly ShmBridgeConfig[]): Promise<void> {
    const byAddress = new Map<string, Map<string, ShmBridge>>();
    const limits = new Map<string, number>(); // the largest max_connections of a shared address
    for (const cfg of configs) {
      limits.set(cfg.http, Math.max(limits.get(cfg.http) ?? 0, cfg.max_connections));
      const bridge = new ShmBridge(bridgeSettings(cfg), this.log);
      bridge.open();
      this.bridges.set(cfg.name, bridge);
      const group = byAddress.get(cfg.http) ?? new Map<string, ShmBridge>();
      group.set(cfg.name, bridge);
      byAddress.set(cfg.http, group);
    }
    for (const [address, group] of byAddress) {
      const server = new ShmHttpServer(address, group, this.log, limits.get(address) ?? 1);
      await server.start();
      this.servers.push(server);
      this.log.info({ shm: [...group.keys()], http: `http://${server.address()}/shm` }, 'shm bridge serving');
    }
  }

  /** The bound address of the server serving `name` (port 0 resolved). */
  address(name: string): string {
    const bridge = this.bridges.get(name);
    const server = this.servers.find((s) => bridge !== undefined && s.listen === bridge.settings.http);
    return server?.address() ?? '';
  }

  stats(): Record<string, unknown>[] {
    return [...this.bridges.values()].map((b) => ({ ...b.stats(), http: this.address(b.settings.name) }));
  }

  async close(): Promise<void> {
    for (const s of this.servers) await s.close();
    this.servers.length = 0;
    for (const b of this.bridges.values()) b.close();
    this.bridges.clear();
  }
}
