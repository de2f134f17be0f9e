# Start a throw-away Spotter daemon for API tools (wrk, testssl.sh,
# schemathesis). Source it after scripts/lib.sh; then call
#   start_api_daemon WORKDIR PORT "EXTRA [api] TOML LINES"
# It sets SPOTTER_PID, CERT (the certificate to trust: the generated one, or
# API_CA when the extra lines configure [api] cert and key), ADMIN_KEY and
# READ_KEY, and stops the daemon when the calling script exits.
# SPOTTER_BIN: a built spotter (default: cargo build, debug profile).
# SPOTTER_TESTDATA: the test data folder (default ../shared/testdata).

spotter_bin() {
    if [ -n "${SPOTTER_BIN:-}" ]; then echo "$SPOTTER_BIN"; return; fi
    (cd "$REPO" && cargo build -q --bin spotter >&2)
    echo "${CARGO_TARGET_DIR:-$REPO/target}/debug/spotter"
}

start_api_daemon() { # WORKDIR PORT EXTRA_TOML
    local dir="$1" port="$2" extra="${3:-}"
    local td="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
    [ -d "$td/images" ] || die "test data not found at $td (set SPOTTER_TESTDATA)"
    local bin; bin="$(spotter_bin)"
    mkdir -p "$dir/photos"
    cp "$td/images/cat.bmp" "$td/images/pets.jpg" "$dir/photos/"
    cat > "$dir/spotter.toml" <<TOML
[daemon]
state_dir = "$dir/state"
log_level = "warn"
[source]
kind = "files"
dir = "$dir/photos"
fps = 2.0
[model]
path = "$td/models/classification/mobilenet_v2_1.0_224_quant.tflite"
labels = "$td/labels/labels_mobilenet_quant_v1_224.txt"
threads = 1
[api]
listen = "127.0.0.1:$port"
$extra
TOML
    "$bin" run --config "$dir/spotter.toml" > "$dir/daemon.log" 2>&1 &
    SPOTTER_PID=$!
    trap 'kill $SPOTTER_PID 2>/dev/null || true; wait $SPOTTER_PID 2>/dev/null || true' EXIT
    CERT="${API_CA:-$dir/state/tls/cert.pem}"
    local i
    for i in $(seq 1 600); do
        [ -s "$dir/state/initial-admin-key" ] && [ -s "$CERT" ] && \
            curl -sf --cacert "$CERT" "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        kill -0 "$SPOTTER_PID" 2>/dev/null || { cat "$dir/daemon.log" >&2; die "the daemon exited"; }
        sleep 0.1
    done
    ADMIN_KEY="$(tr -d '\n' < "$dir/state/initial-admin-key")"
    READ_KEY="$("$bin" keys --config "$dir/spotter.toml" create --name tools --scope read | grep -o 'spk_[0-9a-zA-Z_]*' | head -n1)"
    [ -n "$READ_KEY" ] || die "could not create a read key"
}
