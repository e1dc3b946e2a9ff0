#!/usr/bin/env bash
# Side-by-side benchmark: edge vs nginx (return 302 + access log) vs a bare monoio server,
# each pinned to one core and driven by wrk and by loadtest from the other; then the
# edge's scaling from one worker to two and its memory with 10k idle connections.
#   ONLY=interleaved,scaling,memory PIPELINE=16 IDLE=10000 (see benches/compare.py)
#   DURATION=10 ROUNDS=2 CONNS=64 benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
  else
    echo "compare.sh needs wrk and nginx (Debian: apt-get install wrk nginx-light)" >&2
    exit 1
  fi
fi
cargo build --release -p edge -p benches -p loadtest --bin edge --bin bare --bin loadtest
exec python3 benches/compare.py "$@"
