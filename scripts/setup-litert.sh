#!/usr/bin/env bash
# Fetch LiteRT's libLiteRt.so for Spotter's `litert` runtime.
#
# Usage: scripts/setup-litert.sh [x86_64|aarch64]   (default: this machine's arch)
#
# Downloads the PyPI wheel ai-edge-litert==$LITERT_VERSION for the requested
# architecture with pip (no install, no dependencies), extracts only
# ai_edge_litert/libLiteRt.so to <repo>/.cache/litert/<arch>/libLiteRt.so,
# checks that it is a 64-bit ELF shared object for that machine exporting the
# LiteRT C API, and prints its absolute path on stdout (progress goes to
# stderr). Idempotent: the wheel is cached under <repo>/.cache/litert/wheels,
# and a valid library already in place is reused without touching the network.
#
# The library is plain C/C++ (it does not link libpython), so the wheel's
# CPython tag only matters to pip's resolver; cp311 is used for every arch.
# Spotter finds the result by itself (see src/inference/select.rs); to install
# it system-wide copy it to /usr/lib/spotter/libLiteRt.so.
set -euo pipefail

LITERT_VERSION="${LITERT_VERSION:-2.3.0}"
PY_VERSION="3.11"
# Oldest glibc baseline the 2.3.0 wheels are published for.
MANYLINUX="manylinux_2_27"

die() { echo "setup-litert: error: $*" >&2; exit 1; }
note() { echo "setup-litert: $*" >&2; }

arch="${1:-$(uname -m)}"
case "$arch" in
  x86_64|amd64) arch=x86_64; elf_machine=62 ;;   # EM_X86_64
  aarch64|arm64) arch=aarch64; elf_machine=183 ;; # EM_AARCH64
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unsupported architecture '$arch' (expected x86_64 or aarch64)" ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.cache/litert"
wheels="$cache/wheels"
dest_dir="$cache/$arch"
dest="$dest_dir/libLiteRt.so"

# check_lib FILE: succeeds when FILE is a 64-bit little-endian ELF shared
# object for $elf_machine that exports the LiteRT C API entry point.
check_lib() {
  local f="$1" magic class data etype machine
  [ -f "$f" ] || { echo "missing"; return 1; }
  magic="$(od -An -tx1 -N4 "$f" | tr -d ' \n')"
  [ "$magic" = "7f454c46" ] || { echo "not an ELF file"; return 1; }
  class="$(od -An -tu1 -j4 -N1 "$f" | tr -d ' \n')"
  data="$(od -An -tu1 -j5 -N1 "$f" | tr -d ' \n')"
  [ "$class" = 2 ] && [ "$data" = 1 ] || { echo "not a 64-bit little-endian ELF"; return 1; }
  etype="$(od -An -tu2 -j16 -N2 --endian=little "$f" | tr -d ' \n')"
  [ "$etype" = 3 ] || { echo "ELF type $etype is not a shared object"; return 1; }
  machine="$(od -An -tu2 -j18 -N2 --endian=little "$f" | tr -d ' \n')"
  [ "$machine" = "$elf_machine" ] || { echo "ELF machine $machine, expected $elf_machine ($arch)"; return 1; }
  grep -q -a -F 'LiteRtCreateEnvironment' "$f" || { echo "does not export LiteRtCreateEnvironment"; return 1; }
  return 0
}

if reason="$(check_lib "$dest")"; then
  note "using cached $dest"
  echo "$dest"
  exit 0
elif [ -e "$dest" ]; then
  note "cached $dest is unusable ($reason); fetching again"
fi

command -v python3 >/dev/null || die "python3 is required (pip downloads the wheel, zipfile extracts it)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is required: python3 -m pip is not available"

mkdir -p "$wheels" "$dest_dir"
pattern="ai_edge_litert-${LITERT_VERSION}-*${arch}*.whl"
wheel="$(find "$wheels" -maxdepth 1 -name "$pattern" -print -quit)"
if [ -z "$wheel" ]; then
  note "downloading ai-edge-litert==$LITERT_VERSION for $arch"
  python3 -m pip download --quiet --disable-pip-version-check \
    --no-deps --only-binary=:all: \
    --platform "${MANYLINUX}_${arch}" --python-version "$PY_VERSION" \
    --dest "$wheels" "ai-edge-litert==$LITERT_VERSION" >&2 \
    || die "pip could not download ai-edge-litert==$LITERT_VERSION for ${MANYLINUX}_${arch}"
  wheel="$(find "$wheels" -maxdepth 1 -name "$pattern" -print -quit)"
  [ -n "$wheel" ] || die "pip finished but no wheel matching $pattern is in $wheels"
else
  note "using cached wheel $(basename "$wheel")"
fi

# Extract to a temporary name in the same directory, then rename, so an
# interrupted run never leaves a truncated library where Spotter looks.
tmp="$(mktemp "$dest_dir/.libLiteRt.so.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
python3 - "$wheel" "$tmp" <<'PY' || die "could not extract ai_edge_litert/libLiteRt.so from $wheel"
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf, zf.open("ai_edge_litert/libLiteRt.so") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! reason="$(check_lib "$tmp")"; then
  die "libLiteRt.so from $(basename "$wheel") is unusable: $reason"
fi
chmod 0644 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
note "installed $dest ($(sha256sum "$dest" | cut -c1-16)…)"
echo "$dest"
