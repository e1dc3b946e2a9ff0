#!/usr/bin/env bash
# Runs a drill of scripts/drill.py against the release binaries (built here), installing the
# Debian tools it uses. Everything listens on 127.0.0.1 only.
#   scripts/drill.sh crash [--kills 20] [--seconds 60]
#   scripts/drill.sh abuse [--only slowloris,nonreading,huge,garbage,sighup]
#   scripts/drill.sh faults
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
need=()
command -v strace >/dev/null || need+=(strace)
command -v slowhttptest >/dev/null || need+=(slowhttptest)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "drill.sh uses ${need[*]} (Debian: apt-get install ${need[*]})" >&2
  fi
fi
cargo build --release -p edge -p loadtest --bin edge --bin loadtest
exec python3 scripts/drill.py "$@"
