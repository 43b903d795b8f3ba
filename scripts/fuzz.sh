#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in tests/fuzz/targets.rs under
# libFuzzer with AddressSanitizer (cargo-fuzz, on the nightly toolchain).
# Developer-run, not part of the test command: the sanitizer build is a
# second full build of everything Seer links (about 45 min cold on 2 cores).
#
# Usage: scripts/fuzz.sh [--total SECONDS] [TARGET ...]
#   --total   fuzzing time shared equally by the targets (default 3600)
#   TARGET    the targets to run (default: all of them)
#
# Each target starts from its committed seed corpus (tests/fuzz/corpus/<t>,
# read only) and grows a working corpus under $SEER_CACHE/fuzz/corpus/<t>.
# A crash leaves its input in $SEER_CACHE/fuzz/artifacts/; once fixed, copy
# it into tests/fuzz/corpus/<t>/crash-<what> so the test command replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

total=3600
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --total) total="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^seer-fuzz$')
fi

SEER_CACHE="${SEER_CACHE:-/var/cache/seer-ci}"
export CARGO_TARGET_DIR="${SEER_FUZZ_TARGET_DIR:-$SEER_CACHE/fuzz/target}"
work="$SEER_CACHE/fuzz"
mkdir -p "$work/artifacts"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
scripts/install-deps.sh >/dev/null

echo "[$(date +%H:%M:%S)] building the fuzz targets (nightly, AddressSanitizer, $CARGO_TARGET_DIR)"
cargo +nightly fuzz build

each=$(( total / ${#targets[@]} ))
# Readers that take a path get their bytes through a scratch file: keep it
# in memory.
export TMPDIR=/dev/shm
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    echo "[$(date +%H:%M:%S)] fuzzing $t for ${each}s"
    log="$work/$t.log"
    set +e
    # 256 MB per allocation: the same cap tests/tests/fuzz.rs enforces.
    cargo +nightly fuzz run "$t" "$work/corpus/$t" "tests/fuzz/corpus/$t" -- \
        -max_total_time="$each" -malloc_limit_mb=256 -rss_limit_mb=2048 \
        -timeout=10 -artifact_prefix="$work/artifacts/$t-" -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
    units=$(find "$work/corpus/$t" -type f | wc -l)
    if [ $rc -eq 0 ]; then verdict=ok; else verdict="FAILED (rc $rc, see $log)"; fi
    summary+=("$(printf '%-14s %10s execs  %-10s corpus %5s  %s' "$t" "${runs:-?}" "${cov:-cov: ?}" "$units" "$verdict")")
    tail -n 3 "$log"
done
echo
echo "target              execs  coverage   corpus      result"
printf '%s\n' "${summary[@]}"
ls "$work/artifacts" | sed 's/^/artifact: /' || true
