#!/usr/bin/env python3
"""Soak test: Spotter at its maximum frame rate plus concurrent API load, watched for leaks.

Runs `spotter run` on the files source at the highest replay rate the config allows (240 fps; the
pipeline drops what inference cannot keep up with), with a small retention bound (300 results) so
the pruner works all the time after the first seconds, while wrk keeps 4 connections busy cycling through the read endpoints
(status, latest result, a page of results, metrics). Every second it reads the daemon's RSS
(anonymous and file-backed); every 5 s it also counts open file descriptors and threads and asks
the daemon how many results it has stored.

It fails (exit 1) when, after the warm-up:
  * anonymous memory grows (RssAnon: heap, stacks, anonymous mappings; file-backed pages, i.e.
    code first run late, are reported but not judged): the mean of the last third of the
    readings (one a second) against that of the first third, more than 1 % in a run of 30
    minutes or longer, 4 % in a shorter one (CI's 10 minutes). Under this load anonymous memory
    swings by 2-3 MiB within half a minute (standard deviation ~0.7 MiB); before the store
    handed back what sled retires on every write it was a 5-9 MiB sawtooth with a period of
    30-50 s (see the README), so a third must span many of those swings;
  * open file descriptors grow: the smallest of the last 3 samples is above the largest of the
    first 3 (a leak grows steadily; one descriptor open at the instant of a sample does not fail);
  * the thread count grows the same way;
  * any request failed (wrk's connect/read/write/timeout errors or any status >= 400);
  * the daemon died, stopped being ready, or stopped storing results.
Exit 2 means the test could not be set up. Usage: see benches/soak.sh.
"""

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness as h  # noqa: E402

SAMPLE_EVERY_S = 5.0
# Memory is read more often than the rest: anonymous memory under this load
# swings as described above (it was a sawtooth, sd 1.6-2.4 MiB), and
# samples taken every ~5.1 s (a 5 s wait plus the status request) alias
# against it, so a third's mean moved with where its samples happened to
# fall. A read of /proc/PID/status costs the daemon nothing.
MEM_EVERY_S = 1.0
# Growth allowed between the means of the first and last thirds of the
# post-warm-up samples: 1 % for runs of 30 minutes or more (issue 21's goal).
# A shorter run cannot tell a slowly filling bounded cache from a small leak:
# the dev build's anonymous memory still rose 2-3 % between 300 and 600 s in
# CI (+2.70 % and +2.10 % in one clean-clone run, +1.38 % in a quiet local
# one), while 30-minute runs level off (+0.54 %). So a run under 30 minutes
# gets 4 %: over CI's 10 minutes (200 s between the thirds' middles) that
# still fails a leak of about 7 KiB/s (24 MiB an hour) on this daemon's
# ~33 MiB of anonymous memory. A 5-minute run judged only 150 s (thirds of
# 50 s, about one period of the sawtooth): a clean-clone CI run measured
# +2.85 % by medians, hence CI's 10 minutes and means.
LONG_RUN_S = 1800
RSS_LIMIT_LONG = 0.01
RSS_LIMIT_SHORT = 0.04
READ_PATHS = ["/api/v1/status", "/api/v1/results/latest", "/api/v1/results?limit=20", "/metrics"]


