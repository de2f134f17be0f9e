#!/usr/bin/env bash
# Motion gating (issue 18): CPU seconds per minute of a static scene with
# motion gating against the same daemon, model and scene ungated, measured
# one after the other in one run, and their ratio (target <= 1/5).
#
# The scene: one photo scaled to 640x480 with temporal camera noise (ffmpeg's
# `noise` filter), as a loop of distinct JPEG frames replayed by the `files`
# source at 15 fps. The daemon's own CPU time (utime + stime of its process,
# /proc/PID/stat) is read after the model is ready and again --seconds
# later; the status counters say how many frames were inferred and skipped.
# Figures are printed, never asserted.
#
# Usage: benches/motion_cpu.sh [--seconds 60] [--fps 15] [--model PATH] [--image PATH]
# Environment: SPOTTER_BIN (a built spotter; default: cargo build, debug
# profile), SPOTTER_TESTDATA (default ../shared/testdata).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
td="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
seconds=60; fps=15
model="$td/models/classification/efficientnet_lite0_int8_2.tflite"
image="$td/images/table.jpg"
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --fps) fps="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"
[ -f "$model" ] || die "model not found: $model (set SPOTTER_TESTDATA)"
[ -f "$image" ] || die "image not found: $image"
apt_install ffmpeg curl
bin="$(spotter_bin)"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/frames"
ffmpeg -loglevel error -loop 1 -i "$image" \
    -vf "scale=640:480,format=yuv420p,noise=alls=8:allf=t" \
    -frames:v 45 -q:v 4 "$work/frames/f%03d.jpg"
clk="$(getconf CLK_TCK)"

cpu_ticks() { # utime + stime of PID (fields 14 and 15 of /proc/PID/stat)
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

status_counter() { # DIR PORT NAME
    curl -sk -H "Authorization: Bearer $(tr -d '\n' < "$1/state/initial-admin-key")" \
        "https://127.0.0.1:$2/api/v1/status" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['counters'].get('$3', 0))"
}

# run NAME ENABLED: prints "cpu_s_per_min inferences frames_static".
run() {
    local name="$1" enabled="$2" dir="$work/$1" port=$((20000 + RANDOM % 20000))
    mkdir -p "$dir"
    cat > "$dir/spotter.toml" <<TOML
[daemon]
state_dir = "$dir/state"
log_level = "warn"
[source]
kind = "files"
dir = "$work/frames"
fps = $fps
loop = true
[model]
path = "$model"
threads = 1
[motion]
enabled = $enabled
[api]
listen = "127.0.0.1:$port"
TOML
    "$bin" run --config "$dir/spotter.toml" > "$dir/daemon.log" 2>&1 &
    pid=$!
    local i
    for i in $(seq 1 1200); do
        curl -sfk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; die "the $name daemon exited"; }
        sleep 0.1
    done
    sleep 3 # past the first frames (the background starts on the first)
    local c0 n0 s0 c1 n1 s1
    c0="$(cpu_ticks "$pid")"; n0="$(status_counter "$dir" "$port" inferences)"
    s0="$(status_counter "$dir" "$port" frames_static)"
    sleep "$seconds"
    c1="$(cpu_ticks "$pid")"; n1="$(status_counter "$dir" "$port" inferences)"
    s1="$(status_counter "$dir" "$port" frames_static)"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    awk -v d="$((c1 - c0))" -v clk="$clk" -v s="$seconds" -v n="$((n1 - n0))" -v st="$((s1 - s0))" \
        'BEGIN { printf "%.2f %d %d\n", d / clk * 60 / s, n, st }'
}

say "static scene, $fps fps, $seconds s per run, model $(basename "$model"), load $(cut -d' ' -f1-3 /proc/loadavg)"
run ungated false > "$work/ungated.txt"
run gated true > "$work/gated.txt"
read -r u_cpu u_n u_s < "$work/ungated.txt"
read -r g_cpu g_n g_s < "$work/gated.txt"
printf '%-8s %16s %11s %14s\n' run "CPU s/min" inferred frames_static
printf '%-8s %16s %11s %14s\n' ungated "$u_cpu" "$u_n" "$u_s"
printf '%-8s %16s %11s %14s\n' gated "$g_cpu" "$g_n" "$g_s"
awk -v g="$g_cpu" -v u="$u_cpu" 'BEGIN {
    r = (u > 0) ? g / u : 0
    printf "gated / ungated CPU: %.3f (target <= 0.2: %s)\n", r, (r <= 0.2 ? "met" : "not met") }'
say "machine: $(nproc) cores, $(uname -m); commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); binary $bin"
