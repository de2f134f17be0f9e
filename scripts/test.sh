#!/usr/bin/env bash
# README command (2): set up and run the whole test suite: unit tests, golden
# inference on both runtimes, and the daemon over real HTTPS.
source "$(dirname "$0")/lib.sh"
bash "$REPO/scripts/setup.sh"
# The LiteRT runtime must be tested, not skipped, once setup has fetched it.
export SPOTTER_REQUIRE_LITERT=1
export SPOTTER_TESTDATA="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
[ -d "$SPOTTER_TESTDATA" ] || die "test data not found at $SPOTTER_TESTDATA"
cd "$REPO"
# tests/package.rs checks the .deb's contents; package the dev-profile binary
# the tests use anyway instead of a second, release build.
say "Debian package of the dev build (scripts/build-deb.sh --profile dev)"
SPOTTER_DEB="$(bash "$REPO/scripts/build-deb.sh" --profile dev | tail -n 1)"
export SPOTTER_DEB
say "cargo test (dev profile; dependencies optimised)"
cargo test --no-fail-fast -- --test-threads=2

# The benchmark scripts must not rot: a 2-minute soak (fails on RSS/fd/thread growth or
# any failed request) and the quick benchmark run (scenarios 1 and 4), both on the binary
# the tests just built. Timings are printed, never asserted.
BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/spotter"
# The API contract: schemathesis against docs/openapi.json with a read key,
# failing on any 5xx or schema violation (few examples per operation: cheap).
say "API contract test (scripts/schemathesis.sh --max-examples 10)"
SPOTTER_BIN="$BIN" bash "$REPO/scripts/schemathesis.sh" --max-examples 10
say "soak test, 2 minutes (benches/soak.sh)"
bash "$REPO/benches/soak.sh" --duration 120 --bin "$BIN"
say "benchmark smoke run (benches/run.sh --quick)"
bash "$REPO/benches/run.sh" --quick --bin "$BIN" --out "$CACHE/bench/RESULTS-quick.md"
