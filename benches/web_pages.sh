#!/usr/bin/env bash
# The web interface's budgets (issue 20), measured on one daemon in one run;
# figures are printed, never asserted:
#   1. bytes of each page's first load (its HTML and every /assets/ file it
#      links; the frame image aside), against 100 KB;
#   2. time per page on loopback (request sent to the last byte read, on one
#      kept-alive TLS connection, so no handshake), p50 and p95 over
#      --requests requests, against 5 ms at p95;
#   3. inference throughput (frames inferred per second, from the status
#      counters) for --seconds without viewers, then for --seconds with two
#      viewers each fetching the latest frame as the Live page does (one
#      frame a second) or, with --viewer-fps N, N a second; their ratio
#      against a 5 % cost.
# The source replays one photo faster than the model keeps up with, so
# inference is the bottleneck and any cost of the viewers shows.
#
# Usage: benches/web_pages.sh [--seconds 30] [--requests 200] [--viewer-fps 1] [--model PATH]
# Environment: SPOTTER_BIN (a built spotter; default: cargo build, debug
# profile), SPOTTER_TESTDATA (default ../shared/testdata).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
td="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
seconds=30; requests=200; viewer_fps=1
model="$td/models/classification/mobilenet_v2_1.0_224_quant.tflite"
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --viewer-fps) viewer_fps="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"
[[ "$requests" =~ ^[1-9][0-9]*$ ]] || die "--requests must be a positive integer"
[ -f "$model" ] || die "model not found: $model (set SPOTTER_TESTDATA)"
apt_install curl python3
bin="$(spotter_bin)"
work="$(mktemp -d)"
pid=""; viewers=()
cleanup() {
    for v in "${viewers[@]}"; do kill "$v" 2>/dev/null || true; done
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
mkdir -p "$work/photos"
cp "$td/images/grace_hopper.bmp" "$work/photos/"
cat > "$work/spotter.toml" <<TOML
[daemon]
state_dir = "$work/state"
log_level = "warn"
[source]
kind = "files"
dir = "$work/photos"
fps = 240.0
loop = true
[model]
path = "$model"
threads = 1
[store]
keep_frames = "all"
[motion]
enabled = false
[api]
listen = "127.0.0.1:$port"
TOML
"$bin" run --config "$work/spotter.toml" > "$work/daemon.log" 2>&1 &
pid=$!
base="https://127.0.0.1:$port"
for _ in $(seq 1 1200); do
    [ -s "$work/state/initial-admin-key" ] && curl -sfk "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/daemon.log" >&2; die "the daemon exited"; }
    sleep 0.1
done
key="$(tr -d '\n' < "$work/state/initial-admin-key")"
cert="$work/state/tls/cert.pem"
get() { curl -s --cacert "$cert" -H "Authorization: Bearer $key" "$@"; }

say "1. first-load bytes per page (HTML + linked assets; budget 100 KB)"
for path in / /live /history /device; do
    if [ "$path" = / ]; then # the sign-in page: without a key
        curl -s --cacert "$cert" -o "$work/page.html" "$base$path"
    else
        get -o "$work/page.html" "$base$path"
    fi
    total=$(stat -c %s "$work/page.html")
    for a in $(grep -o '"/assets/[^"]*"' "$work/page.html" | tr -d '"' | sort -u); do
        total=$((total + $(get "$base$a" | wc -c)))
    done
    printf '  %-9s %7d bytes\n' "$path" "$total"
done

say "2. server time per page, $requests requests each on one kept-alive connection (budget p95 <= 5 ms)"
python3 - "$port" "$cert" "$key" "$requests" <<'PY'
import http.client, ssl, sys, time
port, cert, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cert)
ctx.check_hostname = False
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for page in ["/live", "/history", "/device"]:
    t = []
    for _ in range(n):
        s = time.perf_counter()
        conn.request("GET", page, headers={"Authorization": "Bearer " + key})
        r = conn.getresponse()
        r.read()
        t.append((time.perf_counter() - s) * 1000)
        assert r.status == 200, (page, r.status)
        time.sleep(0.012)  # under the key's default rate limit (100/s)
    t.sort()
    q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
    print(f"  {page:<9} p50 {q(0.5):6.2f} ms   p95 {q(0.95):6.2f} ms   max {t[-1]:6.2f} ms")
PY

inferences() {
    get "$base/api/v1/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['inferences'])"
}
rate() { # inferred frames per second over --seconds
    local n0 n1
    n0="$(inferences)"; sleep "$seconds"; n1="$(inferences)"
    awk -v a="$n0" -v b="$n1" -v s="$seconds" 'BEGIN { printf "%.2f", (b - a) / s }'
}
say "3. inference throughput without and with two viewers ($seconds s each, $viewer_fps frame/s per viewer)"
sleep 3
without="$(rate)"
for _ in 1 2; do
    (
        while true; do
            get -o /dev/null "$base/api/v1/sources/default/frame"
            sleep "$(awk -v f="$viewer_fps" 'BEGIN { printf "%.3f", 1 / f }')"
        done
    ) &
    viewers+=($!)
done
sleep 2
with="$(rate)"
printf '  without viewers: %s inferred/s\n  with two viewers: %s inferred/s\n' "$without" "$with"
awk -v a="$without" -v b="$with" 'BEGIN {
    c = (a > 0) ? (a - b) / a * 100 : 0
    printf "  cost of two viewers: %.1f %% (budget <= 5 %%: %s)\n", c, (c <= 5 ? "met" : "not met") }'
say "machine: $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg); commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); binary $bin"
