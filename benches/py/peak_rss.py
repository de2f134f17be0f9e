#!/usr/bin/env python3
"""Peak RSS of the main job, for one or more Spotter binaries measured in the same run (issue 21:
peak RSS no more than the model size + 30 MiB).

Each binary runs the daemon of benches/run.sh's "Peak RSS" section (files source at 2 fps, the
model on LiteRT, the API) under the same load: GET /api/v1/status with wrk at 16 connections,
then POST /api/v1/classify at concurrency 1, 4 and 16. The binaries take turns (A B A B ...), so
a slow moment of the machine falls on each alike; memory figures are not CPU-noise sensitive
anyway. Reported per binary: VmHWM (peak), VmHWM − model file size, and at the end the RSS split
into anonymous and file-backed pages (from /proc/PID/status).

Usage: peak_rss.py --bin NAME=PATH [--bin NAME=PATH ...] --model M --photos DIR --image IMG
                   --litert-lib LIB --work DIR [--reps N] [--duration S]
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness as h  # noqa: E402


def mib(b):
    return b / 2**20


def smaps_top(pid, n=12):
    """The N mappings (by file, anonymous ones by address) holding the most RSS, one per line."""
    rss, cur = {}, None
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:
                cur = head[5] if len(head) > 5 else f"[anon {head[0]}]"
            elif head and head[0] == "Rss:":
                rss[cur] = rss.get(cur, 0) + int(head[1]) * 1024
    top = sorted(rss.items(), key=lambda kv: -kv[1])[:n]
    return "\n".join(f"  {mib(v):7.1f} MiB {k}" for k, v in top)


def one_run(name, binary, a, frame, rep):
    work = os.path.join(a.work, f"{name}-{rep}")
    shutil.rmtree(work, ignore_errors=True)
    state = os.path.join(work, "state")
    os.makedirs(state)
    cfg = os.path.join(work, "spotter.toml")
    port = h.free_port()
    h.spotter_config(cfg, state, a.photos, a.model, port, a.litert_lib, fps=2.0, threads=a.threads)
    p = h.Proc(name, [binary, "run", "--config", cfg], os.path.join(work, "spotter.log"))
    try:
        cert = os.path.join(state, "tls", "cert.pem")
        h.wait_ok(p, port, "/readyz", cert, timeout=180)
        with open(os.path.join(state, "initial-admin-key"), encoding="ascii") as f:
            key = f.read().strip()
        auth = [f"Authorization: Bearer {key}"]
        time.sleep(3)
        idle = h.proc_status(p.pid)
        h.main_job_load(port, auth, a.duration, frame)
        st = h.proc_status(p.pid)
        if a.smaps:
            print(f"peak_rss: {name} rep {rep}: largest mappings by RSS at the end:\n{smaps_top(p.pid)}",
                  file=sys.stderr)
        if not p.alive():
            raise h.BenchError(f"{name} exited during the load; log {p.log}:\n{p.log_tail()}")
        return {"idle": idle["VmRSS"], "hwm": st["VmHWM"], "anon": st["RssAnon"], "file": st["RssFile"]}
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH of a spotter binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--image", required=True, help="a photo; a 640x480 JPEG made from it is the upload")
    ap.add_argument("--litert-lib", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smaps", action="store_true", help="print each run's largest mappings (stderr)")
    a = ap.parse_args()
    bins = []
    for b in a.bin:
        name, _, path = b.partition("=")
        if not path or not os.access(path, os.X_OK):
            ap.error(f"--bin {b}: expected NAME=PATH of an executable")
        bins.append((name, os.path.abspath(path)))
    os.makedirs(a.work, exist_ok=True)
    frame = h.upload_frame(a.image, a.work)
    model = os.path.getsize(a.model)
    res = {name: [] for name, _ in bins}
    for rep in range(a.reps):
        for name, path in bins:
            r = one_run(name, path, a, frame, rep)
            print(f"peak_rss: {name} rep {rep}: VmHWM {mib(r['hwm']):.1f} MiB, anon {mib(r['anon']):.1f}, "
                  f"file {mib(r['file']):.1f}", file=sys.stderr)
            res[name].append(r)
    print(f"Model file {mib(model):.1f} MiB; {a.reps} run(s) per binary, taking turns; load: status c=16, "
          f"classify c=1/4/16, {a.duration} s each.\n")
    print("| binary | idle RSS MiB | peak RSS (VmHWM) MiB | peak − model MiB (goal ≤ 30) | anon / file-backed at end MiB |")
    print("|---|---|---|---|---|")
    for name, _ in bins:
        rs = res[name]
        print(f"| {name} | {h.fmt_range([mib(r['idle']) for r in rs])} | {h.fmt_range([mib(r['hwm']) for r in rs])} "
              f"| {h.fmt_range([mib(r['hwm'] - model) for r in rs])} "
              f"| {h.fmt_range([mib(r['anon']) for r in rs])} / {h.fmt_range([mib(r['file']) for r in rs])} |")


if __name__ == "__main__":
    try:
        main()
    except h.BenchError as e:
        print(f"peak_rss: {e}", file=sys.stderr)
        sys.exit(1)
