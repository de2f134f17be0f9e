#!/usr/bin/env bash
# Contract test: schemathesis (PyPI, pinned, in a venv under .cache) runs
# the OpenAPI document the daemon serves (docs/openapi.json) against a
# throw-away daemon with a read key, and fails on any server error (5xx) or
# any response that does not match the document.
#
# Usage: scripts/schemathesis.sh [--max-examples N]   (default 25)
# Environment: SPOTTER_BIN (a built spotter), SPOTTER_TESTDATA.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$REPO/scripts/api-daemon.sh"
SCHEMATHESIS_VERSION=4.32.5
examples=25
while [ $# -gt 0 ]; do
    case "$1" in
        --max-examples) examples="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
apt_install curl python3-venv
venv="$CACHE/schemathesis-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    say "installing schemathesis==$SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --disable-pip-version-check -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
# Limits raised so generated traffic is not answered with 429s.
start_api_daemon "$work" "$port" "key_rate_per_s = 100000.0
key_burst = 100000
auth_fail_rate_per_s = 100000.0
auth_fail_burst = 100000"
say "schemathesis $SCHEMATHESIS_VERSION against https://127.0.0.1:$port (read key)"
# The event stream never ends, so it is excluded; the admin-only routes answer
# 403 to the read key, which the document describes.
"$venv/bin/st" --no-color run "$REPO/docs/openapi.json" \
    --url "https://127.0.0.1:$port" \
    --header "Authorization: Bearer $READ_KEY" \
    --tls-verify "$CERT" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --exclude-path /api/v1/events \
    --max-examples "$examples" \
    --seed 1 && status=0 || status=$?
rm -rf "$work"
exit $status
