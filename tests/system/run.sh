#!/usr/bin/env bash
# The system test: Spotter's .deb in a Debian VM with a real V4L2 camera
# (the kernel's vivid driver), under systemd, queried over HTTPS from the
# host. One command, as root:   bash tests/system/run.sh
#
# It builds the amd64 .deb (scripts/build-deb.sh; or uses $SPOTTER_DEB),
# the rootfs (cached under .cache/image, keyed by its package list) and the
# image, boots the VM under QEMU (TCG), and checks, in order:
#   1. ready: after `modprobe vivid` the unit is active (Type=notify, a
#      StatusText), /readyz is 200 from the host, results are served with
#      the guest's admin key (YUYV frames from /dev/video0) and refused
#      without it;
#   1b. frame: with vivid's clock overlay off, the daemon's result equals
#      `spotter classify --raw yuyv:WxH` on a frame captured from the device;
#   2. journal: the READY event with its MESSAGE_ID and fields; no secret
#      (API key, TLS private key) anywhere in the journal;
#   3. camera loss x5: vivid unplugged under the streaming daemon -> 503
#      naming the source, SOURCE_LOST once, same PID, no watchdog restart
#      (once for longer than WatchdogSec); modprobe -> 200 again by itself;
#   4. crash: kill -9 -> restarted, earlier results still served, store
#      readable and written;
#   5. hang: kill -STOP -> systemd's watchdog restarts it and says so;
#   6. hardening: service user, no capabilities, NoNewPrivs, seccomp,
#      writes denied outside the state directory (in the service's own
#      namespaces), `systemd-analyze security` = the offline score;
#   7. reboot persistence: on a persistent disk, results, API key and TLS
#      certificate (same fingerprint) survive a power-off and boot.
# Each phase's time is printed at the end. Failures print the serial
# console's tail. Tools come from Debian's packages (image-build/tools.sh).
source "$(dirname "$0")/lib.sh"

VM_ARCH=amd64
VM_DIR="$CACHE/vm-test/$VM_ARCH"
ID_READY="$(id_of READY)"; ID_LOST="$(id_of SOURCE_LOST)"; ID_RECOVERED="$(id_of SOURCE_RECOVERED)"
ID_CERT="$(id_of CERT_GENERATED)"; ID_INITKEY="$(id_of INITIAL_ADMIN_KEY_CREATED)"
for v in ID_READY ID_LOST ID_RECOVERED ID_CERT ID_INITKEY; do [ -n "${!v}" ] || die "$v not found in src/core/ids.rs"; done

fingerprint() {
    openssl s_client -connect "127.0.0.1:$VM_HTTPS_PORT" -servername localhost </dev/null 2>/dev/null \
        | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2 || true
}

# ---- build -----------------------------------------------------------------
build_vm_image

# The offline exposure score of the unit the .deb ships, for check 6.
unitdir="$(mktemp -d)"
dpkg-deb -x "$DEB" "$unitdir"
unit="$(find "$unitdir" -name spotter.service -path '*systemd/system*' | head -n1)"
[ -n "$unit" ] || die "the .deb has no spotter.service"
OFFLINE_EXPOSURE="$(systemd-analyze security --offline=true --no-pager "$unit" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
rm -rf "$unitdir"
[ -n "$OFFLINE_EXPOSURE" ] || die "systemd-analyze security --offline gave no exposure score"

# ---- boot 1 (snapshot): checks 1-6 -----------------------------------------
vm_pick_ports
phase_start "boot 1 to ssh (snapshot=on)"
vm_boot
vm_wait_ssh "$BOOT_TIMEOUT"
phase_end

