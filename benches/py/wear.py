#!/usr/bin/env python3
"""Flash wear of the storage policy (issue 18): two daemons side by side in one run, on the same
static scene (one empty frame replayed at FPS) and the same model, one with store.keep_frames =
"all" (a row per frame, as before sightings) and one with "sightings" (the default: rows while a
sighting is open plus one sample per frame_sample_s). Motion gating is off in both, so only the
storage policy differs. Bytes written to storage come from /proc/PID/io (write_bytes), counted
from the moment both answer /readyz, so start-up (store creation, TLS key) is left out.

Prints bytes per hour of each, the ratio sightings/all (goal: <= 1/50) and the rows stored, and
fails only if a daemon dies or nothing was inferred (goals are reported, never asserted)."""

import argparse
import json
import os
import sys
import time

from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def empty_scene(path, w=640, h=480):
    """A plausible empty room: a wall-to-floor gradient and soft texture, nothing a COCO
    detector names."""
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h):
        v = 90 + (y * 80) // h
        d.line([(0, y), (w, y)], fill=(v, v - 10, v - 25))
    for i in range(0, w, 40):
        d.line([(i, h * 2 // 3), (i + 20, h)], fill=(70, 60, 50), width=2)
    img.filter(ImageFilter.GaussianBlur(1)).save(path, "JPEG", quality=85)


def status(port, cafile):
    state = os.path.dirname(os.path.dirname(cafile))
    with open(os.path.join(state, "initial-admin-key"), encoding="ascii") as f:
        auth = {"Authorization": f"Bearer {f.read().strip()}"}
    ctx = harness.tls_context(cafile)
    code, body = harness.https_get("127.0.0.1", port, "/api/v1/status", ctx, headers=auth)
    if code != 200:
        raise harness.BenchError(f"status: HTTP {code}")
    return json.loads(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spotter", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--litert-lib", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--duration", type=int, default=600, help="seconds measured (default 600)")
    ap.add_argument("--fps", type=float, default=15.0)
    a = ap.parse_args()

    os.makedirs(a.work, exist_ok=True)
    frames = os.path.join(a.work, "frames")
    os.makedirs(frames, exist_ok=True)
    empty_scene(os.path.join(frames, "empty.jpg"))

    procs = {}
    try:
        for mode in ("all", "sightings"):
            root = os.path.join(a.work, mode)
            os.makedirs(root, exist_ok=True)
            port = harness.free_port()
            cfg = os.path.join(root, "spotter.toml")
            harness.spotter_config(cfg, os.path.join(root, "state"), frames, a.model, port,
                                   a.litert_lib, fps=a.fps, threads=1,
                                   extra_store=f'keep_frames = "{mode}"\nframe_sample_s = 60')
            with open(cfg, "a", encoding="utf-8") as f:
                f.write("\n[motion]\nenabled = false\n")
            p = harness.Proc(f"spotter ({mode})", [a.spotter, "run", "--config", cfg],
                             os.path.join(root, "daemon.log"))
            procs[mode] = (p, port, os.path.join(root, "state", "tls", "cert.pem"))
        for p, port, cafile in procs.values():
            harness.wait_ok(p, port, "/readyz", cafile, timeout=120)
        start = {m: (harness.write_bytes(p.pid), status(port, ca)) for m, (p, port, ca) in procs.items()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.duration:
            time.sleep(min(5.0, a.duration))
            for m, (p, _, _) in procs.items():
                if not p.alive():
                    raise harness.BenchError(f"{p.name} died; log {p.log}:\n{p.log_tail()}")
        secs = time.monotonic() - t0
        rows = {}
        for m, (p, port, ca) in procs.items():
            wb = harness.write_bytes(p.pid) - start[m][0]
            st = status(port, ca)
            c0, c1 = start[m][1]["counters"], st["counters"]
            rows[m] = {
                "bytes_per_hour": wb * 3600.0 / secs,
                "inferences": c1["inferences"] - c0["inferences"],
                "stored": c1["results_stored"] - c0["results_stored"],
            }
            if rows[m]["inferences"] == 0:
                raise harness.BenchError(f"{p.name} inferred nothing; log {p.log}")
    finally:
        for p, _, _ in procs.values():
            p.stop()

    mib = 1024 * 1024
    print(f"static scene, {a.fps:g} fps, {secs:.0f} s, model {os.path.basename(a.model)}, "
          "motion gating off in both")
    for m, r in rows.items():
        print(f"  keep_frames = {m:<9}  {r['bytes_per_hour'] / mib:9.2f} MiB/hour written  "
              f"{r['inferences']:6d} inferred  {r['stored']:6d} rows stored")
    ratio = rows["sightings"]["bytes_per_hour"] / max(rows["all"]["bytes_per_hour"], 1.0)
    verdict = "meets" if ratio <= 1 / 50 else "misses"
    print(f"  ratio sightings/all: {ratio:.4f} (1/{1 / max(ratio, 1e-9):.0f}); goal <= 1/50: {verdict}")
    per_day_gb = rows["all"]["bytes_per_hour"] * 24 / 1e9
    print(f"  per day: all {per_day_gb:.2f} GB, sightings "
          f"{rows['sightings']['bytes_per_hour'] * 24 / 1e9:.3f} GB")


if __name__ == "__main__":
    try:
        main()
    except harness.BenchError as e:
        print(f"wear benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
