/**
 * How the long-running daemons (supernode, dfdaemon) are started: `node --max-semi-space-size=2 cli.js`. The shebangs
 * of their CLIs, the container entrypoints, `scripts/run.sh`, and the tests' and benchmarks' launchers all pass it.
 *
 * Why: the data plane leaves almost no garbage per byte (blocks in pooled buffers, socket reads into reused ones), so
 * what V8's default young generation (16 MiB semi-spaces, 32–48 MiB of heap) holds is mostly room nobody needs. With
 * 2 MiB semi-spaces a cold 1 GiB pull peaked at 119–127 MiB RSS on the supernode and 103–117 MiB on the dfdaemon
 * instead of 137 and 139–140, at the same CPU per MiB (three runs each, interleaved, on the project's test machine).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];
