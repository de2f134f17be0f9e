#!/usr/bin/env bash
# The several-sources system test (issue 19): Spotter's .deb in a Debian VM
# with two V4L2 cameras (vivid, two instances), under systemd, queried over
# HTTPS from the host. As root:
#   bash tests/system/sources.sh       (SPOTTER_DEB=... to use a built .deb)
#
# It builds (or reuses) the tools, the .deb, the rootfs and the image (the
# same as tests/system/run.sh, in its own VM directory), boots it under QEMU
# (TCG) and checks, in order:
#   1. two cameras: `modprobe vivid n_devs=2 node_types=0x1,0x1` gives
#      /dev/video0 and /dev/video1; the packaged [source] is replaced by two
#      [[source]] entries ("left", "right"); the service becomes ready with
#      both sources up by name in /readyz and /api/v1/status;
#   2. results: both sources produce results carrying their name
#      (`source_name`, origin /dev/video0 or /dev/video1), and
#      `?source=NAME` returns only that source's; /metrics has
#      spotter_source_up{source="left"} and {source="right"};
#   3. one unplugged: the second camera's node made unopenable (chmod 000)
#      and vivid's "disconnect" control pressed on it under the streaming
#      daemon (vivid has one platform device for both instances, so
#      unbinding would take both cameras away) -> /readyz
#      stays 200, `right` lost and `left` up in checks.sources, SOURCE_LOST
#      with SPOTTER_SOURCE_NAME=right in the journal, `left` keeps
#      producing results, same PID;
#   4. back: the node's mode restored -> `right` up again by itself (the
#      time from the restore to its check passing is printed), results from
#      it again.
# Each phase's time is printed at the end.
source "$(dirname "$0")/lib.sh"

VM_ARCH=amd64
VM_DIR="$CACHE/vm-test/sources-$VM_ARCH"
ID_LOST="$(id_of SOURCE_LOST)"
[ -n "$ID_LOST" ] || die "SOURCE_LOST not found in src/core/ids.rs"
CONF=/etc/spotter/spotter.toml

# The check of source $1 in the last /readyz body: "True"/"False"/"None".
source_ok() { json '{s["name"]: s["ok"] for s in j["checks"].get("sources", [])}.get("'"$1"'")'; }
# The newest result's ts_ns of source $1 (0 when none).
newest_of() {
    https "/api/v1/results?source=$1&limit=1" "$KEY" >/dev/null
    json '(('"$RESULTS_EXPR"') or [{"ts_ns": 0}])[0]["ts_ns"]'
}
# Wait until source $1 has a result newer than $2 (within $3 s).
wait_newer() {
    local start=$SECONDS
    until [ "$(newest_of "$1")" -gt "$2" ]; do
        [ $((SECONDS - start)) -lt "$3" ] || vm_fail "no new result from source $1 within $3 s"
        sleep 2
    done
}

build_vm_image

vm_pick_ports
phase_start "boot to ssh (snapshot=on)"
# shellcheck disable=SC2119 # no argument: snapshot=on
vm_boot
vm_wait_ssh "$BOOT_TIMEOUT"
phase_end

phase_start "1. two vivid cameras, two [[source]]"
vm_ssh 'modprobe vivid n_devs=2 node_types=0x1,0x1 && udevadm settle && test -c /dev/video0 && test -c /dev/video1' \
    || vm_fail "modprobe vivid n_devs=2 failed"
# The packaged [source] table out, two [[source]] entries in (the two forms
# cannot be mixed).
vm_ssh "set -e
systemctl stop spotter
sed -i '/^\\[source\\]/,/^\\[/{/^\\[source\\]/d;/^\\[/!d}' $CONF
if grep -q '^\\[source\\]' $CONF; then echo '[source] still in the config' >&2; exit 1; fi
cat >>$CONF <<'TOML'

[[source]]
name = \"left\"
kind = \"v4l2\"
device = \"/dev/video0\"
fps = 10.0

[[source]]
name = \"right\"
kind = \"v4l2\"
device = \"/dev/video1\"
fps = 10.0
TOML
spotter check-config --syntax-only $CONF >/dev/null
systemctl start spotter" || vm_fail "cannot configure two sources: $(vm_ssh "cat $CONF; spotter check-config --syntax-only $CONF 2>&1 | tail -n 5")"
wait_active "$READY_TIMEOUT"
vm_ssh 'cat /var/lib/spotter/tls/cert.pem' >"$VM_DIR/cert.pem" || vm_fail "no TLS certificate in the guest"
KEY="$(vm_ssh 'cat /var/lib/spotter/initial-admin-key' | tr -d '[:space:]' || true)"
[ -n "$KEY" ] || vm_fail "no initial admin key in the guest"
start=$SECONDS
until [ "$(https /readyz "$KEY")" = 200 ] && [ "$(source_ok left)" = True ] && [ "$(source_ok right)" = True ]; do
    [ $((SECONDS - start)) -lt "$READY_TIMEOUT" ] || vm_fail "both sources not up: $(head -c 800 "$VM_DIR/body")"
    sleep 2
