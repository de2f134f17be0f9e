#!/usr/bin/env bash
# Requests/s and latency (p50/p99) of GET /api/v1/status over TLS with
# keep-alive on loopback, measured with wrk (Debian package, installed if
# missing) against a throw-away daemon whose per-key rate limit is raised
# out of the way. Figures are printed, never asserted.
#
# Usage: benches/api_status.sh [--duration 20s] [--connections 8] [--threads 2]
# Environment: SPOTTER_BIN (a built spotter), SPOTTER_TESTDATA.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
duration=20s; conns=8; threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --connections) conns="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
apt_install wrk curl
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
start_api_daemon "$work" "$port" "key_rate_per_s = 1000000.0
key_burst = 1000000
max_connections = 256
max_connections_per_address = 256
max_handshakes_per_address = 256"
say "wrk -t$threads -c$conns -d$duration --latency https://127.0.0.1:$port/api/v1/status (load: $(cut -d' ' -f1-3 /proc/loadavg))"
wrk -t"$threads" -c"$conns" -d"$duration" --latency \
    -H "Authorization: Bearer $READ_KEY" "https://127.0.0.1:$port/api/v1/status" | tee "$work/wrk.txt"
non2xx="$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/wrk.txt" || true)"
[ -z "$non2xx" ] || say "warning: $non2xx (rate limited or failing?)"
say "machine: $(nproc) cores, $(uname -m); commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
rm -rf "$work"
