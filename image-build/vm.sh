# Boot, reach and stop the Spotter test VM. Source it; don't run it.
#   VM_DIR      folder with disk.img, vmlinuz, initrd.img, ssh_known_host.pub
#               (from build-image.sh); the VM's pidfile, serial log, ssh key
#               and control socket go there too
#   VM_ARCH     amd64 (default) or arm64
#   VM_SSH_PORT, VM_HTTPS_PORT   host ports on 127.0.0.1 (vm_pick_ports)
# Needs scripts/lib.sh (say, die) sourced first.

VM_ARCH="${VM_ARCH:-amd64}"
VM_MEM="${VM_MEM:-1536}"

# Two free TCP ports on 127.0.0.1 for the forwards.
vm_pick_ports() {
    read -r VM_SSH_PORT VM_HTTPS_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
    export VM_SSH_PORT VM_HTTPS_PORT
}

# The client key the image authorizes (created once per VM_DIR).
vm_client_key() {
    [ -f "$VM_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C spotter-vm-test -f "$VM_DIR/id_ed25519"
    echo "$VM_DIR/id_ed25519.pub"
}

# vm_boot [--persistent]: start QEMU in the background. The drive is
# snapshot=on (writes vanish at power-off) unless --persistent. Networking
# is QEMU's user mode with restrict=on: the guest reaches nothing; the host
# reaches the guest's ssh and HTTPS through forwards bound to 127.0.0.1.
vm_boot() {
    local snapshot=on
    [ "${1:-}" = "--persistent" ] && snapshot=off
    local net="user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${VM_SSH_PORT}-:22,hostfwd=tcp:127.0.0.1:${VM_HTTPS_PORT}-:8443"
    local -a q
    case "$VM_ARCH" in
        amd64) q=(qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max
                  -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 mitigations=off loglevel=3 systemd.show_status=error panic=-1") ;;
        arm64) q=(qemu-system-aarch64 -machine virt -accel tcg,thread=multi -cpu cortex-a72
                  -append "root=/dev/vda rw console=ttyAMA0 net.ifnames=0 mitigations=off loglevel=3 systemd.show_status=error panic=-1") ;;
        *) die "VM_ARCH must be amd64 or arm64, not $VM_ARCH" ;;
    esac
    rm -f "$VM_DIR/qemu.pid" "$VM_DIR/ssh.sock"
    : >"$VM_DIR/serial.log"
    "${q[@]}" -smp 2 -m "$VM_MEM" -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$VM_DIR/vmlinuz" -initrd "$VM_DIR/initrd.img" \
        -drive "file=$VM_DIR/disk.img,format=raw,if=none,id=d0,snapshot=$snapshot" \
        -device virtio-blk-pci,drive=d0 \
        -netdev "$net" -device virtio-net-pci,netdev=n0 \
        -device virtio-rng-pci \
        -serial "file:$VM_DIR/serial.log" \
        -pidfile "$VM_DIR/qemu.pid" -daemonize \
        || die "QEMU did not start (see above)"
    say "VM booting ($VM_ARCH, snapshot=$snapshot, ssh 127.0.0.1:$VM_SSH_PORT, https 127.0.0.1:$VM_HTTPS_PORT)"
}

vm_pid() { cat "$VM_DIR/qemu.pid" 2>/dev/null; }

vm_running() {
    local pid
    pid="$(vm_pid)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# The serial console's last lines, for failure messages.
vm_console_tail() {
    echo "---- last ${1:-40} lines of the VM's serial console ($VM_DIR/serial.log) ----" >&2
    tail -n "${1:-40}" "$VM_DIR/serial.log" 2>/dev/null | tr -d '\r' >&2 || true
    echo "----" >&2
}

vm_fail() { vm_console_tail 60; die "$*"; }

_vm_ssh_opts() {
    printf '%s\n' -i "$VM_DIR/id_ed25519" -p "$VM_SSH_PORT" \
        -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR \
        -o HostKeyAlias=spotter-vm -o StrictHostKeyChecking=yes \
        -o UserKnownHostsFile="$VM_DIR/known_hosts" \
        -o ConnectTimeout=20 -o ServerAliveInterval=10 -o ServerAliveCountMax=6 \
        -o ControlMaster=auto -o ControlPath="$VM_DIR/ssh.sock" -o ControlPersist=900
}

# vm_ssh CMD...: run a shell command in the guest as root, over one shared
# connection (ControlMaster): under emulation a new ssh handshake costs
# seconds, a multiplexed session almost nothing.
vm_ssh() {
    local -a o
    mapfile -t o < <(_vm_ssh_opts)
    ssh "${o[@]}" root@127.0.0.1 "$@"
}

# vm_wait_ssh TIMEOUT_S: until the guest's sshd answers with the image's key.
vm_wait_ssh() {
    local timeout="$1" start=$SECONDS
    echo "spotter-vm $(cut -d' ' -f1,2 "$VM_DIR/ssh_known_host.pub")" >"$VM_DIR/known_hosts"
    until vm_ssh true 2>/dev/null; do
        vm_running || vm_fail "the VM exited while booting"
        [ $((SECONDS - start)) -lt "$timeout" ] || vm_fail "no ssh from the guest within ${timeout}s"
        sleep 3
    done
}

# vm_poweroff TIMEOUT_S: clean shutdown from inside; QEMU exits with it.
vm_poweroff() {
    local timeout="$1" start=$SECONDS pid
    pid="$(vm_pid)"
    vm_ssh 'systemctl poweroff --no-block' >/dev/null 2>&1 || true
    ssh -O exit -o ControlPath="$VM_DIR/ssh.sock" x 2>/dev/null || true
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
        [ $((SECONDS - start)) -lt "$timeout" ] || vm_fail "the guest did not power off within ${timeout}s"
        sleep 2
    done
}

# vm_kill: stop QEMU by its pidfile's PID (never by name), if still running.
vm_kill() {
    local pid
    pid="$(vm_pid)" || return 0
    [ -n "$pid" ] || return 0
    ssh -O exit -o ControlPath="$VM_DIR/ssh.sock" x 2>/dev/null || true
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$VM_DIR/qemu.pid"
}
