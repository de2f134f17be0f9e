#!/usr/bin/env bash
# Soak test: the daemon on the `files` source at its maximum rate plus concurrent API load, for a
# configurable time, failing on growth of anonymous memory after warm-up (over 1 % in a run of 30
# minutes or more, 4 % in a shorter one), fd or thread growth, or any failed request. The checks
# and their exact rules are in benches/py/soak.py.
#
# Usage: benches/soak.sh [--duration SECONDS|Nm] [--bin PATH]
#   --duration  how long the load runs (default 30m; CI uses 600)
#   --bin       the spotter binary to soak (default: SPOTTER_BIN, else a release build)
# Sets itself up (scripts/setup.sh: LiteRT, the demo model and photos; apt: wrk).
# Output: a line per 5 s sample, a verdict, and .cache/soak/<timestamp>/ with the log and samples.
source "$(dirname "$0")/../scripts/lib.sh"

duration=1800
bin="${SPOTTER_BIN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) [ $# -ge 2 ] || die "--duration needs a value"; duration="$2"; shift 2 ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a path"; bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$duration" in
  *m) duration=$(( ${duration%m} * 60 )) ;;
esac
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "--duration must be seconds or Nm, got '$duration'"

bash "$REPO/scripts/setup.sh"
apt_install wrk
if [ -z "$bin" ]; then
  say "building spotter (release)"
  cargo build --manifest-path "$REPO/Cargo.toml" --release --bin spotter
  bin="${CARGO_TARGET_DIR:-$REPO/target}/release/spotter"
fi
[ -x "$bin" ] || die "spotter binary not found at $bin"

work="$CACHE/soak/$(date -u +%Y%m%dT%H%M%SZ)"
say "soak: $duration s with $bin (work dir $work)"
exec python3 "$REPO/benches/py/soak.py" --spotter "$bin" \
  --model "$CACHE/models/efficientnet_lite0.tflite" --photos "$CACHE/demo/photos" \
  --litert-lib "$(bash "$REPO/scripts/setup-litert.sh")" --work "$work" --duration "$duration"
