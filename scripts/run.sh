#!/usr/bin/env bash
# The main job on a fresh machine: installs, builds, and runs an all-in-one local supernode + dfdaemon
# (supernode :8002, proxy/mirror 127.0.0.1:65001, upload :65002, health 127.0.0.1:40901). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The daemons' Node flags (see shared/src/node-flags.ts): a small young generation, as their own launchers use.
exec node --max-semi-space-size=2 scripts/all-in-one.mjs "$@"
