#!/usr/bin/env bash
# Compare Spotter's LiteRT invoke time with LiteRT's own Python Interpreter, and measure
# Spotter's pre/post-processing overhead on camera-like JPEG frames (640x480 and 1280x720).
#
# Usage: benches/runtime_vs_python.sh [--model PATH]... [--threads "1 2"] [--runs N]
#                                     [--warmup W] [--image SRC] [--sizes "640x480 1280x720"]
#                                     [--e2e [--min-score S]]
#
#   --model PATH   model to measure (repeatable); default: EfficientNet-Lite0 int8 and
#                  MobileNet v2 1.0 224 uint8 from $SPOTTER_TESTDATA/models/classification
#   --threads LIST thread counts, space-separated (default "1 2")
#   --runs N       measured invokes per case (default 50); --warmup W unmeasured (default 5)
#   --image SRC    photo the JPEG frames are made from (default: testdata grace_hopper.bmp)
#   --sizes LIST   camera frame sizes WxH, space-separated (default "640x480 1280x720"); Python's
#                  invoke is measured once per model and thread count (it does not depend on them)
#   --e2e          detectors end to end (issue 17): per model, thread count and frame size, Python
#                  runs the whole reference pipeline per frame (invoke_bench.py --e2e: Pillow JPEG
#                  decode, letterbox 114, quantize, invoke, numpy decode + class-aware NMS) beside
#                  `spotter bench` on the same frame, both at --min-score (default 0.25, the
#                  reference's); defaults become the YOLOv8n int8 model of $SPOTTER_TESTDATA,
#                  --threads "1" and --sizes "1280x720"; a second table gives the end-to-end
#                  ratio (goal <= 1.0) and pre/invoke, post/invoke (targets 0.15, 0.02)
#
# Steps: cargo build --release --bin spotter; scripts/setup-litert.sh (libLiteRt.so);
# a venv in .cache/bench-venv with benches/py/requirements.txt (ai-edge-litert==2.3.0, numpy,
# Pillow, pinned, from PyPI); then per model and thread count (a) `spotter bench --json
# --runtime litert` on the frame and (b) benches/py/invoke_bench.py (Interpreter with
# num_threads, default XNNPACK delegate) on the same image at the model's input size, then
# (c) `spotter bench` on each further frame size, and
# prints a table plus the machine and commit. Raw JSON goes to .cache/bench/<timestamp>/.
# Goals (invoke ratio <= 1.0, overhead <= 0.10; with --e2e also end-to-end ratio <= 1.0,
# pre/invoke <= 0.15, post/invoke <= 0.02) are reported, never asserted.
# Environment: SPOTTER_TESTDATA (test data folder), SPOTTER_BIN (a release spotter to use
# instead of building one).
set -euo pipefail

