#!/usr/bin/env bash
# Run testssl.sh (Debian package `testssl.sh`, installed if missing) against
# the daemon's TLS listener on loopback and fail if it reports any HIGH or
# CRITICAL finding. Takes a few minutes, so it is not part of every CI run.
#
# Usage: benches/testssl.sh          (report in .cache/testssl/<time>.json)
# Environment: SPOTTER_BIN (a built spotter), SPOTTER_TESTDATA.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
apt_install testssl.sh curl jq
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
start_api_daemon "$work" "$port" ""
out="$CACHE/testssl/$(date +%Y%m%dT%H%M%S).json"
mkdir -p "$(dirname "$out")"
say "testssl.sh against 127.0.0.1:$port (report: $out)"
testssl --quiet --color 0 --warnings off --jsonfile "$out" "127.0.0.1:$port" > "$work/testssl.txt" || true
grep -E 'HIGH|CRITICAL' "$work/testssl.txt" || true
bad="$(jq '[.[] | select(.severity == "HIGH" or .severity == "CRITICAL")] | length' "$out")"
jq -r '.[] | select(.severity == "HIGH" or .severity == "CRITICAL" or .severity == "MEDIUM") | "\(.severity)\t\(.id)\t\(.finding)"' "$out"
say "HIGH or CRITICAL findings: $bad"
rm -rf "$work"
[ "$bad" -eq 0 ]
