# shellcheck shell=bash
# Host-side helpers shared by the VM system tests (tests/system/run.sh and
# tests/system/gpio.sh). Source it; don't run it. It sources scripts/lib.sh
# (say, die, REPO, CACHE) and image-build/vm.sh (vm_*), checks for root,
# sets the EXIT and ERR traps, and provides:
#   phase_start NAME / phase_end / phases_report   per-phase wall times
#   pass MSG                      an "ok: ..." line
#   build_vm_image                host tools, the .deb ($SPOTTER_DEB or
#                                 scripts/build-deb.sh) into DEB, the rootfs,
#                                 the image in VM_DIR (four phases)
#   https PATH [KEY]              status of a GET over HTTPS; body in $VM_DIR/body
#   json EXPR                     a Python expression on that body (as `j`)
#   wait_status PATH CODE TIMEOUT [KEY]
#   unit_state                    "PID NRESTARTS ACTIVE" of spotter.service
#   wait_active TIMEOUT
#   count_id MESSAGE_ID           journal entries with it, this boot
#   id_of NAME                    a MESSAGE_ID from src/core/ids.rs
#   camera_up_and_ready           modprobe vivid; active; KEY and cert.pem
# The caller sets VM_ARCH and VM_DIR before build_vm_image and vm_boot.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
# shellcheck source=../../image-build/vm.sh
source "$REPO/image-build/vm.sh"
[ "$(id -u)" -eq 0 ] || die "the system test needs root (image build keeps file owners)"

# shellcheck disable=SC2034 # BOOT_TIMEOUT, T_ALL, RESULTS_EXPR: for the scripts that source this
BOOT_TIMEOUT="${SPOTTER_VM_BOOT_TIMEOUT:-600}"   # TCG on 2 busy cores: generous
READY_TIMEOUT="${SPOTTER_VM_READY_TIMEOUT:-300}"
trap 'vm_kill' EXIT
# Any failing command not already reported: say where, with the console.
set -E
trap 'echo "error: ${BASH_SOURCE[0]#"$REPO"/} line $LINENO: $BASH_COMMAND" >&2; vm_console_tail 30' ERR

# ---- phase timing ----------------------------------------------------------
declare -a PHASES=()
phase_start() { PHASE_NAME="$1"; PHASE_T0=$SECONDS; say "phase: $1"; }
phase_end() { PHASES+=("$(printf '%-34s %4d s' "$PHASE_NAME" $((SECONDS - PHASE_T0)))"); }
phases_report() { printf '  %s\n' "${PHASES[@]}"; }
# shellcheck disable=SC2034
T_ALL=$SECONDS
pass() { printf 'ok: %s\n' "$*"; }

# ---- build -----------------------------------------------------------------
# The rootfs flavour comes from the environment build-rootfs.sh reads
# (SPOTTER_IMAGE_SUITE, SPOTTER_IMAGE_BACKPORTS_KERNEL).
build_vm_image() {
    mkdir -p "$VM_DIR"
    phase_start "host tools (apt)"
    bash "$REPO/image-build/tools.sh"
    phase_end

    phase_start ".deb (scripts/build-deb.sh)"
    if [ -n "${SPOTTER_DEB:-}" ]; then
        DEB="$SPOTTER_DEB"
    else
        [ -f "$REPO/scripts/build-deb.sh" ] || die "scripts/build-deb.sh not found (the packaging step); or set SPOTTER_DEB"
        DEB="$(bash "$REPO/scripts/build-deb.sh" | tail -n1)"
    fi
    [ -f "$DEB" ] || die "no .deb at '$DEB'"
    phase_end

    phase_start "rootfs (mmdebstrap; cached by package list)"
    bash "$REPO/image-build/build-rootfs.sh" "$VM_ARCH" >/dev/null
    phase_end

    phase_start "image (dpkg -i + mkfs.ext4 -d)"
    # SPOTTER_VM_REUSE_IMAGE=1 (local runs only) keeps an image already built.
    if [ "${SPOTTER_VM_REUSE_IMAGE:-0}" != 1 ] || [ ! -f "$VM_DIR/disk.img" ]; then
        # The system tests follow results frame by frame (camera, unplug,
        # GPIO outputs), as before sightings: every frame is stored and
        # inferred. The storage policy and motion gating have their own
        # tests (tests/daemon/sightings.rs).
        printf '[store]\nkeep_frames = "all"\n\n[motion]\nenabled = false\n' >"$VM_DIR/05-image.toml"
        SPOTTER_IMAGE_DROPIN="$VM_DIR/05-image.toml" \
            bash "$REPO/image-build/build-image.sh" "$VM_ARCH" "$DEB" "$VM_DIR" "$(vm_client_key)" >/dev/null
    fi
    phase_end
}

