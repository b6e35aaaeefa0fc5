/** What a simulation runs: the swarm, the links, the blob, and what goes wrong. Bandwidths in bytes/s. */
export interface Scenario {
  name: string;
  seed: number;
  fileBytes: number;
  /** Default: the supernode's own rule (pieceSizeFor). */
  pieceSize?: number;
  peers: number;
  peerUp: number;
  peerDown: number;
  /** Each peer's bandwidths are scaled by a factor drawn from [1-j, 1+j]. */
  bandwidthJitter: number;
  /** The supernode's upload (it seeds each piece from the origin once). */
  sourceUp: number;
  /** One-way latency added before each piece transfer starts (request + response headers). */
  latencyMs: number;
  /**
   * TCP's initial congestion window, bytes (Linux: 10 segments): a transfer starts at this much per round trip
   * (2 × latencyMs) and doubles it every round trip until its share of the links is the limit (slow start). 0 = no
   * ramp-up. At data-centre latencies it binds for a few round trips of a transfer alone on its links; across 50 ms it
   * takes a transfer ~0.5 s to reach 3 MB/s.
   */
  initialWindow?: number;
  /** Peers join uniformly over [0, joinSpreadMs]. */
  joinSpreadMs: number;
  /** Pieces in flight per peer (dfdaemon parallelPieces). */
  parallel: number;
  /** Scheduler upload slots per peer / for the supernode. */
  peerSlots: number;
  /** Most pieces the supernode serves at once (uploadSlots). */
  supernodeSlots: number;
  /** Model the dfdaemon before relaying: a piece is a source only once complete (for comparisons). */
  noRelay?: boolean;
  /** Rate each supernode upload stream should get (uploadStreamRate; its slots are tuned to it); 0 = fixed slots. */
  supernodeStreamRate?: number;
  /** Peers keep `parallel` pieces in flight instead of adapting it to what they measure, for comparison. */
  fixedParallel?: boolean;
  /** No endgame (peers never ask a second source for a slow last piece), for comparison. */
  noEndgame?: boolean;
  /** Topology: peers get one of this many zone labels (0 = none). */
  zones: number;
  /** Fraction of peers that leave half-way through their own download. */
  leaveFraction: number;
  /** Fraction of peers that serve corrupt pieces. */
  corruptFraction: number;
  /** nydus lazy loading: each peer wants only the pieces covering `reads` ranges of `readBytes`, a share `hot` of them from a common pool. */
  lazy?: { reads: number; readBytes: number; hot: number };
}

const MB = 1e6;
const Mb = 1e6 / 8;
const GB = 1e9;

export const defaults: Omit<Scenario, 'name' | 'fileBytes' | 'peers' | 'peerUp' | 'peerDown' | 'sourceUp'> = {
  seed: 1,
  bandwidthJitter: 0,
  latencyMs: 1,
  joinSpreadMs: 1000,
  parallel: 8,
  peerSlots: 8,
  supernodeSlots: 64,
  zones: 0,
  leaveFraction: 0,
  corruptFraction: 0,
};

/** Scenarios shipped with the simulator, after the published runs we are measured against. */
export const scenarios: Record<string, (peers?: number) => Scenario> = {
  /** Dragonfly v1's classic: 200 MB to 200…7000 clients at 200 Mb/s each (~12 s flat in their test). */
  'dragonfly-200mb': (peers = 200) => ({
    ...defaults,
    name: `dragonfly-200mb-${peers}`,
    fileBytes: 200 * MB,
    peers,
    peerUp: 200 * Mb,
    peerDown: 200 * Mb,
    sourceUp: 1000 * Mb,
    latencyMs: 1,
    joinSpreadMs: 2000,
  }),
  /** Kraken's: a 3 GB image to 2600 hosts at 300 MB/s (p50 10 s = the bound, p99 18 s). */
  'kraken-3gb': (peers = 2600) => ({
    ...defaults,
    name: `kraken-3gb-${peers}`,
    fileBytes: 3 * GB,
    peers,
    peerUp: 300 * MB,
    peerDown: 300 * MB,
    sourceUp: 300 * MB,
    latencyMs: 1,
    joinSpreadMs: 1000,
    bandwidthJitter: 0.2,
    zones: 8,
  }),
  /** nydus lazy loading: 500 nodes each read 16 random 1 MiB ranges of a 1 GiB blob, half from a shared hot set. */
  'nydus-lazy': (peers = 500) => ({
    ...defaults,
    name: `nydus-lazy-${peers}`,
    fileBytes: 1024 * 1024 * 1024,
    peers,
    peerUp: 125 * MB,
    peerDown: 125 * MB,
    sourceUp: 125 * MB,
    latencyMs: 1,
    joinSpreadMs: 5000,
    lazy: { reads: 16, readBytes: 1024 * 1024, hot: 0.5 },
  }),
  /** 10,000 peers x 1 GiB: the scale check. */
  'scale-10k': (peers = 10_000) => ({
    ...defaults,
    name: `scale-${peers}`,
    fileBytes: 1024 * 1024 * 1024,
    peers,
    peerUp: 125 * MB,
    peerDown: 125 * MB,
    sourceUp: 1250 * MB,
    latencyMs: 1,
    joinSpreadMs: 5000,
    bandwidthJitter: 0.3,
    leaveFraction: 0.02,
    corruptFraction: 0.01,
  }),
  /** The core benchmark's setup (bench/core.mjs --origin-mbps 50), to compare with the real run. */
  'core-bench': (peers = 8) => ({
    ...defaults,
    name: `core-bench-${peers}`,
    fileBytes: 256 * 1024 * 1024,
    peers,
    peerUp: 1000 * MB,
    peerDown: 1000 * MB,
    sourceUp: 50 * MB,
    latencyMs: 0.2,
    joinSpreadMs: 100,
  }),
  /** The swarm benchmark's emulated network (bench/swarm.mjs defaults): 200 MiB, every uplink 50 Mbit/s, downlinks free. */
  'swarm-bench': (peers = 8) => ({
    ...defaults,
    name: `swarm-bench-${peers}`,
    fileBytes: 200 * 1024 * 1024,
    peers,
    peerUp: 50 * Mb,
    peerDown: 10_000 * Mb,
    sourceUp: 50 * Mb,
    latencyMs: 0.5,
    joinSpreadMs: 50,
  }),
};
