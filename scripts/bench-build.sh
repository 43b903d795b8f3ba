# Sourced by every scripts/bench-*.sh: builds Seer's binaries in one
# optimised profile, the same for every benchmark, and says where they are.
#
#   SEER_CARGO_PROFILE  cargo profile (default `bench`: the release profile
#                       with codegen-units = 1 and thin LTO, see Cargo.toml;
#                       `dev` reuses the test suite's build, which is quick
#                       but not what a user runs)
#   CARGO_TARGET_DIR    default /var/cache/seer-ci/target
#
# After `bench_build -p CRATE --bin NAME…`, binaries are in "$BENCH_BIN".
# A first bench-profile build compiles every dependency again (about as long
# as the test suite's cold build).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/seer-ci/target}"
BENCH_PROFILE="${SEER_CARGO_PROFILE:-bench}"
case "$BENCH_PROFILE" in
  dev|test) BENCH_BIN="$CARGO_TARGET_DIR/debug" ;;
  release|bench) BENCH_BIN="$CARGO_TARGET_DIR/release" ;;
  *) BENCH_BIN="$CARGO_TARGET_DIR/$BENCH_PROFILE" ;;
esac
export BENCH_PROFILE BENCH_BIN

bench_build() {
  if [[ "$BENCH_PROFILE" == dev ]]; then
    # The test suite's exact build: `-p CRATE` alone unifies features
    # differently and would compile burn/cubecl a second time.
    set -- --workspace --all-targets
  fi
  echo "bench: cargo build --profile $BENCH_PROFILE $* (binaries in $BENCH_BIN)" >&2
  (cd "$ROOT" && cargo build -q --profile "$BENCH_PROFILE" "$@")
}