done
pass "ready, both sources up: $(json '[(s["name"], s["detail"]) for s in j["checks"]["sources"]]')"
https /api/v1/status "$KEY" >/dev/null
[ "$(json '[s["name"] for s in j["readiness"]["checks"]["sources"]]')" = "['left', 'right']" ] \
    || vm_fail "status does not list both sources: $(head -c 800 "$VM_DIR/body")"
phase_end

phase_start "2. results of each source, ?source="
for pair in left:/dev/video0 right:/dev/video1; do
    name="${pair%%:*}" dev="${pair#*:}"
    wait_newer "$name" 0 180
    https "/api/v1/results?source=$name&limit=50" "$KEY" >/dev/null
    [ "$(json 'all(r["source_name"] == "'"$name"'" and r["origin"] == "'"$dev"'" for r in ('"$RESULTS_EXPR"'))')" = True ] \
        || vm_fail "?source=$name returned other results: $(head -c 800 "$VM_DIR/body")"
    pass "$name: results from $dev, all named $name"
done
https /metrics "$KEY" >/dev/null
grep -q 'spotter_source_up{source="left"} 1' "$VM_DIR/body" && grep -q 'spotter_source_up{source="right"} 1' "$VM_DIR/body" \
    || vm_fail "per-source metrics missing: $(grep spotter_source_ "$VM_DIR/body" | head -n 10)"
pass "/metrics: spotter_source_up for left and right"
phase_end

phase_start "3. right unplugged, left streams, still ready"
read -r pid0 restarts0 _ < <(unit_state)
lost0="$(vm_ssh "journalctl -b -q -o cat MESSAGE_ID=$ID_LOST SPOTTER_SOURCE_NAME=right | wc -l")"
# The disconnect ends the stream (as a USB camera pulled out); vivid is
# "connected" again once the daemon closes the node, which the service user
# can then no longer open, so the camera stays lost until phase 4.
vm_ssh 'chmod 000 /dev/video1 && v4l2-ctl -d /dev/video1 -c disconnect=1' \
    || vm_fail "cannot disconnect vivid's second camera: $(vm_ssh 'v4l2-ctl -d /dev/video1 -l 2>&1 | tail -n 20')"
start=$SECONDS
until https /readyz "$KEY" >/dev/null && [ "$(source_ok right)" = False ]; do
    [ $((SECONDS - start)) -lt 60 ] || vm_fail "right not reported lost: $(head -c 800 "$VM_DIR/body")"
    sleep 1
done
[ "$(https /readyz "$KEY")" = 200 ] && [ "$(source_ok left)" = True ] \
    || vm_fail "one camera lost made the daemon not ready: $(head -c 800 "$VM_DIR/body")"
pass "readyz 200: $(json 'j["checks"]["source"]["detail"]')"
lost="$(vm_ssh "journalctl -b -q -o cat MESSAGE_ID=$ID_LOST SPOTTER_SOURCE_NAME=right | wc -l")"
[ "$lost" -gt "$lost0" ] || vm_fail "no SOURCE_LOST with SPOTTER_SOURCE_NAME=right in the journal"
t_left="$(newest_of left)"
wait_newer left "$t_left" 120
read -r pid restarts _ < <(unit_state)
[ "$pid" = "$pid0" ] && [ "$restarts" = "$restarts0" ] || vm_fail "the daemon restarted (pid $pid0 -> $pid)"
pass "left keeps producing results; SOURCE_LOST names right; pid $pid kept"
phase_end

phase_start "4. right back"
t_right="$(newest_of right)"
t0=$SECONDS
vm_ssh 'chmod --reference=/dev/video0 /dev/video1' || vm_fail "cannot restore /dev/video1's mode"
until https /readyz "$KEY" >/dev/null && [ "$(source_ok right)" = True ]; do
    [ $((SECONDS - t0)) -lt 60 ] || vm_fail "right not back within 60 s: $(head -c 800 "$VM_DIR/body")"
    sleep 0.5
done
pass "right up again $((SECONDS - t0)) s after the camera came back (host-side polling, TCG)"
wait_newer right "$t_right" 120
pass "results from right again"
phase_end

say "several-sources system test passed"
phases_report
