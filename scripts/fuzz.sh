#!/usr/bin/env bash
# Run the fuzz targets (src/fuzz/: image, flatbuf, http, config, ndjson,
# mjpeg) longer than the few seconds each gets in `cargo test`, one after
# another, nice'd. Each prints its seed, inputs/s and allocation peak; a
# failure prints how to replay it and leaves the minimised input in
# target/fuzz-failures/.
#
#   bash scripts/fuzz.sh [--secs N] [TARGET...]   (default: 600 s each, all targets)
#
# SPOTTER_FUZZ_SEED=S (and SPOTTER_FUZZ_ITER=N) replay a run (an input);
# SPOTTER_FUZZ_INPUT=FILE runs one file through the named target.
source "$(dirname "$0")/lib.sh"
secs=600
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) secs="${2:?--secs needs a number}"; shift 2 ;;
        --secs=*) secs="${1#--secs=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(image flatbuf http config ndjson mjpeg)
export SPOTTER_TESTDATA="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
[ -d "$SPOTTER_TESTDATA" ] || die "test data not found at $SPOTTER_TESTDATA"
export SPOTTER_FUZZ_SECS="$secs"
cd "$REPO"
say "building the library tests"
nice cargo test --locked --lib --no-run
failed=()
for t in "${targets[@]}"; do
    say "fuzz $t for $secs s"
    if ! nice cargo test --locked --lib "fuzz::$t::$t" -- --exact --nocapture --test-threads=1; then
        failed+=("$t")
    fi
done
[ ${#failed[@]} -eq 0 ] || die "fuzz targets failed: ${failed[*]}"
say "all fuzz targets passed"
