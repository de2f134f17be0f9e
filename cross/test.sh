#!/usr/bin/env bash
# Cross-build Spotter for TRIPLE (default aarch64-unknown-linux-gnu) and run
# its library tests and the inference test target (tests/inference/: golden
# tests on both runtimes, and the LiteRT runtime tests) under qemu-user, the
# cargo runner set in cross/config.toml. On aarch64 LiteRT's aarch64
# libLiteRt.so is fetched and required (SPOTTER_REQUIRE_LITERT=1). armv7 has
# no LiteRT build, so there only the built-in runtime runs and the LiteRT
# tests that need the library print SKIP.
#
# One profile: dev, whose dependencies are optimised as in the host build
# (Cargo.toml [profile.dev.package."*"]). The output lands in
# $CARGO_TARGET_DIR/TRIPLE/debug beside the host build's target directory.
# Build and test times are printed on the last line.
#
# Usage: cross/test.sh [TRIPLE]
source "$(dirname "$0")/../scripts/lib.sh"
source "$REPO/cross/env.sh" "${1:-aarch64-unknown-linux-gnu}"

export SPOTTER_TESTDATA="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
[ -d "$SPOTTER_TESTDATA" ] || die "test data not found at $SPOTTER_TESTDATA"
tests=(--lib --test inference)
if [ -n "$CROSS_LITERT_ARCH" ]; then
    SPOTTER_LITERT_LIB="$(bash "$REPO/scripts/setup-litert.sh" "$CROSS_LITERT_ARCH")"
    export SPOTTER_LITERT_LIB SPOTTER_REQUIRE_LITERT=1
else
    unset SPOTTER_LITERT_LIB SPOTTER_REQUIRE_LITERT
fi

# The runner passes -L to qemu; a test that re-executes its own binary goes
# through binfmt_misc's qemu handler instead, which reads the sysroot from
# the environment.
export QEMU_LD_PREFIX="/usr/$CROSS_GNU"

# Tests qemu-user cannot run, each with the reason. They run in the host
# suite (scripts/test.sh) and on the device.
skip=()
# These start an aarch64 child process: xnnpack_runs_the_requested_number_of_os_threads
# re-executes its own test binary (std::env::current_exe) to count threads in
# a clean process, private_dirs_are_0700_whatever_the_umask re-executes it
# under umask 000, and the two stderr tests run `spotter bench` to read what
# reaches its stderr. Under qemu-user that exec is a plain execve of an
# aarch64 ELF, which the host kernel runs only when binfmt_misc has a qemu
# handler registered; CI containers usually have none.
qemu_arch="${CROSS_TRIPLE%%-*}"
case "$qemu_arch" in armv7) qemu_arch=arm ;; esac
if ! grep -qs '^enabled' "/proc/sys/fs/binfmt_misc/qemu-$qemu_arch"; then
    skip+=(--skip xnnpack_runs_the_requested_number_of_os_threads
           --skip private_dirs_are_0700_whatever_the_umask
           --skip loading_a_model_writes_no_unstructured_litert_lines
           --skip builtin_refusal_names_tf_lites_reason_without_unstructured_lines)
fi
# released_pages_leave_rss_and_read_back_unchanged and
# releasing_code_pages_lowers_rss_and_the_process_runs_on measure resident
# pages from /proc/self/smaps; qemu-user emulates that file for the guest
# with "Rss: 0 kB" for every mapping, so there is nothing to measure.
skip+=(--skip released_pages_leave_rss_and_read_back_unchanged
       --skip releasing_code_pages_lowers_rss_and_the_process_runs_on)

cd "$REPO"
start=$(date +%s)
say "cross build for $CROSS_TRIPLE: ${tests[*]} (dev profile)"
cargo test --locked "${CROSS_CARGO[@]}" "${tests[@]}" --no-run >&2
built=$(date +%s)
say "tests for $CROSS_TRIPLE under qemu-user${skip[*]:+ (${skip[*]})}"
cargo test --locked --no-fail-fast "${CROSS_CARGO[@]}" "${tests[@]}" -- --test-threads=2 "${skip[@]}"
done_at=$(date +%s)
say "cross $CROSS_TRIPLE: build $((built - start)) s, tests under qemu $((done_at - built)) s"
