/**
 * The agent: keeps a session with every configured relay (`RelayLink`), sends each new stream to
 * the relay with the best adaptive score (src/tunnel/score.ts), and runs the local entries —
 * TCP/UDP forwards, SOCKS5, HTTP proxy — through it. Entries never stop accepting while relays
 * come and go: a new connection waits up to `connect_timeout` for some relay to be up. An OPEN
 * that dies with its session before OPEN_ACK (no byte was delivered) is tried once on another
 * relay.
 */
import type { TunnelAgentConfig } from '../config/schema.js';
import { sameConfig as same } from '../config/valid.js';
import { isZiplineError } from '../errors.js';
import type { L4Context } from '../l4/context.js';
import { metrics } from '../metrics/catalog.js';
import { type Dialer, dialError, type UdpChannel } from '../proxy/dialer.js';
import { type Destination, encodeAddress, formatDestination } from './address.js';
import { AgentEntries, type EntriesReport } from './agent-entries.js';
import { TunnelUdpChannel } from './agent-udp.js';
import { zstdAvailable } from './compression.js';
import { OPEN_KIND, OPEN_STATUS } from './constants.js';
import { engine } from './native/binding.js';
import { RelayLink } from './relay-link.js';
import type { RelayRef } from './relay-trust.js';
import { choose, scores } from './score.js';
import type { SessionApi, SessionStream } from './session-api.js';

export class TunnelAgent implements Dialer {
  cfg: TunnelAgentConfig;
  /** The relay list's links, in config order (a reload may replace the list: `setRelays`). */
  links: RelayLink[];
  /** Links that left the list at a reload, until their sessions' last streams ended. */
  private readonly retiredLinks = new Set<RelayLink>();
  private preferred = -1;
  private readonly entries: AgentEntries;
  private readonly waiters = new Set<() => void>();
  private readonly scoreTimer: NodeJS.Timeout;
  private readonly streamsGauge = metrics.tunnelStreams.labels('agent');

  constructor(
    cfg: TunnelAgentConfig,
    private readonly ctx: L4Context,
  ) {
    this.cfg = cfg;
    this.links = cfg.relays.map((r) => this.makeLink(r));
    this.entries = new AgentEntries(this, ctx);
    this.scoreTimer = setInterval(() => this.rescore(), 2000);
    this.scoreTimer.unref();
    if (cfg.compression === 'zstd' && !zstdAvailable) {
      ctx.log.warn(
        { code: 'ZL_TUNNEL_CODEC_UNAVAILABLE' },
        'tunnel: compression zstd needs the optional zstd-napi module; running uncompressed',
      );
    }
  }

  private makeLink(ref: RelayRef): RelayLink {
    const l = new RelayLink(ref, this.cfg, this.ctx.log);
    l.on('change', () => {
      this.rescore();
      if (this.preferred >= 0) for (const w of [...this.waiters]) w();
    });
    l.once('relay-draining', (retryAfterMs: number) => this.succeed(l, retryAfterMs));
    return l;
  }

  /**
   * The relay told `l`'s session GOAWAY SHUTTING_DOWN while streams were open on it (it drains:
   * stopped, restarted, or upgraded in place with its socket handed to a new process). A new link
   * to the same relay connects after the GOAWAY's retry-after (0 from an upgrade; backing off as
   * usual while nothing accepts there), so new streams need not wait for the old session's last
   * one; that session finishes its streams as a retired link.
   */
  private succeed(l: RelayLink, retryAfterMs: number): void {
    const i = this.links.indexOf(l);
    if (i < 0) return;
    const next = this.makeLink(l.ref);
    this.links[i] = next;
    this.retireLink(l, false);
    next.start(Math.min(retryAfterMs, this.cfg.reconnect.max));
    this.rescore();
  }

  private retireLink(l: RelayLink, forget: boolean): void {
    this.retiredLinks.add(l);
    l.once('retired', () => this.retiredLinks.delete(l));
    l.removeAllListeners('change');
    l.removeAllListeners('relay-draining');
    l.retire(forget);
  }

  async start(): Promise<void> {
    await this.entries.start();
    if (this.cfg.native !== 'off') engine.warm();
    for (const l of this.links) l.start();
  }

