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
say "cargo test (dev profile; dependencies optimised)"
cargo test --no-fail-fast -- --test-threads=2