def failed_requests(exposition):
    """The spotter_http_requests samples of an exposition whose status is 400 or more."""
    out = []
    for line in exposition.splitlines():
        m = re.match(r'spotter_http_requests_total\{(.*)\} (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("status", "").isdigit() and int(labels["status"]) >= 400:
            out.append(f"{m.group(2)} x {labels['status']} on {labels.get('route', '?')}")
    return out


def main():
    ap = argparse.ArgumentParser(description="Spotter soak test")
    ap.add_argument("--spotter", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--litert-lib", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default: 25%% of a run of 30 minutes or more, "
                    "half of a shorter one; at least 90 s)")
    ap.add_argument("--fps", type=float, default=240.0, help="replay rate (default 240, the maximum)")
    ap.add_argument("--connections", type=int, default=4, help="wrk connections (0: no API load, to tell"
                    " a pipeline leak from an API one)")
    a = ap.parse_args()
    # At least 90 s: until then RSS climbs while sled's page cache (16 MiB)
    # and the allocator's arenas fill; both are bounded, so growth before
    # that says nothing about leaks. How long the fill takes depends on the
    # write rate the machine allows: anonymous memory was flat from 90 s in
    # one 5-minute run (31.3 -> 31.5 MiB) and stepped up until 350-450 s in
    # runs sharing the 2 cores with builds (26 -> 33-35 MiB, then flat to 30
    # minutes), hence half of a short run (300 s of CI's 10 minutes).
    share = 0.25 if a.duration >= LONG_RUN_S else 0.5
    warmup = a.warmup if a.warmup is not None else max(90.0, a.duration * share)
    if a.duration < warmup + 6 * SAMPLE_EVERY_S:
        print(f"soak: --duration {a.duration:.0f} s leaves fewer than 6 samples after the {warmup:.0f} s warm-up",
              file=sys.stderr)
        return 2

    os.makedirs(a.work, exist_ok=True)
    state = os.path.join(a.work, "state")
    cfg = os.path.join(a.work, "spotter.toml")
    port = h.free_port()
    h.spotter_config(cfg, state, a.photos, a.model, port, a.litert_lib, fps=a.fps,
                     extra_store="max_records = 300\nflush_every_ms = 500")
    sp = h.Proc("spotter", [a.spotter, "run", "--config", cfg], os.path.join(a.work, "spotter.log"))
    failures = []
    try:
        cert = os.path.join(state, "tls", "cert.pem")
        ready_s = h.wait_ok(sp, port, "/readyz", cert, timeout=120)
        with open(os.path.join(state, "initial-admin-key"), encoding="ascii") as f:
            key = f.read().strip()
        ctx = h.tls_context(cert)
        auth = {"Authorization": f"Bearer {key}"}
        print(f"soak: ready after {ready_s * 1000:.0f} ms; {a.duration:.0f} s of load, warm-up {warmup:.0f} s,"
              f" memory read every {MEM_EVERY_S:.0f} s, a full sample every {SAMPLE_EVERY_S:.0f} s", file=sys.stderr)

        wrk_out = {}

        def load():
            if a.connections == 0:
                time.sleep(a.duration)
                return
            try:
                wrk_out["summary"] = h.run_wrk(f"https://127.0.0.1:{port}/api/v1/status", int(a.duration), a.connections,
                                               headers=[f"Authorization: Bearer {key}"], paths=READ_PATHS)
            except Exception as e:  # reported as a failure below
                wrk_out["error"] = str(e)

        t = threading.Thread(target=load)
        t0 = time.monotonic()
        t.start()
        mem = []  # (t_s, rss, anon, file) every MEM_EVERY_S while the load runs

        def watch_memory():
            due = time.monotonic()
            while t.is_alive() and sp.alive():
                try:
                    st = h.proc_status(sp.pid)
                except OSError:
                    return  # the daemon has gone; the main loop reports it
                mem.append((round(time.monotonic() - t0, 1), st["VmRSS"], st["RssAnon"], st["RssFile"]))
                due += MEM_EVERY_S
                time.sleep(max(0.0, due - time.monotonic()))

        watcher = threading.Thread(target=watch_memory, daemon=True)
        watcher.start()
        samples = []
        while t.is_alive():
            t.join(SAMPLE_EVERY_S)
            if not t.is_alive():
                break  # the load has ended: a sample now would not be under load
            if not sp.alive():
                failures.append(f"the daemon exited with {sp.p.returncode} during the soak")
                break
            elapsed = time.monotonic() - t0
            st = h.proc_status(sp.pid)
            status, body = h.https_get("127.0.0.1", port, "/api/v1/status", ctx, headers=auth)
            stored = None
            if status == 200:
                doc = json.loads(body)
                stored = (doc.get("counters") or {}).get("results_stored")
            s = {"t_s": round(elapsed, 1), "rss": st["VmRSS"], "anon": st["RssAnon"], "file": st["RssFile"],
                 "hwm": st["VmHWM"], "fds": h.fd_count(sp.pid), "threads": st["Threads"], "results_stored": stored}
            samples.append(s)
            print(f"soak: t={s['t_s']:>6.1f}s rss={s['rss'] / 2**20:.1f} MiB (anon {s['anon'] / 2**20:.1f}, "
                  f"file {s['file'] / 2**20:.1f}) fds={s['fds']} "
                  f"threads={s['threads']} stored={stored}", file=sys.stderr)

        if "error" in wrk_out:
            failures.append(f"load generator failed: {wrk_out['error']}")
        watcher.join()
        summary = wrk_out.get("summary")
        if summary:
            print(f"soak: {summary['requests']} requests, {summary['rps']:.0f} req/s, "
                  f"p99 {summary['latency_us']['p99'] / 1000:.1f} ms, errors {summary['errors']}",
                  file=sys.stderr)
            if summary["error_total"]:
                failures.append(f"{summary['error_total']} request(s) failed: {summary['errors']}")
                # wrk counts refused statuses without saying which: the
                # daemon's own counters say which route answered what (over
                # its whole life: the 503s of /readyz while it started too).
                status, body = h.https_get("127.0.0.1", port, "/metrics", ctx, headers=auth)
                if status == 200:
                    for line in failed_requests(body.decode("utf-8", "replace")):
                        print(f"soak: the daemon answered {line}", file=sys.stderr)

        post = [s for s in samples if s["t_s"] >= warmup]
        post_mem = [m for m in mem if m[0] >= warmup]
        if len(post) < 6 or len(post_mem) < 6:
            failures.append(f"only {len(post)} samples and {len(post_mem)} memory readings after warm-up (need 6)")
        else:
            first, last = post[:3], post[-3:]
            # Memory: the mean of the last third of the 1 s readings against
            # the mean of the first third. Bounded caches (sled's page cache,
            # malloc arenas) step up a little at random moments and stop,
            # and the sawtooth (see MEM_EVERY_S) averages out over a third
            # that spans many of its periods; a leak keeps growing. Judged on
            # RssAnon: RssFile grows by clean code pages as code paths first
            # run (a clean-clone CI run's +4.3 % "drift" over 5 minutes was
            # of that kind and of the warm-up), which is no leak and which
            # the kernel can drop. The same comparison over the 5 s samples
            # alone is printed beside it, for comparison with older runs.
            limit = RSS_LIMIT_LONG if a.duration >= LONG_RUN_S else RSS_LIMIT_SHORT

            def growth_of(rows, col):
                third = max(3, len(rows) // 3)
                m0 = statistics.mean(r[col] for r in rows[:third])
                m1 = statistics.mean(r[col] for r in rows[-third:])
                return m0, m1, (m1 - m0) / m0, third

            for col, key, label in ((1, "rss", "RSS"), (3, "file", "file-backed RSS"), (2, "anon", "anonymous RSS")):
                m0, m1, growth, third = growth_of(post_mem, col)
                judged = key == "anon"
                g5 = growth_of(post, key)[2]
                print(f"soak: {label} after warm-up {m0 / 2**20:.1f} -> {m1 / 2**20:.1f} MiB ({growth * 100:+.2f} %, "
                      f"means of the first and last {third} readings a second apart; "
                      f"{g5 * 100:+.2f} % from the 5 s samples)"
                      + (f"; limit {limit * 100:.0f} %" if judged else "; reported, not judged"), file=sys.stderr)
                if judged and growth > limit:
                    failures.append(f"anonymous RSS grew {growth * 100:.2f} % after warm-up (limit {limit * 100:.0f} % "
                                    f"for a {a.duration:.0f} s run)")
            print(f"soak: peak RSS (VmHWM) {post[-1]['hwm'] / 2**20:.1f} MiB", file=sys.stderr)
            for k in ("fds", "threads"):
                if min(x[k] for x in last) > max(x[k] for x in first):
                    failures.append(f"{k} grew: {[x[k] for x in post]}")
            stored = [x["results_stored"] for x in post if x["results_stored"] is not None]
            if len(stored) >= 2 and stored[-1] <= stored[0]:
                failures.append(f"no results stored after warm-up (results_stored {stored[0]} -> {stored[-1]})")
        status, _ = h.https_get("127.0.0.1", port, "/readyz", ctx)
        if status != 200:
            failures.append(f"/readyz is {status} at the end of the soak")
        with open(os.path.join(a.work, "samples.json"), "w", encoding="utf-8") as f:
            json.dump({"samples": samples, "memory": [dict(zip(("t_s", "rss", "anon", "file"), m)) for m in mem],
                       "wrk": summary, "failures": failures}, f, indent=2)
    except h.BenchError as e:
        print(f"soak: setup failed: {e}", file=sys.stderr)
        return 2
    finally:
        code = sp.stop()
        if code not in (0, None) and not failures:
            failures.append(f"the daemon exited with {code} on SIGTERM (log {sp.log})")

    if failures:
        for f in failures:
            print(f"soak: FAIL: {f}", file=sys.stderr)
        print(f"soak: daemon log: {sp.log}", file=sys.stderr)
        return 1
    print("soak: PASS (no RSS, fd or thread growth; no failed request)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