# ---- host-side helpers -----------------------------------------------------
# https PATH [KEY] -> writes the body to $VM_DIR/body, prints the status.
https() {
    local path="$1" key="${2:-}"
    local -a auth=()
    [ -n "$key" ] && auth=(-H "Authorization: Bearer $key")
    curl -sS --max-time 30 --cacert "$VM_DIR/cert.pem" "${auth[@]}" \
        -o "$VM_DIR/body" -w '%{http_code}' "https://127.0.0.1:$VM_HTTPS_PORT$path" || echo 000
}
# json EXPR: evaluate a Python expression on the last body (as `j`).
json() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$VM_DIR/body" "$1"; }
# The result list of a /api/v1/results body, for json expressions.
# shellcheck disable=SC2034
RESULTS_EXPR='j["results"] if isinstance(j, dict) else j'
# wait_status PATH CODE TIMEOUT [KEY]
wait_status() {
    local path="$1" want="$2" timeout="$3" key="${4:-}" start=$SECONDS code
    while :; do
        code="$(https "$path" "$key")"
        [ "$code" = "$want" ] && return 0
        [ $((SECONDS - start)) -lt "$timeout" ] || \
            vm_fail "GET $path: wanted $want within ${timeout}s, last $code: $(head -c 400 "$VM_DIR/body" 2>/dev/null)"
        sleep 2
    done
}
# Guest state in one ssh round trip: "PID NRESTARTS ACTIVE".
unit_state() {
    vm_ssh 'systemctl show spotter -p MainPID --value; systemctl show spotter -p NRestarts --value; systemctl is-active spotter || true' | xargs
}
wait_active() { # TIMEOUT
    local start=$SECONDS
    until [ "$(vm_ssh 'systemctl is-active spotter' 2>/dev/null)" = active ]; do
        [ $((SECONDS - start)) -lt "$1" ] || {
            vm_ssh 'systemctl status spotter --no-pager -n 30' >&2 || true
            vm_fail "spotter.service not active within $1s"
        }
        sleep 3
    done
}
# Count the guest journal's entries with a MESSAGE_ID in this boot.
count_id() { vm_ssh "journalctl -b -q -o cat MESSAGE_ID=$1 | wc -l"; }
id_of() { sed -n "s/^pub const $1: &str = \"\\([0-9a-f]*\\)\";/\\1/p" "$REPO/src/core/ids.rs"; }

# Camera up and the daemon ready; fetch the API key and the certificate.
camera_up_and_ready() {
    vm_ssh 'modprobe vivid && udevadm settle && test -c /dev/video0' || vm_fail "modprobe vivid failed"
    wait_active "$READY_TIMEOUT"
    vm_ssh 'cat /var/lib/spotter/tls/cert.pem' >"$VM_DIR/cert.pem" || vm_fail "no TLS certificate in the guest"
    KEY="$(vm_ssh 'cat /var/lib/spotter/initial-admin-key' | tr -d '[:space:]' || true)"
    [ -n "$KEY" ] || vm_fail "no initial admin key in the guest"
    wait_status /readyz 200 "$READY_TIMEOUT"
}
