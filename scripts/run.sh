#!/usr/bin/env bash
# The main job on a fresh machine: installs, builds, and runs an all-in-one local supernode + dfdaemon
# (supernode :8002, proxy/mirror 127.0.0.1:65001, upload :65002, health 127.0.0.1:40901). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec node scripts/all-in-one.mjs "$@"
