#!/usr/bin/env bash
# arm64 smoke test: the aarch64 .deb in a Debian arm64 VM under
# qemu-system-aarch64 (-machine virt -cpu cortex-a72, TCG), as root:
#   bash tests/system/smoke-arm64.sh
# Boots, loads vivid, and checks that spotter.service becomes active, that
# /readyz is 200 over HTTPS from the host and that results from /dev/video0
# are served with the guest's admin key. The full checks are amd64's
# (tests/system/run.sh); this proves the same flow on the Pi's architecture.
# Not in CI: a cold arm64 rootfs (built through qemu-user) and boot under
# full-system emulation take longer than CI's budget allows on 2 cores.
# SPOTTER_DEB=path uses a ready .deb instead of scripts/build-deb.sh.
source "$(dirname "$0")/../../scripts/lib.sh"
source "$REPO/image-build/vm.sh"
[ "$(id -u)" -eq 0 ] || die "needs root (image build keeps file owners)"
VM_ARCH=arm64
VM_DIR="$CACHE/vm-test/$VM_ARCH"
mkdir -p "$VM_DIR"
trap 'vm_kill' EXIT
T0=$SECONDS
t() { say "$1 after $((SECONDS - T0)) s"; }

bash "$REPO/image-build/tools.sh" --arm64
DEB="${SPOTTER_DEB:-}"
if [ -z "$DEB" ]; then
    [ -f "$REPO/scripts/build-deb.sh" ] || die "scripts/build-deb.sh not found; or set SPOTTER_DEB"
    DEB="$(bash "$REPO/scripts/build-deb.sh" --target aarch64-unknown-linux-gnu | tail -n1)"
fi
t ".deb $DEB"
bash "$REPO/image-build/build-rootfs.sh" arm64 >/dev/null
t "rootfs"
bash "$REPO/image-build/build-image.sh" arm64 "$DEB" "$VM_DIR" "$(vm_client_key)" >/dev/null
t "image"

vm_pick_ports
vm_boot
vm_wait_ssh "${SPOTTER_VM_BOOT_TIMEOUT:-1200}"
t "ssh up"
vm_ssh 'modprobe vivid && udevadm settle && test -c /dev/video0' || vm_fail "modprobe vivid failed"
start=$SECONDS
until [ "$(vm_ssh 'systemctl is-active spotter')" = active ]; do
    [ $((SECONDS - start)) -lt 900 ] || vm_fail "spotter.service not active within 900 s"
    sleep 5
done
vm_ssh 'cat /var/lib/spotter/tls/cert.pem' >"$VM_DIR/cert.pem"
KEY="$(vm_ssh 'cat /var/lib/spotter/initial-admin-key' | tr -d '[:space:]')"
curl() { command curl -sS --max-time 60 --cacert "$VM_DIR/cert.pem" "$@"; }
code="$(curl -o /dev/null -w '%{http_code}' "https://127.0.0.1:$VM_HTTPS_PORT/readyz")"
[ "$code" = 200 ] || vm_fail "/readyz: $code"
t "ready"
start=$SECONDS
until curl -H "Authorization: Bearer $KEY" "https://127.0.0.1:$VM_HTTPS_PORT/api/v1/results/latest" -o "$VM_DIR/latest.json" -w '%{http_code}' | grep -qx 200; do
    [ $((SECONDS - start)) -lt 300 ] || vm_fail "no result within 300 s"
    sleep 5
done
python3 - "$VM_DIR/latest.json" <<'PY' || vm_fail "unexpected result: $(cat "$VM_DIR/latest.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["source"].startswith("v4l2:/dev/video0 ") and r["origin"] == "/dev/video0", r
assert r["classes"] and all(0 <= c["score"] <= 1 for c in r["classes"]), r
print("ok: arm64 result from /dev/video0: %s (%s)" % (r["classes"][0]["label"], r["runtime"]))
PY
vm_poweroff 300
t "arm64 smoke passed"
echo "1 passed, 0 failed"