phase_start "1. modprobe vivid -> ready, results"
camera_up_and_ready
utype="$(vm_ssh 'systemctl show spotter -p Type --value')"
ustatus="$(vm_ssh 'systemctl show spotter -p StatusText --value')"
[ "$utype" = notify ] || vm_fail "spotter.service Type=$utype, expected notify"
[ -n "$ustatus" ] || vm_fail "spotter.service has no StatusText"
# Active by itself once the camera appeared: not through a start timeout
# and a restart (the device cgroup must let a camera that appears later in).
read -r _ restarts _ < <(unit_state)
[ "$restarts" = 0 ] || vm_fail "spotter.service needed $restarts restart(s) to become active after modprobe vivid"
pass "active without a restart, Type=notify, StatusText=$ustatus"
wait_status /readyz 200 10 "$KEY"
[ "$(json 'j["ready"] and j["checks"]["source"]["ok"]')" = True ] || vm_fail "readyz body: $(cat "$VM_DIR/body")"
pass "/readyz 200 over HTTPS from the host (certificate verified)"
code="$(https '/api/v1/results?limit=5')"
[ "$code" = 401 ] || vm_fail "/api/v1/results without a key: $code, expected 401"
wait_status '/api/v1/results?limit=5' 200 10 "$KEY"
start=$SECONDS
until [ "$(json 'len(j["results"]) if isinstance(j, dict) else len(j)')" -ge 2 ]; do
    [ $((SECONDS - start)) -lt 120 ] || vm_fail "fewer than 2 results after 120 s: $(head -c 400 "$VM_DIR/body")"
    sleep 3; https '/api/v1/results?limit=5' "$KEY" >/dev/null
done
# A classification of a real V4L2 frame: source, origin, size, top-k.
# vivid offers raw formats only, so this is Spotter's YUYV path.
check='(lambda r: r["source"].startswith("v4l2:/dev/video0 ") and " YUYV@" in r["source"] and r["origin"]=="/dev/video0" and r["image_width"]>0 and len(r["classes"])==5 and all(0<=c["score"]<=1 for c in r["classes"]))(('"$RESULTS_EXPR"')[0])'
[ "$(json "$check")" = True ] || vm_fail "unexpected result: $(head -c 800 "$VM_DIR/body")"
pass "results from /dev/video0: $(json '[(r["classes"][0]["label"], r["image_width"], r["image_height"]) for r in ('"$RESULTS_EXPR"')][:1]')"
https /api/v1/status "$KEY" >/dev/null
pass "status: source $(json 'j.get("source")')"
phase_end

phase_start "1b. a captured frame: daemon = spotter classify"
# vivid's test pattern is static once its on-screen text (a clock) is off, so
# every frame from /dev/video0 is the same: the daemon's result for the
# latest frame must equal `spotter classify --raw` on a frame captured from
# the same device at the same size (the daemon stopped meanwhile: one
# streamer at a time). Catches a YUYV path that differs between the camera
# pipeline and the classifier (stride, chroma, resize), end to end.
vm_ssh 'v4l2-ctl -d /dev/video0 -c osd_text_mode=2' || vm_fail "cannot turn vivid's OSD text off"
sleep 3   # frames with the clock still drawn are in flight
https '/api/v1/results?limit=1' "$KEY" >/dev/null
t_osd="$(json '('"$RESULTS_EXPR"')[0]["ts_ns"]')"
start=$SECONDS
until https '/api/v1/results/latest' "$KEY" >/dev/null && [ "$(json 'j["ts_ns"]')" -gt "$t_osd" ]; do
    [ $((SECONDS - start)) -lt 60 ] || vm_fail "no result after turning the OSD off"
    sleep 2
