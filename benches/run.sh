#!/usr/bin/env bash
# Spotter measured against what a user would otherwise deploy, in one run on one machine:
# writes benches/RESULTS.md (machine, commit, every figure as median and range over the
# repetitions, each with its ratio to a baseline measured in the same run).
#
# Usage: benches/run.sh [--quick] [--reps N] [--duration S] [--bin PATH] [--out FILE]
#   --quick     1 repetition, scenarios 1, 4 and 7 only, short runs (CI: proves the script runs)
#   --reps N    repetitions per figure (default 3)
#   --duration  seconds per load run (default 10)
#   --bin PATH  the spotter binary (default: SPOTTER_BIN, else `cargo build --release`)
#   --out FILE  where to write the results (default benches/RESULTS.md)
#
# Peers: benches/peers/python_server (FastAPI + uvicorn + ai_edge_litert, pinned, in a venv under
# .cache/peer-venv) and nginx (Debian). Load: wrk (Debian) with benches/wrk/load.lua. Scenarios
# and their rules are described in benches/py/run_peers.py. Goals are reported, never asserted.
source "$(dirname "$0")/../scripts/lib.sh"

quick=0
reps=3
duration=10
runs=50
scenarios="1,2,3,4,5,6,7"
# Scenario 8 (issue 21): goodput under overload, uploads at concurrency 4 vs 16.
scenarios="$scenarios,8"
# Scenario 9 (issue 17): a YOLO detector end to end beside Python's reference pipeline.
scenarios="$scenarios,9"
bin="${SPOTTER_BIN:-}"
out="$REPO/benches/RESULTS.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --reps) [ $# -ge 2 ] || die "--reps needs a number"; reps="$2"; shift 2 ;;
    --duration) [ $# -ge 2 ] || die "--duration needs seconds"; duration="$2"; shift 2 ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a path"; bin="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a path"; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if [ "$quick" = 1 ]; then reps=1; duration=3; runs=10; scenarios="1,4,7"; fi
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (seconds)"

bash "$REPO/scripts/setup.sh"
apt_install wrk nginx-light python3-venv
if [ -z "$bin" ]; then
  say "building spotter (release)"
  cargo build --manifest-path "$REPO/Cargo.toml" --release --bin spotter
  bin="${CARGO_TARGET_DIR:-$REPO/target}/release/spotter"
fi
[ -x "$bin" ] || die "spotter binary not found at $bin"

# The Python peer's pinned environment; rebuilt only when its requirements change.
# (Scenarios 1, 4 and 7 don't use it: --quick skips it.)
peer_dir="$REPO/benches/peers/python_server"
venv="$CACHE/peer-venv"
want="$(sha256sum "$peer_dir/requirements.txt" | cut -d' ' -f1)"
if [ "$quick" = 1 ]; then
  venv_python=python3
elif [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
  say "creating $venv (FastAPI, uvicorn, ai-edge-litert; pinned)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$peer_dir/requirements.txt" >&2
  echo "$want" >"$venv/.requirements.sha256"
fi
venv_python="${venv_python:-$venv/bin/python}"

export SPOTTER_TESTDATA="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
testdata="$SPOTTER_TESTDATA"
image="$testdata/images/grace_hopper.bmp"
[ -f "$image" ] || image="$(ls "$CACHE/demo/photos/"* | head -n1)"
work="$CACHE/bench/run-$(date -u +%Y%m%dT%H%M%SZ)"
say "benchmarks: scenarios $scenarios, $reps repetition(s), ${duration}s load runs; work dir $work"
python3 "$REPO/benches/py/run_peers.py" \
  --spotter "$bin" --model "$CACHE/models/efficientnet_lite0.tflite" --photos "$CACHE/demo/photos" \
  --image "$image" --litert-lib "$(bash "$REPO/scripts/setup-litert.sh")" \
  --peer-python "$venv_python" --peer-dir "$peer_dir" --work "$work" --out "$out" \
  --runtime-vs-python "$REPO/benches/runtime_vs_python.sh" \
  --reps "$reps" --runs "$runs" --duration "$duration" --scenarios "$scenarios" \
  $([ "$quick" = 1 ] && echo --quick)
cat "$out"