  /** Entry addresses by kind (`socks5`, `http_proxy`, `forwards[0]`, `udp[0]`). */
  addresses(): Record<string, string> {
    return this.entries.addresses();
  }

  // ---- choosing a relay -----------------------------------------------------------------------

  private rescore(): void {
    const now = Date.now();
    const raw = scores(
      this.links.map((l) => ({ rttMs: l.rttMs, load: l.load, failures: l.failures })),
      now,
    );
    const candidate = raw.map((s, i) => (this.links[i]?.state === 'up' ? s : Number.NaN));
    this.links.forEach((l, i) => {
      l.score = raw[i] as number;
      metrics.tunnelRelayScore.labels(l.address).set(raw[i] as number);
    });
    this.preferred = choose(candidate, this.preferred);
  }

  /** The link new streams go to, waiting up to `connect_timeout` for one. */
  private async link(exclude: RelayLink | null): Promise<RelayLink> {
    const pick = (): RelayLink | null => {
      const p = this.links[this.preferred];
      if (p !== undefined && p !== exclude && p.state === 'up') return p;
      // the preferred one is excluded: the best other that is up
      let best: RelayLink | null = null;
      for (const l of this.links) {
        if (l === exclude || l.state !== 'up') continue;
        if (best === null || l.score < best.score) best = l;
      }
      return best;
    };
    this.rescore();
    const now = pick();
    if (now !== null) return now;
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const l = pick();
        if (l === null) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(l);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(dialError('ZL_TUNNEL_NO_RELAY', OPEN_STATUS.NETWORK_UNREACHABLE, 'no tunnel relay is up'));
      }, this.cfg.connect_timeout);
      // links announce every state change ('change'), after which the scores are fresh
      this.waiters.add(check);
    });
  }

  /** Opens a stream of `kind` to `dest` on the best relay, once more elsewhere if the session dies first. */
  private async openStream(
    kind: number,
    dest: Destination,
  ): Promise<{ stream: SessionStream; link: RelayLink; session: SessionApi }> {
    let tried: RelayLink | null = null;
    for (let round = 0; round < 2; round++) {
      const link = await this.link(tried);
      const session = link.session;
      if (session === null) {
        tried = link;
        continue;
      }
      try {
        const stream = await session.open(kind, encodeAddress(dest));
        stream.info = { kind, dest: formatDestination(dest), relay: link.address, openedAt: Date.now() };
        this.streamsGauge.inc();
        stream.once('close', () => this.streamsGauge.dec());
        return { stream, link, session };
      } catch (err) {
        const status = (err as { openStatus?: number }).openStatus;
        if (isZiplineError(err) && err.code === 'ZL_TUNNEL_LIMIT') {
          // refused before anything was opened: another relay that is up now may take it; waiting
          // for one (as after a session died) would only hold the client for connect_timeout.
          // Unless the relay refused it because it is going away (its GOAWAY came first, and the
          // link drains or was succeeded): then the next session, or another relay, takes it.
          tried = link;
          if (round === 0 && link.state !== 'up') continue;
          if (round === 0 && this.links.some((l) => l !== link && l.state === 'up')) continue;
          throw dialError('ZL_TUNNEL_LIMIT', OPEN_STATUS.FAILURE, `${link.address}: ${err.message}`);
        }
        if (status !== undefined) {
          throw dialError(
            status === OPEN_STATUS.NOT_ALLOWED ? 'ZL_TUNNEL_NOT_ALLOWED' : 'ZL_TUNNEL_DIAL_FAILED',
            status,
            `the relay ${link.address} answered OPEN with status ${status}`,
          );
        }
        // the session ended before OPEN_ACK: nothing was delivered, another relay may take it
        tried = link;
        if (round === 1) throw dialError('ZL_TUNNEL_CLOSED', OPEN_STATUS.FAILURE, (err as Error).message);
      }
    }
    throw dialError('ZL_TUNNEL_NO_RELAY', OPEN_STATUS.NETWORK_UNREACHABLE, 'no tunnel relay is up');
  }

  async connectTcp(dest: Destination): Promise<SessionStream> {
    return (await this.openStream(OPEN_KIND.TCP, dest)).stream;
  }

  async openUdp(first: Destination): Promise<UdpChannel> {
    // the link that opened it (a reload may have replaced the list's link for that address since)
    const { stream, link, session } = await this.openStream(OPEN_KIND.UDP, first);
    // (the stream too may have ended in the read that accepted it, reset or with its session: a
    // channel made of it would never hear its close, and the client would send into nothing)
    if (link.session !== session || stream.destroyed) {
      stream.destroy();
      throw dialError('ZL_TUNNEL_CLOSED', OPEN_STATUS.FAILURE, 'the stream ended as it opened');
    }
    return new TunnelUdpChannel(session, stream, link.datagramSinks);
  }

  /** A reload's settings: timeouts, token, limits and the entries (see AgentEntries.reload). */
  update(cfg: TunnelAgentConfig): Promise<EntriesReport> {
    this.cfg = cfg;
    for (const l of this.links) l.update(cfg);
    return this.entries.reload();
  }

  /**
   * A reload's relay list, matched by address. A relay that stays keeps its link and session (new
   * `fingerprint`, `ca`, `tls` or `server_name` settings apply from its next connection: a second
   * session from this agent would replace the open one at the relay); a new one gets a link,
   * started now; one that left is retired: no new streams, its open session ends when its streams
   * have. Throws (changing nothing) when a CA file cannot be read. True when something changed.
   * `renew`: every relay gets a new link (the agent's `id` changed: a session says who it is in its
   * HELLO; the relay sees another agent, so the old sessions finish beside the new ones).
   */
  setRelays(refs: readonly RelayRef[], renew = false): boolean {
    const left = new Set(renew ? [] : this.links);
    const reconfigure: (() => void)[] = [];
    const made = refs.map((ref) => {
      for (const l of left)
        if (l.address === ref.address) {
          left.delete(l);
          if (!same(l.ref, ref)) reconfigure.push(l.reconfigure(ref));
          return l;
        }
      return this.makeLink(ref);
    });
    // nothing has changed up to here: from here on nothing throws
    for (const apply of reconfigure) apply();
    if (renew) for (const l of this.links) left.add(l);
    const fresh = made.filter((l) => !this.links.includes(l));
    const preferred = this.links[this.preferred];
    for (const l of left) {
      this.ctx.log.info(
        { relay: l.address, streams: l.session?.streams.size ?? 0 },
        'tunnel: relay left the list at reload; its session ends with its last stream',
      );
      this.retireLink(l, !refs.some((r) => r.address === l.address));
      if (!made.some((m) => m.address === l.address)) metrics.tunnelRelayScore.remove(l.address);
    }
    this.links = made; // (in the config's order, also when only the order changed)
    this.preferred = preferred === undefined ? -1 : made.indexOf(preferred);
    for (const l of fresh) l.start();
    const changed = reconfigure.length > 0 || fresh.length > 0 || left.size > 0;
    if (changed) this.rescore();
    return changed;
  }

  /** Relays' `ca` files renewed in place (RelayLink.renewCa): true when one changed. */
  renewCa(): boolean {
    let changed = false;
    for (const l of this.links) changed = l.renewCa() || changed;
    return changed;
  }

  stopAccepting(): Promise<void> {
    return this.entries.stopAccepting();
  }

  /** Closes the relay sessions (after the entries' connections ended or were closed). */
  close(): void {
    clearInterval(this.scoreTimer);
    for (const l of this.links) l.stop();
    for (const l of this.retiredLinks) l.stop();
  }

  activeCount(): number {
    return this.entries.activeCount();
  }

  destroyAll(): void {
    this.entries.destroyAll();
  }

  stats(): Record<string, unknown> {
    const pref = this.links[this.preferred];
    return {
      id: this.links[0]?.agentId,
      preferred: pref?.address ?? null,
      relays: this.links.map((l) => l.stats()),
      // left the list at a reload; each is listed until its session's last stream ended
      retired_relays: [...this.retiredLinks].map((l) => l.stats()),
      ...this.entries.stats(),
    };
  }

  refreshMetrics(): void {
    for (const l of this.links) l.session?.flushFrameMetrics();
    this.entries.refreshMetrics();
  }
}
