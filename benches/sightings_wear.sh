#!/usr/bin/env bash
# Flash wear of the storage policy (issue 18): bytes written per hour on a static scene with
# store.keep_frames = "sightings" against "all", two daemons side by side in one run (same
# model, same frame, motion gating off in both). Goal: sightings <= 1/50 of all. The rules are
# in benches/py/wear.py.
#
# Usage: benches/sightings_wear.sh [--duration SECONDS|Nm] [--fps N] [--model PATH] [--bin PATH]
#   --duration  seconds measured (default 10m; CI's smoke run uses 20)
#   --fps       frame rate of the replayed scene (default 15)
#   --model     the model (default: the YOLOv8n int8 detector from the test data, else the
#               demo classifier)
#   --bin       the spotter binary (default: SPOTTER_BIN, else a release build)
source "$(dirname "$0")/../scripts/lib.sh"

duration=600
fps=15
model=""
bin="${SPOTTER_BIN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) [ $# -ge 2 ] || die "--duration needs a value"; duration="$2"; shift 2 ;;
    --fps) [ $# -ge 2 ] || die "--fps needs a number"; fps="$2"; shift 2 ;;
    --model) [ $# -ge 2 ] || die "--model needs a path"; model="$2"; shift 2 ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a path"; bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$duration" in
  *m) duration=$(( ${duration%m} * 60 )) ;;
esac
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "--duration must be seconds or Nm, got '$duration'"

bash "$REPO/scripts/setup.sh"
apt_install python3-pil
if [ -z "$bin" ]; then
  say "building spotter (release)"
  cargo build --manifest-path "$REPO/Cargo.toml" --release --bin spotter
  bin="${CARGO_TARGET_DIR:-$REPO/target}/release/spotter"
fi
[ -x "$bin" ] || die "spotter binary not found at $bin"
testdata="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
if [ -z "$model" ]; then
  model="$testdata/models/detection/yolov8n/yolov8n_full_integer_quant.tflite"
  [ -f "$model" ] || model="$CACHE/models/efficientnet_lite0.tflite"
fi
[ -f "$model" ] || die "model not found: $model"

work="$CACHE/wear/$(date -u +%Y%m%dT%H%M%SZ)"
say "flash wear: $duration s at $fps fps with $(basename "$model") (work dir $work)"
# Debian's python3 has python3-pil (a python3 earlier on PATH may not).
exec /usr/bin/python3 "$REPO/benches/py/wear.py" --spotter "$bin" --model "$model" \
  --litert-lib "$(bash "$REPO/scripts/setup-litert.sh")" --work "$work" \
  --duration "$duration" --fps "$fps"
