#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-afl (AFL++ on stable Rust); targets in fuzz/src/bin/.
#
#   scripts/fuzz.sh TARGET [SECONDS]   fuzz one target (default 60 s)
#   scripts/fuzz.sh all SECONDS        every target in turn (CI smoke run: `all 20`)
#   scripts/fuzz.sh seeds              rewrite fuzz/seeds/ with the make_seeds tool
#
# FUZZ_EXECS=N also stops a target after about N executions (afl-fuzz -E), whichever comes
# first. fuzz/dict/TARGET.dict, when there is one, gives afl-fuzz the target's words (-x).
#
# Installs cargo-afl and builds AFL++ when missing, builds the fuzz crate with
# `cargo afl build --release` in its own target dir (instrumented code must not mix with
# the normal build), runs afl-fuzz from fuzz/seeds/TARGET into $FUZZ_OUT/TARGET (a fresh
# run each time), prints what it did, and exits 1 if any target crashed: the crashing
# inputs are in $FUZZ_OUT/TARGET/default/crashes/ (replay one with
# `$CARGO_TARGET_DIR/release/TARGET < FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(http_request postback query_string template wal_replay)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/clicktracker-fuzz-target}"
FUZZ_OUT="${FUZZ_OUT:-/var/tmp/clicktracker-fuzz-out}"

usage() {
    echo "usage: $0 {$(IFS='|'; echo "${TARGETS[*]}")|all} [SECONDS] | $0 seeds" >&2
    exit 2
}

ensure_afl() {
    if ! cargo afl --version >/dev/null 2>&1; then
        cargo install cargo-afl --locked
    fi
    # Installing cargo-afl builds AFL++ already; this builds it when it is missing (for
    # a new toolchain, say) and says so when it is there.
    local log
    log=$(cargo afl config --build 2>&1) || grep -q "already built" <<<"$log" || {
        echo "$log" >&2
        exit 1
    }
}

build() {
    (cd fuzz && cargo afl build --release --bins)
}

# One value of a fuzzer_stats file.
stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }

# Removes the WAL target's scratch directories of processes that are gone.
clean_scratch() {
    local d
    for d in /dev/shm/clicktracker-fuzz-wal-* "${TMPDIR:-/tmp}"/clicktracker-fuzz-wal-*; do
        if [ -d "$d" ] && ! kill -0 "${d##*-}" 2>/dev/null; then
            rm -rf "$d"
        fi
    done
}

run() {
    local target=$1 secs=$2 out="$FUZZ_OUT/$1"
    rm -rf "$out"
    mkdir -p "$FUZZ_OUT"
    local extra=()
    [ -f "fuzz/dict/$target.dict" ] && extra+=(-x "fuzz/dict/$target.dict")
    [ -n "${FUZZ_EXECS:-}" ] && extra+=(-E "$FUZZ_EXECS")
    # No UI; no CPU frequency or core_pattern tuning needed (containers, CI, root).
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=0 \
        cargo afl fuzz -i "fuzz/seeds/$target" -o "$out" -t 1000 -V "$secs" "${extra[@]}" \
        "$CARGO_TARGET_DIR/release/$target" >"$out.log" 2>&1 || {
        tail -30 "$out.log" >&2
        echo "$target: afl-fuzz failed (log: $out.log)" >&2
        return 1
    }
    local stats="$out/default/fuzzer_stats"
    local execs time crashes hangs corpus
    execs=$(stat execs_done "$stats")
    time=$(stat run_time "$stats")
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    corpus=$(stat corpus_count "$stats")
    printf '%-13s execs_done %-10s run_time %5ss  execs/s %-7s crashes %s  hangs %s  corpus %s\n' \
        "$target" "$execs" "$time" "$((execs / (time > 0 ? time : 1)))" "$crashes" "$hangs" "$corpus"
    if [ "$crashes" != 0 ]; then
        ls "$out/default/crashes/"id:* >&2
        return 1
    fi
}

[ $# -ge 1 ] || usage
case "$1" in
seeds)
    ensure_afl
    build
    "$CARGO_TARGET_DIR/release/make_seeds"
    exit 0
    ;;
all) targets=("${TARGETS[@]}") ;;
*)
    [[ " ${TARGETS[*]} " == *" $1 "* ]] || usage
    targets=("$1")
    ;;
esac
secs=${2:-60}
ensure_afl
build
failed=0
for t in "${targets[@]}"; do
    clean_scratch
    run "$t" "$secs" || failed=1
done
# afl-fuzz's last target processes end a moment after it does.
sleep 3
clean_scratch
exit "$failed"