die() { echo "runtime_vs_python: error: $*" >&2; exit 1; }
note() { echo "runtime_vs_python: $*" >&2; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
testdata="${SPOTTER_TESTDATA:-$repo/../shared/testdata}"
py_dir="$repo/benches/py"
venv="$repo/.cache/bench-venv"

models=()
threads_list="1 2"
runs=50
warmup=5
src_image=""
sizes="640x480 1280x720"
e2e=0
min_score=0.25
threads_set=0
sizes_set=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) [ $# -ge 2 ] || die "--model needs a path"; models+=("$2"); shift 2 ;;
    --threads) [ $# -ge 2 ] || die "--threads needs a list"; threads_list="$2"; threads_set=1; shift 2 ;;
    --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs="$2"; shift 2 ;;
    --warmup) [ $# -ge 2 ] || die "--warmup needs a number"; warmup="$2"; shift 2 ;;
    --image) [ $# -ge 2 ] || die "--image needs a path"; src_image="$2"; shift 2 ;;
    --sizes) [ $# -ge 2 ] || die "--sizes needs a list"; sizes="$2"; sizes_set=1; shift 2 ;;
    --e2e) e2e=1; shift ;;
    --min-score) [ $# -ge 2 ] || die "--min-score needs a number"; min_score="$2"; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$min_score" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || die "--min-score must be between 0 and 1, got '$min_score'"
if [ "$e2e" = 1 ]; then
  [ "$threads_set" = 1 ] || threads_list="1"
  [ "$sizes_set" = 1 ] || sizes="1280x720"
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a non-negative integer, got '$warmup'"
for t in $threads_list; do
  [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "--threads must list positive integers, got '$t'"
done
[ -n "$sizes" ] || die "--sizes must list at least one size"
for z in $sizes; do
  [[ "$z" =~ ^[1-9][0-9]{0,3}x[1-9][0-9]{0,3}$ ]] || die "--sizes must list WxH sizes, got '$z'"
done
if [ ${#models[@]} -eq 0 ] && [ "$e2e" = 1 ]; then
  models=("$testdata/models/detection/yolov8n/yolov8n_full_integer_quant.tflite")
elif [ ${#models[@]} -eq 0 ]; then
  models=(
    "$testdata/models/classification/efficientnet_lite0_int8_2.tflite"
    "$testdata/models/classification/mobilenet_v2_1.0_224_quant.tflite"
  )
fi
for m in "${models[@]}"; do
  [ -f "$m" ] || die "model not found: $m (set SPOTTER_TESTDATA or pass --model PATH)"
done
src_image="${src_image:-$testdata/images/grace_hopper.bmp}"
[ -f "$src_image" ] || die "image not found: $src_image (pass --image PATH)"

command -v python3 >/dev/null || die "python3 is required (for the venv)"
python3 -c 'import venv' 2>/dev/null || die "python3's venv module is missing (install python3-venv)"

# 1. Spotter, optimized (or a release binary given in $SPOTTER_BIN, used as is).
if [ -n "${SPOTTER_BIN:-}" ]; then
  spotter="$SPOTTER_BIN"
  [ -x "$spotter" ] || die "SPOTTER_BIN=$spotter is not an executable file"
  note "using $spotter (SPOTTER_BIN; not rebuilt)"
else
  command -v cargo >/dev/null || die "cargo is required"
  note "building spotter (release)"
  (cd "$repo" && cargo build --release --bin spotter >&2) || die "cargo build --release --bin spotter failed"
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  spotter="$target_dir/release/spotter"
  [ -x "$spotter" ] || die "built binary not found at $spotter"
fi
"$spotter" bench --help >/dev/null 2>&1 || die "$spotter has no 'bench' subcommand"
if [ "$e2e" = 1 ]; then
  "$spotter" bench --help 2>/dev/null | grep -q -- --min-score || die "$spotter bench has no --min-score (too old for --e2e)"
fi

# 2. LiteRT for Spotter.
litert_lib="$(bash "$repo/scripts/setup-litert.sh")" || die "scripts/setup-litert.sh failed"
[ -f "$litert_lib" ] || die "scripts/setup-litert.sh printed '$litert_lib', which is not a file"

# 3. Python venv with the pinned packages; reinstalled only when the requirements change.
reqs="$py_dir/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  note "creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" >&2 \
    || die "pip install -r $reqs failed (PyPI reachable? Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
  echo "$want" >"$stamp"
fi
py="$venv/bin/python"

# 4. The camera frames, and a directory for raw results.
out="$repo/.cache/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
for z in $sizes; do
  "$py" "$py_dir/make_frame.py" "$src_image" "$out/frame_$z.jpg" "$z" || die "could not make the $z frame from $src_image"
done
first_size="${sizes%% *}"
frame="$out/frame_$first_size.jpg"

# 5. Measure. Spotter and Python alternate per case so drift affects both alike.
rows=()
for m in "${models[@]}"; do
  name="$(basename "$m" .tflite)"
  for t in $threads_list; do
    if [ "$e2e" = 1 ]; then
      # Python's pipeline depends on the frame: one Python run per frame size, alternating.
      for z in $sizes; do
        note "$name, $t thread(s), $z frame: python pipeline end to end"
        py_json="$out/$name.t$t.$z.python-e2e.json"
        "$py" "$py_dir/invoke_bench.py" --e2e --min-score "$min_score" --model "$m" --image "$out/frame_$z.jpg" \
          --threads "$t" --runs "$runs" --warmup "$warmup" >"$py_json" \
          || die "invoke_bench.py --e2e failed for $m with $t thread(s) on the $z frame"
        note "$name, $t thread(s), $z frame: spotter bench"
        sp_json="$out/$name.t$t.$z.spotter.json"
        "$spotter" bench --json --runtime litert --litert-lib "$litert_lib" --model "$m" --image "$out/frame_$z.jpg" \
          --threads "$t" --runs "$runs" --warmup "$warmup" --min-score "$min_score" >"$sp_json" \
          || die "spotter bench failed for $m with $t thread(s) on the $z frame"
        rows+=(--row "$m" "$t" "$sp_json" "$py_json")
      done
      continue
    fi
    note "$name, $t thread(s): python interpreter"
    py_json="$out/$name.t$t.python.json"
    "$py" "$py_dir/invoke_bench.py" --model "$m" --image "$frame" --threads "$t" \
      --runs "$runs" --warmup "$warmup" >"$py_json" \
      || die "invoke_bench.py failed for $m with $t thread(s)"
    for z in $sizes; do
      note "$name, $t thread(s), $z frame: spotter bench"
      sp_json="$out/$name.t$t.$z.spotter.json"
      "$spotter" bench --json --runtime litert --litert-lib "$litert_lib" --model "$m" --image "$out/frame_$z.jpg" \
        --threads "$t" --runs "$runs" --warmup "$warmup" >"$sp_json" \
        || die "spotter bench failed for $m with $t thread(s) on the $z frame"
      rows+=(--row "$m" "$t" "$sp_json" "$py_json")
    done
  done
done

# 6. Report.
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
  commit="$commit (working tree modified)"
fi
cpu="$(grep -m1 -E '^(model name|Model name)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
[ -n "$cpu" ] || cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1 || true)"
echo "machine: $(nproc) CPU(s), ${cpu:-unknown CPU}, $(uname -srm)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (1/5/15 min; other work on the machine skews timings)"
echo "commit:  $commit"
echo "python:  $("$py" -c 'import sys; from importlib.metadata import version as v; print(sys.version.split()[0], "ai-edge-litert", v("ai-edge-litert"), "numpy", v("numpy"), "Pillow", v("Pillow"))')"
echo "LiteRT:  $litert_lib"
for z in $sizes; do
  echo "frame:   $out/frame_$z.jpg ($(stat -c %s "$out/frame_$z.jpg") bytes, from $(basename "$src_image"))"
done
echo "runs:    $runs after $warmup warm-up$([ "$e2e" = 1 ] && echo ", end to end at min_score $min_score")"
echo
"$py" "$py_dir/report.py" --json-out "$out/summary.json" "${rows[@]}"
echo
echo "raw results: $out"
