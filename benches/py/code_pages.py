#!/usr/bin/env python3
"""Which of a Spotter binary's functions run under the main job, at page granularity: the list
cross/link.py lays out first (cross/hot-functions.txt).

Normally the kernel maps the whole 64 KiB around a code fault when those pages are cached
(fault-around), and a machine that reads ahead far (8 MiB on the build VM) caches the whole
binary at its first fault, so the binary's resident pages say little about which code ran. This
script removes both effects for one run: it copies the binary, drops the copy from the page
cache, sets the backing disk's read-ahead to 0 for the run (restored after; needs root), and
preloads a small shim that applies MADV_RANDOM to the executable's mappings before main. A fault
then reads and maps one page, so the pages mapped at the end are the pages touched.

Each run is the daemon on the files source at 2 fps with one of the given models, GET
/api/v1/status with wrk at 16 connections, then POST /api/v1/classify at concurrency 1, 4 and 16
(harness.main_job_load, peak_rss.py's load); the list is the union over the runs. Take it with
other models and images than the ones peak RSS is measured with, so the measurement does not see
its own training, and with the kinds a board runs (a classifier and a detector, uint8 and int8
inputs; JPEG, PNG and BMP photos).

Output: the functions on the touched pages, by their names without hashes (cross/link.py's
`clean`), in address order, one per line, and a summary on stderr (.text touched against its
size).

Usage (root): code_pages.py --spotter target/release/spotter --model M --photos DIR --image IMG
                     --litert-lib LIB --work DIR --out cross/hot-functions.txt
"""

import argparse
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "cross"))
import harness as h  # noqa: E402
from link import named_functions  # noqa: E402

SHIM = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
__attribute__((constructor)) static void random_text(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char path[4096] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, path) >= 2 && strcmp(path, exe) == 0)
            madvise((void *)a, b - a, MADV_RANDOM);
    }
    fclose(f);
}
"""


def read_ahead_file(path):
    """The sysfs read_ahead_kb of the block device holding PATH (its disk, for a partition)."""
    st = os.stat(path)
    dev = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for cand in (os.path.join(dev, "queue", "read_ahead_kb"), os.path.join(dev, "..", "queue", "read_ahead_kb")):
        if os.path.exists(cand):
            return os.path.realpath(cand)
    raise h.BenchError(f"no read_ahead_kb for the device of {path} ({dev})")


def touched_pages(pid, path):
    """File page numbers of PATH mapped in PID (from /proc/PID/pagemap's present bit)."""
    pages = set()
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
            for line in maps:
                f = line.split()
                if len(f) < 6 or os.path.realpath(f[5]) != os.path.realpath(path):
                    continue
                a, b = (int(x, 16) for x in f[0].split("-"))
                off = int(f[2], 16)
                n = (b - a) // 4096
                data = os.pread(fd, n * 8, (a // 4096) * 8)
                for i in range(n):
                    (v,) = struct.unpack_from("<Q", data, i * 8)
                    if v >> 63 & 1:
                        pages.add(off // 4096 + i)
    finally:
        os.close(fd)
    return pages


def text_section(path):
    """(file offset, size, address) of .text."""
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split("]", 1)[-1].split()
        if f and f[0] == ".text":
            return int(f[3], 16), int(f[4], 16), int(f[2], 16)
    raise h.BenchError(f"{path} has no .text")


def one_run(binary, shim, model, a, frame, n):
    """The daemon from a cold page cache with MODEL, under the load; the file pages it touched."""
    work = os.path.join(a.work, f"run-{n}")
    state = os.path.join(work, "state")
    os.makedirs(state)
    cfg = os.path.join(work, "spotter.toml")
    port = h.free_port()
    h.spotter_config(cfg, state, a.photos, model, port, a.litert_lib, fps=2.0)
    fd = os.open(binary, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    p = h.Proc("spotter", [binary, "run", "--config", cfg], os.path.join(work, "spotter.log"),
               env=dict(os.environ, LD_PRELOAD=shim))
    try:
        cert = os.path.join(state, "tls", "cert.pem")
        h.wait_ok(p, port, "/readyz", cert, timeout=180)
        with open(os.path.join(state, "initial-admin-key"), encoding="ascii") as f:
            auth = [f"Authorization: Bearer {f.read().strip()}"]
        time.sleep(3)
        h.main_job_load(port, auth, a.duration, frame)
        if not p.alive():
            raise h.BenchError(f"the daemon exited during the load; log {p.log}:\n{p.log_tail()}")
        return touched_pages(p.pid, binary)
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spotter", required=True)
    ap.add_argument("--model", required=True, action="append",
                    help="a model; given more than once, one run per model and the union of their pages")
    ap.add_argument("--photos", required=True, help="the files source's directory")
    ap.add_argument("--image", required=True, help="a photo; a 640x480 JPEG made from it is the upload")
    ap.add_argument("--litert-lib", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=int, default=5, help="seconds of each load step")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise h.BenchError("needs root (it sets the disk's read-ahead for the run)")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    binary = os.path.join(a.work, "spotter")
    shutil.copyfile(a.spotter, binary)
    os.chmod(binary, 0o755)
    fd = os.open(binary, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    shim_c, shim = os.path.join(a.work, "random_text.c"), os.path.join(a.work, "random_text.so")
    with open(shim_c, "w", encoding="ascii") as f:
        f.write(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim, shim_c], check=True)
    frame = h.upload_frame(a.image, a.work)

    ra = read_ahead_file(binary)
    with open(ra, encoding="ascii") as f:
        saved = f.read().strip()
    pages = set()
    try:
        with open(ra, "w", encoding="ascii") as f:
            f.write("0")
        for n, model in enumerate(a.model):
            got = one_run(binary, shim, model, a, frame, n)
            print(f"code_pages: {os.path.basename(model)}: {len(got) * 4 / 1024:.2f} MiB of the binary touched",
                  file=sys.stderr)
            pages |= got
    finally:
        with open(ra, "w", encoding="ascii") as f:
            f.write(saved)

    off, size, addr = text_section(binary)
    lo, hi = off // 4096, (off + size - 1) // 4096
    text_pages = sum(1 for x in pages if lo <= x <= hi)
    hot, seen, total = [], set(), 0
    for fa, fs, name in sorted(named_functions([binary])):
        foff = fa - addr + off
        if any(x in pages for x in range(foff // 4096, (foff + fs - 1) // 4096 + 1)):
            total += fs
            if name not in seen:
                seen.add(name)
                hot.append(name)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("# The functions on the code pages the main job touches, first in the spotter binary's\n"
                "# .text (cross/link.py). Made by benches/py/code_pages.py; regenerate after larger changes.\n")
        f.write("\n".join(hot) + "\n")
    print(f"code_pages: .text {size / 2**20:.2f} MiB, pages touched {text_pages * 4 / 1024:.2f} MiB; "
          f"{len(hot)} functions on them ({total / 2**20:.2f} MiB) written to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (h.BenchError, subprocess.CalledProcessError, OSError) as e:
        print(f"code_pages: {e}", file=sys.stderr)
        sys.exit(1)
