#!/usr/bin/env bash
# README command (2): set up and run the whole test suite: unit tests, golden
# inference on both runtimes, the daemon over real HTTPS, the benchmark
# scripts' smoke runs, and the system test (the .deb in a Debian VM with a
# real V4L2 camera, under systemd).
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
# Style and lints first: cheap, and they fail before the long build.
say "cargo fmt --all --check (Spotter and its path crate spotter-resample)"
cargo fmt --all --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
# A path dependency outside the workspace (so the dev profile optimises it):
# linted on its own.
cargo clippy --locked --manifest-path "$REPO/crates/resample/Cargo.toml" --target-dir "$REPO/target/resample" -- -D warnings
say "cargo test (dev profile; dependencies optimised)"
cargo test --no-fail-fast -- --test-threads=2

# aarch64, the device's architecture: the library tests and golden inference
# on both runtimes under qemu-user, then the arm64 package of that build,
# checked by the same package test. armv7 (best effort) builds the GPIO
# backends (rppal, gpiocdev); its full build is documented in cross/README.md.
say "aarch64: cross build, library and golden tests under qemu-user (cross/test.sh)"
bash "$REPO/cross/test.sh" aarch64-unknown-linux-gnu
say "arm64 package of the aarch64 dev build (scripts/build-deb.sh --target aarch64-unknown-linux-gnu --profile dev)"
ARM64_DEB="$(bash "$REPO/scripts/build-deb.sh" --target aarch64-unknown-linux-gnu --profile dev | tail -n 1)"
SPOTTER_DEB="$ARM64_DEB" cargo test --test package -- --test-threads=2
say "armv7: the GPIO backends build (cargo build -p rppal -p gpiocdev --target armv7-unknown-linux-gnueabihf)"
(source "$REPO/cross/env.sh" armv7-unknown-linux-gnueabihf && cargo build --locked "${CROSS_CARGO[@]}" -p rppal -p gpiocdev)

# The benchmark scripts must not rot: a 10-minute soak (fails on memory/fd/thread growth or
# any failed request), the TLS scan and the quick benchmark run (scenarios 1, 4 and 7), all on the binary
# the tests just built. Timings are printed, never asserted.
BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/spotter"
# The API contract: schemathesis against docs/openapi.json with a read key,
# failing on any 5xx or schema violation (few examples per operation: cheap).
say "API contract test (scripts/schemathesis.sh --max-examples 10)"
SPOTTER_BIN="$BIN" bash "$REPO/scripts/schemathesis.sh" --max-examples 10
say "soak test, 10 minutes (benches/soak.sh)"
# Judged on anonymous memory after a 300 s warm-up (half the run): over 4 %
# between the means of the first and last thirds of the samples fails (1 %
# for runs of 30 minutes or more, the issue's goal; see benches/py/soak.py,
# which says why a shorter run gets more). A failure runs once more and the second
# verdict stands: the figure still moves with the machine's load.
if ! bash "$REPO/benches/soak.sh" --duration 600 --bin "$BIN"; then
    say "soak failed once; running it again (the second result decides)"
    bash "$REPO/benches/soak.sh" --duration 600 --bin "$BIN"
fi
# TLS configuration: testssl.sh (Debian package) against the dev binary,
# failing on any HIGH or CRITICAL finding; bounded by its own timeout.
say "TLS scan (benches/testssl.sh)"
SPOTTER_BIN="$BIN" bash "$REPO/benches/testssl.sh"
say "benchmark smoke run (benches/run.sh --quick)"
bash "$REPO/benches/run.sh" --quick --bin "$BIN" --out "$CACHE/bench/RESULTS-quick.md"
say "flash-wear benchmark smoke run (benches/sightings_wear.sh, 20 s)"
SPOTTER_BIN="$BIN" bash "$REPO/benches/sightings_wear.sh" --duration 20
say "motion-gating CPU benchmark smoke run (benches/motion_cpu.sh, 15 s each)"
SPOTTER_BIN="$BIN" bash "$REPO/benches/motion_cpu.sh" --seconds 15

# The system test boots the same .deb in a Debian VM (QEMU, TCG) with vivid's
# /dev/video0 and checks it from the host (tests/system/run.sh; needs root
# for the image build).
say "system test: the .deb in a VM with a V4L2 camera (tests/system/run.sh)"
# Then the GPIO system test: the same .deb in a trixie VM with the
# backports kernel's gpio-sim chip (tests/system/gpio.sh).
if [ "$(id -u)" -eq 0 ]; then
    bash "$REPO/tests/system/run.sh"
    say "GPIO system test: trigger and outputs on a gpio-sim chip in a VM (tests/system/gpio.sh)"
    bash "$REPO/tests/system/gpio.sh"
    say "several-sources system test: two vivid cameras, one unplugged (tests/system/sources.sh)"
    bash "$REPO/tests/system/sources.sh"
elif [ -n "${CI:-}" ]; then
    die "the system test needs root (CI runs as root)"
else
    say "skipped: not root (run: sudo SPOTTER_DEB=$SPOTTER_DEB bash tests/system/run.sh)"
fi