done
daemon_top="$(json '"%s %.4f %dx%d" % (j["classes"][0]["label"], j["classes"][0]["score"], j["image_width"], j["image_height"])')"
read -r _ _ size <<<"$daemon_top"
vm_ssh "set -e
  systemctl stop spotter
  v4l2-ctl -d /dev/video0 -c osd_text_mode=2
  v4l2-ctl -d /dev/video0 --set-fmt-video=width=${size%x*},height=${size#*x},pixelformat=YUYV
  v4l2-ctl -d /dev/video0 --stream-mmap --stream-skip=3 --stream-count=1 --stream-to=/tmp/frame.yuv
  model=\$(sed -n 's/^path *= *\"\\(.*\\)\"/\\1/p' /etc/spotter/spotter.toml | head -n1)
  spotter classify --json --raw yuyv:$size --model \"\$model\" /tmp/frame.yuv >/tmp/classify.json
  systemctl start spotter" || vm_fail "capturing and classifying a raw frame in the guest failed"
vm_ssh 'cat /tmp/classify.json' >"$VM_DIR/body"
cli_top="$(json '"%s %.4f" % (j["results"][0]["label"], j["results"][0]["score"])')"
read -r dl ds _ <<<"$daemon_top"; read -r cl cs <<<"$cli_top"
[ "$dl" = "$cl" ] && python3 -c "import sys; sys.exit(abs($ds - $cs) > 0.01)" \
    || vm_fail "daemon's result ($daemon_top) differs from spotter classify on a captured frame ($cli_top)"
pass "frame $size: daemon $dl $ds = spotter classify --raw yuyv:$size $cl $cs"
wait_active "$READY_TIMEOUT"
wait_status /readyz 200 "$READY_TIMEOUT" "$KEY"
phase_end

phase_start "2. journal: MESSAGE_IDs, no secrets"
vm_ssh 'journalctl -b -o json --no-pager' >"$VM_DIR/journal.json"
python3 - "$VM_DIR/journal.json" "$ID_READY" "$KEY" <<'PY' || vm_fail "journal check failed"
import json, sys
path, ready_id, key = sys.argv[1:]
entries = [json.loads(l) for l in open(path) if l.strip()]
mine = [e for e in entries if e.get("_SYSTEMD_UNIT") == "spotter.service" and e.get("SYSLOG_IDENTIFIER", "spotter") == "spotter"]
ready = [e for e in mine if e.get("MESSAGE_ID") == ready_id]
assert ready, "no READY event (MESSAGE_ID=%s) from spotter.service" % ready_id
r = ready[0]
assert r.get("PRIORITY") in ("5", "6"), r  # notice or info
assert r.get("CODE_FILE") and r.get("CODE_MODULE"), r
assert "ready after" in r.get("MESSAGE", ""), r
extra = sorted(k for k in r if k.startswith("SPOTTER_"))
for k in ("SPOTTER_SOURCE", "SPOTTER_MODEL_SHA256", "SPOTTER_RUNTIME"):
    assert r.get(k), "READY lacks %s: %r" % (k, r)
assert r["SPOTTER_SOURCE"].startswith("v4l2:/dev/video0"), r
assert len(r["SPOTTER_MODEL_SHA256"]) == 64, r
ids = {e["MESSAGE_ID"] for e in mine if "MESSAGE_ID" in e}
whole = open(path).read()
assert key not in whole, "the admin API key appears in the journal"
assert key.split("_", 1)[-1] not in whole, "the admin key's secret appears in the journal"
assert "PRIVATE KEY" not in whole, "a private key appears in the journal"
print("ok: READY %s with fields %s; spotter's MESSAGE_IDs this boot: %d; no key, no private key in %d entries"
      % (ready_id, ",".join(extra), len(ids), len(entries)))
PY
phase_end

phase_start "3. camera loss x5 (vivid unplug/rmmod)"
read -r pid0 restarts0 _ < <(unit_state)
lost0="$(count_id "$ID_LOST")"; rec0="$(count_id "$ID_RECOVERED")"
for i in 1 2 3 4 5; do
    # Unplug: unbinding vivid's platform device unregisters /dev/video0
    # under the streaming daemon, as a USB camera pulled out; once the
    # daemon has closed its descriptor the driver can go too.
    vm_ssh 'echo vivid.0 >/sys/bus/platform/drivers/vivid/unbind || exit 1
            for n in $(seq 60); do rmmod vivid 2>/dev/null && exit 0; sleep 0.5; done
            echo "rmmod vivid: still in use 30 s after the unplug" >&2; exit 1' \
        || vm_fail "camera loss $i: could not remove vivid"
    wait_status /readyz 503 60 "$KEY"
    [ "$(json 'not j["ready"] and not j["checks"]["source"]["ok"] and j["checks"]["model"]["ok"]')" = True ] \
        || vm_fail "camera loss $i: readyz should fail on the source only: $(cat "$VM_DIR/body")"
    reason="$(json 'j["checks"]["source"]["detail"]')"
    # Once longer than WatchdogSec (30 s): a missing camera is no hang.
    [ "$i" = 1 ] && sleep 40
    read -r pid restarts active < <(unit_state)
    [ "$pid" = "$pid0" ] && [ "$restarts" = "$restarts0" ] \
        || vm_fail "camera loss $i: the process was restarted (pid $pid0 -> $pid, NRestarts $restarts0 -> $restarts)"
    lost="$(count_id "$ID_LOST")"
    [ "$lost" = $((lost0 + i)) ] || vm_fail "camera loss $i: SOURCE_LOST logged $((lost - lost0)) times in total, expected $i"
    vm_ssh 'modprobe vivid && udevadm settle' || vm_fail "camera loss $i: modprobe vivid failed"
    wait_status /readyz 200 120 "$KEY"
    rec="$(count_id "$ID_RECOVERED")"
    [ "$rec" -ge $((rec0 + i)) ] || vm_fail "camera loss $i: SOURCE_RECOVERED not logged"
    pass "camera loss $i: 503 ($reason), SOURCE_LOST once, pid $pid kept, recovered to 200"
done
phase_end

phase_start "4. crash: kill -9"
https '/api/v1/results?limit=1' "$KEY" >/dev/null
old_id="$(json '('"$RESULTS_EXPR"')[0]["id"]')"
# A result is durable once the store flushed (every flush_every_ms, 1 s by
# default; the recovery point is store.durable_through): wait past one flush
# interval, as check 7 does, or a kill within it may rightly lose old_id.
sleep 3
read -r pid0 restarts0 _ < <(unit_state)
vm_ssh "kill -9 $pid0"
start=$SECONDS
while :; do
    read -r pid restarts active < <(unit_state)
    [ "$restarts" -gt "$restarts0" ] && [ "$active" = active ] && [ "$pid" != "$pid0" ] && break
    [ $((SECONDS - start)) -lt "$READY_TIMEOUT" ] || vm_fail "not restarted after kill -9 (pid $pid, NRestarts $restarts, $active)"
    sleep 3
done
wait_status /readyz 200 120 "$KEY"
code="$(https "/api/v1/results/$old_id" "$KEY")"
[ "$code" = 200 ] || vm_fail "result $old_id from before the crash: HTTP $code"
start=$SECONDS
until https '/api/v1/results/latest' "$KEY" >/dev/null && [ "$(json 'j["id"]')" != "$old_id" ] \
      && [ "$(json 'j["ts_ns"]')" -gt 0 ]; do
    [ $((SECONDS - start)) -lt 60 ] || vm_fail "no new result stored after the crash"
    sleep 2
done
pass "restarted (pid $pid0 -> $pid), result $old_id still there, new results stored"
phase_end

phase_start "5. hang: kill -STOP -> watchdog"
read -r pid0 restarts0 _ < <(unit_state)
vm_ssh "kill -STOP $pid0"
start=$SECONDS
while :; do
    read -r pid restarts active < <(unit_state)
    [ "$restarts" -gt "$restarts0" ] && [ "$pid" != "$pid0" ] && break
    [ $((SECONDS - start)) -lt 180 ] || vm_fail "no watchdog restart within 180 s of SIGSTOP (WatchdogSec=30s)"
    sleep 3
done
vm_ssh 'journalctl -b -u spotter -o cat --no-pager | grep -i "watchdog timeout"' >/dev/null \
    || vm_fail "no 'Watchdog timeout' from systemd in spotter's journal"
wait_active "$READY_TIMEOUT"
wait_status /readyz 200 120 "$KEY"
pass "watchdog fired after SIGSTOP; restarted (pid $pid0 -> $pid) and ready"
phase_end

phase_start "6. hardening"
read -r pid _ _ < <(unit_state)
vm_ssh "set -e
  uid=\$(id -u spotter); gid=\$(id -g spotter)
  s=/proc/$pid/status
  grep -Eq \"^Uid:\s+\$uid\s+\$uid\s+\$uid\s+\$uid\$\" \$s || { echo \"not running as spotter: \$(grep Uid \$s)\"; exit 1; }
  for c in CapInh CapPrm CapEff CapBnd CapAmb; do grep -Eq \"^\$c:\s+0+\$\" \$s || { echo \"\$c not empty: \$(grep \$c \$s)\"; exit 1; }; done
  grep -Eq '^NoNewPrivs:\s+1\$' \$s || { echo 'NoNewPrivs is not set'; exit 1; }
  grep -Eq '^Seccomp:\s+2\$' \$s || { echo 'no seccomp filter'; exit 1; }
  # Writes as the service user, inside the service's own mount namespace.
  in_ns() { nsenter -t $pid -m -S \$uid -G \$gid -- \"\$@\"; }
  for d in /etc /etc/spotter /usr/bin /usr/share/spotter /var/log /root /home; do
    if in_ns sh -c \"echo x > \$d/.spotter-write-test\" 2>/dev/null; then echo \"write allowed in \$d\"; exit 1; fi
  done
  in_ns sh -c 'echo x > /var/lib/spotter/.spotter-write-test && rm /var/lib/spotter/.spotter-write-test' \
    || { echo 'cannot write its own state directory'; exit 1; }
" || vm_fail "hardening check failed (above)"
pass "runs as spotter, no capabilities, NoNewPrivs, seccomp; writes denied outside /var/lib/spotter"
online="$(vm_ssh 'systemd-analyze security --no-pager spotter.service' | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
[ -n "$online" ] || vm_fail "systemd-analyze security in the guest gave no score"
[ "$online" = "$OFFLINE_EXPOSURE" ] || vm_fail "exposure in the guest $online != offline $OFFLINE_EXPOSURE"
EXPOSURE="$online"
pass "systemd-analyze security: $online in the guest = $OFFLINE_EXPOSURE offline"
phase_end

phase_start "power off (boot 1)"
vm_poweroff 180
phase_end

# ---- boots 2 and 3 (persistent): check 7 -------------------------------------
phase_start "7a. boot 2 (persistent), record"
vm_boot --persistent
vm_wait_ssh "$BOOT_TIMEOUT"
camera_up_and_ready
KEY1="$KEY"; FP1="$(fingerprint)"
[ -n "$FP1" ] || vm_fail "no certificate fingerprint from the guest"
wait_status '/api/v1/results?limit=1' 200 10 "$KEY1"
start=$SECONDS
until [ "$(json 'len('"$RESULTS_EXPR"')')" -ge 1 ]; do
    [ $((SECONDS - start)) -lt 60 ] || vm_fail "no result before power-off"
    sleep 2; https '/api/v1/results?limit=1' "$KEY1" >/dev/null
done
# A result is durable once the store flushed (every flush_every_ms, and at
# the clean stop that power-off makes): wait past one flush interval.
keep_id="$(json '('"$RESULTS_EXPR"')[0]["id"]')"
sleep 3
vm_poweroff 180
phase_end

phase_start "7b. boot 3 (persistent), compare"
vm_boot --persistent
vm_wait_ssh "$BOOT_TIMEOUT"
camera_up_and_ready
[ "$KEY" = "$KEY1" ] || vm_fail "the initial admin key file changed across the reboot"
FP2="$(fingerprint)"
[ "$FP2" = "$FP1" ] || vm_fail "certificate fingerprint changed across the reboot: $FP1 -> $FP2"
code="$(https "/api/v1/results/$keep_id" "$KEY1")"
[ "$code" = 200 ] || vm_fail "result $keep_id from before the reboot: HTTP $code"
[ "$(count_id "$ID_CERT")" = 0 ] || vm_fail "a new certificate was generated after the reboot"
[ "$(count_id "$ID_INITKEY")" = 0 ] || vm_fail "a new admin key was created after the reboot"
pass "after power-off: result $keep_id, admin key and certificate ($FP1) unchanged"
vm_poweroff 180
phase_end

echo
echo "system test ($VM_ARCH) passed in $((SECONDS - T_ALL)) s; exposure $EXPOSURE"
phases_report
echo "7 passed, 0 failed"
