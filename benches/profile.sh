#!/usr/bin/env bash
# Where the time goes, for the benchmark goals Spotter misses (see
# benches/RESULTS.md): perf (Debian's linux-perf) samples with call graphs,
# reported as the top functions by self time and the top call chains.
#
# Usage: benches/profile.sh [--bin PATH] [--image JPEG] [--seconds N] [--out DIR]
#   --bin      a release spotter (default: SPOTTER_BIN, else cargo build --release)
#   --image    the frame for the pre-processing profile (default: a 640x480
#              JPEG from the test data)
#   --seconds  sampling time per load profile (default 8)
#   --out      folder for perf.data files and reports (default .cache/profile)
#
# Profiles:
#   1. `spotter bench` on the frame: decode, resize, quantize and invoke
#      (the overhead/invoke goal);
#   2. the daemon serving GET /api/v1/status over TLS with keep-alive (wrk,
#      16 connections): the requests/s and p99 goals against nginx;
#   3. the daemon serving POST /api/v1/classify at concurrency 4: the
#      throughput goal against the Python peer.
# Figures are printed, never asserted.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
td="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
bin="${SPOTTER_BIN:-}"; image="$td/images/table.jpg"; seconds=8; out="$CACHE/profile"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"
[ -f "$image" ] || die "no image at $image"
bash "$REPO/scripts/setup.sh"
apt_install linux-perf wrk curl
if [ -z "$bin" ]; then
    say "building spotter (release)"
    cargo build --manifest-path "$REPO/Cargo.toml" --release --bin spotter
    bin="${CARGO_TARGET_DIR:-$REPO/target}/release/spotter"
fi
[ -x "$bin" ] || die "spotter binary not found at $bin"
export SPOTTER_BIN="$bin"
litert="$CACHE/litert/$(uname -m)/libLiteRt.so"
[ -f "$litert" ] || die "no libLiteRt.so at $litert (scripts/setup.sh fetches it)"
mkdir -p "$out"

# report NAME: top functions by self time, then the heaviest call chains.
report() {
    local name="$1" data="$out/$1.data"
    {
        echo "## $name: top functions by self time"
        # (libLiteRt.so is stripped: its samples show as addresses; the
        # shared-object table below sums them.)
        perf report -i "$data" --stdio --no-children --sort dso,symbol \
            --percent-limit 1 -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | grep -v 'libLiteRt.so *\[\.\] 0x' | sed -E 's/( +-)* *$//' | head -n 25
        echo
        echo "## $name: by shared object"
        perf report -i "$data" --stdio --no-children --sort dso --percent-limit 1 -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | sed 's/ *$//' | head -n 10
    } | tee "$out/$name.txt"
    echo
}

say "1. spotter bench on $(basename "$image") (LiteRT, 2 threads)"
perf record -q -F 997 -g -o "$out/preprocess.data" -- \
    "$bin" bench --runtime litert --litert-lib "$litert" \
    --model "$td/models/classification/efficientnet_lite0_int8_2.tflite" \
    --image "$image" --threads 2 --runs 300 --warmup 10 >"$out/preprocess-bench.txt" 2>&1 \
    || { cat "$out/preprocess-bench.txt" >&2; die "spotter bench failed"; }
tail -n 12 "$out/preprocess-bench.txt"
report preprocess

work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
start_api_daemon "$work" "$port" "key_rate_per_s = 1000000.0
key_burst = 1000000
max_connections = 256
max_connections_per_address = 256
max_handshakes_per_address = 256"
url="https://127.0.0.1:$port"

say "2. GET /api/v1/status, wrk 16 connections, ${seconds}s"
perf record -q -F 997 -g -p "$SPOTTER_PID" -o "$out/status.data" -- sleep "$seconds" &
perf_pid=$!
wrk -t2 -c16 -d"${seconds}s" --latency -H "Authorization: Bearer $READ_KEY" "$url/api/v1/status" \
    | grep -E 'Requests/sec|99%|Non-2xx' || true
wait "$perf_pid" || true
report status

say "3. POST /api/v1/classify, wrk 4 connections, ${seconds}s"
lua="$work/post.lua"
cat >"$lua" <<LUA
local f = assert(io.open("$image", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
LUA
perf record -q -F 997 -g -p "$SPOTTER_PID" -o "$out/classify.data" -- sleep "$seconds" &
perf_pid=$!
wrk -t2 -c4 -d"${seconds}s" --latency -s "$lua" -H "Authorization: Bearer $READ_KEY" "$url/api/v1/classify" \
    | grep -E 'Requests/sec|99%|Non-2xx' || true
wait "$perf_pid" || true
report classify
say "reports and perf.data in $out (perf report -i $out/NAME.data)"
