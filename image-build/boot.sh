#!/usr/bin/env bash
# Boot an image from build-image.sh by hand and print how to reach it:
#   image-build/boot.sh [--arch amd64|arm64] [--persistent] VM_DIR
# Stop it with: kill "$(cat VM_DIR/qemu.pid)"   (by PID, never by name)
source "$(dirname "$0")/../scripts/lib.sh"
source "$REPO/image-build/vm.sh"
persistent=""
while [ $# -gt 1 ]; do
    case "$1" in
        --arch) VM_ARCH="$2"; shift 2 ;;
        --persistent) persistent=--persistent; shift ;;
        *) die "unknown option $1" ;;
    esac
done
[ $# -eq 1 ] || die "usage: $0 [--arch amd64|arm64] [--persistent] VM_DIR"
VM_DIR="$(cd "$1" && pwd)"
vm_pick_ports
vm_boot $persistent
vm_wait_ssh 600
say "VM up: pid $(vm_pid), serial log $VM_DIR/serial.log"
echo "ssh:   ssh -i $VM_DIR/id_ed25519 -p $VM_SSH_PORT -o HostKeyAlias=spotter-vm -o UserKnownHostsFile=$VM_DIR/known_hosts root@127.0.0.1"
echo "https: curl --cacert CERT https://127.0.0.1:$VM_HTTPS_PORT/readyz"
echo "stop:  kill \$(cat $VM_DIR/qemu.pid)"
