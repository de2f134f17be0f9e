#!/usr/bin/env python3
"""Spotter against the alternatives, in one run on one machine: writes benches/RESULTS.md.

Called by benches/run.sh, which sets everything up (binary, LiteRT, model, photos, the Python
peer's venv, nginx, wrk). Every figure is a ratio against a baseline measured in the same run,
reported as median and range over the repetitions. Scenarios (numbers as in issue 8):

  1. Raw invoke: `spotter bench` vs Python `ai_edge_litert` (benches/runtime_vs_python.sh).
  2. Pre-processing overhead: `spotter bench` on 640x480 and 1280x720 JPEG frames.
  3. Classify over HTTPS: Spotter's POST /api/v1/classify vs the Python peer's POST /classify
     (FastAPI + uvicorn, benches/peers/python_server), same JPEG, concurrency 1, 4 and 16 (wrk).
  4. Small TLS responses: GET /api/v1/status vs nginx serving a static file of the same size.
  5. Memory: RSS of Spotter and the peer, idle and under scenario 3's load, and peak.
  6. Start to ready: process start to the first 200 from /readyz (Spotter) or /health (peer).
  7. Store: results stored per second and bytes written per result, Spotter at its maximum
     replay rate; and the store alone, sled beside SQLite (WAL) writing the same records
     (benches/py/store_bench.py): results/s, bytes written to disk per result, database bytes per
     million results, at full speed and paced at a camera's rate.
  8. Goodput under overload (issue 21): POST /api/v1/classify at concurrency 4 and 16 (wrk,
     which ignores Retry-After and retries at once): successful classifications/s at each, the
     ratio 16/4 (goal ≥ 1), refusals, and the camera pipeline's rate (frames inferred/s from
     /api/v1/status) during each run beside its rate idle; the Python peer beside it unless
     --no-peer.
  9. Detector end to end (issue 17): YOLOv8n int8 on a 1280x720 JPEG, one thread: `spotter bench`
     beside Python's reference pipeline per frame (ai_edge_litert + numpy + Pillow: decode,
     letterbox 114, quantize, invoke, decode + class-aware NMS) via `runtime_vs_python.sh --e2e`:
     the end-to-end and invoke ratios, and Spotter's pre/invoke and post/invoke beside their targets.
     Skipped (noted in the results) when the YOLO test model is absent.

Goals are reported, never asserted: the script fails only when a step cannot run.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness as h  # noqa: E402

GOALS = {
    "invoke": "≤ 1.0",
    "overhead": "≤ 0.10",
    "classify_rps": "≥ 5× the peer at concurrency 4",
    "classify_p99": "≤ ⅕ of the peer's p99",
    "status_rps": "≥ nginx",
    "status_p99": "≤ nginx",
    "rss": "≤ model + 30 MiB and ≤ ⅓ of the peer",
    "start": "≤ 300 ms",
    "e2e": "≤ 1.0",
    "pre": "≤ 0.15",
    "post": "≤ 0.02",
}


def log(msg):
    print(f"run_peers: {msg}", file=sys.stderr, flush=True)


def mib(b):
    return b / 2**20


class Run:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        os.makedirs(self.work, exist_ok=True)
        self.procs = []
        self.sections = []
        self.model_bytes = os.path.getsize(a.model)

    # -- processes --------------------------------------------------------------------------
    def start_spotter(self, name, fps=2.0, extra_store="", extra_api=""):
        state = os.path.join(self.work, name, "state")
        os.makedirs(state, exist_ok=True)
        cfg = os.path.join(self.work, name, "spotter.toml")
        port = h.free_port()
        h.spotter_config(cfg, state, self.a.photos, self.a.model, port, self.a.litert_lib, fps=fps,
                         threads=self.a.threads, extra_store=extra_store)
        if extra_api:  # [api] is the config's last section
            with open(cfg, "a", encoding="utf-8") as f:
                f.write(extra_api + "\n")
        p = h.Proc(name, [self.a.spotter, "run", "--config", cfg], os.path.join(self.work, name, "spotter.log"))
        self.procs.append(p)
        p.port = port
        p.cert = os.path.join(state, "tls", "cert.pem")
        p.tls_key = os.path.join(state, "tls", "key.pem")
        p.ready_s = h.wait_ok(p, port, "/readyz", p.cert, timeout=180)
        with open(os.path.join(state, "initial-admin-key"), encoding="ascii") as f:
            p.api_key = f.read().strip()
        return p

    def start_peer(self, cert, key):
        port = h.free_port()
        env = dict(os.environ, PEER_MODEL=self.a.model, PEER_THREADS=str(self.a.threads))
        argv = [self.a.peer_python, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port),
                "--ssl-certfile", cert, "--ssl-keyfile", key, "--log-level", "warning", "--no-access-log"]
        p = h.Proc("python-peer", argv, os.path.join(self.work, f"peer-{port}.log"), env=env, cwd=self.a.peer_dir)
        self.procs.append(p)
        p.port = port
        p.ready_s = h.wait_ok(p, port, "/health", cert, timeout=180)
        return p

    def start_nginx(self, cert, key, body):
        root = os.path.join(self.work, "nginx")
        www = os.path.join(root, "www", "api", "v1")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "status"), "wb") as f:
            f.write(body)
        port = h.free_port()
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(f"{k}_temp_path {root}/{k}_temp;\n    " for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = os.path.join(root, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(f"""# Generated by benches/py/run_peers.py: nginx serving a static JSON file of the same size
# as Spotter's GET /api/v1/status body, over TLS with the same certificate, keep-alive on.
{user}worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp}keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root}/www;
        default_type application/json;
        location / {{ }}
    }}
}}
""")
        p = h.Proc("nginx", ["nginx", "-p", root, "-c", conf], os.path.join(root, "stdout.log"))
        self.procs.append(p)
        p.port = port
        p.ready_s = h.wait_ok(p, port, "/api/v1/status", cert, timeout=30)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    # -- scenarios --------------------------------------------------------------------------
    def frames(self):
        """640x480 and 1280x720 baseline JPEG (quality 85) frames made from the test photo."""
        out = {}
        for w, hgt in ((640, 480), (1280, 720)):
            path = os.path.join(self.work, f"frame_{w}x{hgt}.jpg")
            subprocess.run([self.a.peer_python, "-c",
                            "import sys; from PIL import Image; "
                            "Image.open(sys.argv[1]).convert('RGB').resize((int(sys.argv[3]), int(sys.argv[4])), "
                            "Image.BILINEAR).save(sys.argv[2], 'JPEG', quality=85)",
                            self.a.image, path, str(w), str(hgt)], check=True)
            out[(w, hgt)] = path
        return out

    def scenario_1(self):
        log("scenario 1: raw invoke (benches/runtime_vs_python.sh)")
        rows = {}
        for rep in range(self.a.reps):
            env = dict(os.environ, SPOTTER_BIN=self.a.spotter)
            r = subprocess.run(["bash", self.a.runtime_vs_python, "--runs", str(self.a.runs), "--threads", "1 2"],
                               capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise h.BenchError(f"runtime_vs_python.sh failed: {r.stderr[-2000:]}")
            m = re.search(r"^raw results: (.+)$", r.stdout, re.M)
            if not m:
                raise h.BenchError(f"runtime_vs_python.sh printed no 'raw results:' line:\n{r.stdout[-2000:]}")
            with open(os.path.join(m.group(1).strip(), "summary.json"), encoding="utf-8") as f:
                for row in json.load(f):
                    # Invoke does not depend on the frame: keep the 640x480 rows only.
                    if row.get("frame", "640x480") != "640x480":
                        continue
                    k = (row["model"], row["threads"])
                    rows.setdefault(k, []).append(row)
        lines = ["| model | threads | Spotter invoke ms | Python invoke ms | invoke ratio (goal " + GOALS["invoke"] + ") |",
                 "|---|---|---|---|---|"]
        for (model, thr), rs in sorted(rows.items()):
            lines.append(f"| {model} | {thr} | {h.fmt_range([r['spotter_invoke_median_ms'] for r in rs], '.2f')} "
                         f"| {h.fmt_range([r['python_invoke_median_ms'] for r in rs], '.2f')} "
                         f"| {h.fmt_range([r['invoke_ratio'] for r in rs], '.2f')} |")
        self.sections.append(("1. Raw invoke (Spotter / Python `ai_edge_litert`, same model, threads and input)",
                              lines, f"{self.a.runs} invokes per case, per repetition; "
                                     "`bash benches/runtime_vs_python.sh --runs N`."))

    def scenario_9(self):
        log("scenario 9: detector end to end (benches/runtime_vs_python.sh --e2e)")
        title = "9. Detector end to end (Spotter / Python reference pipeline, YOLOv8n int8, 1280×720 JPEG, 1 thread)"
        model = os.path.join(os.environ.get("SPOTTER_TESTDATA", ""), "models/detection/yolov8n/yolov8n_full_integer_quant.tflite")
        if not os.path.isfile(model):
            self.sections.append((title, [f"skipped: no YOLO test model at `{model}`"], ""))
            return
        rows = []
        for rep in range(self.a.reps):
            env = dict(os.environ, SPOTTER_BIN=self.a.spotter)
            r = subprocess.run(["bash", self.a.runtime_vs_python, "--e2e", "--model", model, "--runs", str(self.a.runs),
                                "--image", self.a.image], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise h.BenchError(f"runtime_vs_python.sh --e2e failed: {r.stderr[-2000:]}")
            m = re.search(r"^raw results: (.+)$", r.stdout, re.M)
            if not m:
                raise h.BenchError(f"runtime_vs_python.sh --e2e printed no 'raw results:' line:\n{r.stdout[-2000:]}")
            with open(os.path.join(m.group(1).strip(), "summary.json"), encoding="utf-8") as f:
                rows.extend(row for row in json.load(f) if "e2e_ratio" in row)
        col = lambda k: [r[k] for r in rows if r.get(k) is not None]  # noqa: E731
        lines = ["| figure | Spotter | Python | ratio | goal |", "|---|---|---|---|---|",
                 f"| end to end per frame, ms | {h.fmt_range(col('spotter_e2e_median_ms'), '.1f')} "
                 f"| {h.fmt_range(col('python_e2e_median_ms'), '.1f')} | {h.fmt_range(col('e2e_ratio'), '.2f')} "
                 f"| {GOALS['e2e']} |",
                 f"| invoke, ms | {h.fmt_range(col('spotter_invoke_median_ms'), '.1f')} "
                 f"| {h.fmt_range(col('python_invoke_median_ms'), '.1f')} | {h.fmt_range(col('invoke_ratio'), '.2f')} | |",
                 f"| pre-processing (decode + letterbox + quantize), ms | {h.fmt_range(col('spotter_pre_median_ms'), '.2f')} "
                 f"| {h.fmt_range(col('python_pre_median_ms'), '.2f')} | pre/invoke {h.fmt_range(col('pre_ratio'), '.3f')} "
                 f"| {GOALS['pre']} |",
                 f"| post-processing (decode + NMS), ms | {h.fmt_range(col('spotter_post_median_ms'), '.2f')} "
                 f"| {h.fmt_range(col('python_post_median_ms'), '.2f')} | post/invoke {h.fmt_range(col('post_ratio'), '.4f')} "
                 f"| {GOALS['post']} |"]
        self.sections.append((title, lines, f"{self.a.runs} frames per repetition after 5 warm-up, min_score 0.25; "
                                            "`bash benches/runtime_vs_python.sh --e2e --runs N`."))

    def scenario_2(self, frames):
        log("scenario 2: pre-processing overhead")
        lines = ["| frame | decode ms | resize ms | quantize ms | post ms | invoke ms | overhead/invoke (goal "
                 + GOALS["overhead"] + ") |", "|---|---|---|---|---|---|---|"]
        for (w, hgt), path in sorted(frames.items()):
            vals = {k: [] for k in ("decode", "resize", "quantize", "post", "invoke", "ratio")}
            for rep in range(self.a.reps):
                r = subprocess.run([self.a.spotter, "bench", "--json", "--runtime", "litert", "--litert-lib",
                                    self.a.litert_lib, "--model", self.a.model, "--image", path, "--threads",
                                    str(self.a.threads), "--runs", str(self.a.runs), "--warmup", "5"],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise h.BenchError(f"spotter bench failed: {r.stderr[-2000:]}")
                lit = json.loads(r.stdout)["runtimes"]["litert"]
                for k in ("decode", "resize", "quantize", "post", "invoke"):
                    vals[k].append(lit["stages"][k]["median_ms"])
                vals["ratio"].append(lit["overhead_ratio"])
            lines.append(f"| {w}×{hgt} JPEG | " + " | ".join(
                h.fmt_range(vals[k], ".3f") for k in ("decode", "resize", "quantize", "post", "invoke"))
                + f" | {h.fmt_range(vals['ratio'], '.3f')} |")
        self.sections.append(("2. Pre-processing overhead (to the 224×224 model, `spotter bench`)", lines,
                              "overhead = decode + resize + quantize + post-process medians over the invoke median."))

    def classify_ok(self, sp, peer, frame):
        """One request each: both must answer 200 with a top class; returns their top-1 labels."""
        with open(frame, "rb") as f:
            body = f.read()
        s, b = h.https_post("127.0.0.1", sp.port, "/api/v1/classify", h.tls_context(sp.cert), body,
                            headers={"Authorization": f"Bearer {sp.api_key}", "Content-Type": "image/jpeg"})
        if s != 200:
            raise h.BenchError(f"Spotter POST /api/v1/classify answered {s}: {b[:300]!r}")
        sp_doc = json.loads(b)
        s, b = h.https_post("127.0.0.1", peer.port, "/classify", h.tls_context(sp.cert), body,
                            headers={"Content-Type": "image/jpeg"})
        if s != 200:
            raise h.BenchError(f"peer POST /classify answered {s}: {b[:300]!r}")
        peer_doc = json.loads(b)
        classes = sp_doc.get("classes") or (sp_doc.get("result") or {}).get("classes") or []
        return (classes[0]["label"] if classes else json.dumps(sp_doc)[:80]), peer_doc["top"][0]["label"]

    def scenario_3_5(self, sp, peer, frame):
        log("scenario 3: classify over HTTPS (and 5: memory under that load)")
        sp_top, peer_top = self.classify_ok(sp, peer, frame)
        res = {}
        mem = {"spotter": [], "peer": []}
        for conc in (1, 4, 16):
            for rep in range(self.a.reps):
                for name, target, path, hdrs in (
                        ("spotter", sp, "/api/v1/classify", [f"Authorization: Bearer {sp.api_key}"]),
                        ("peer", peer, "/classify", [])):
                    url = f"https://127.0.0.1:{target.port}{path}"
                    import threading
                    sample = {}

                    def mid_sample(pid=target.pid):
                        time.sleep(self.a.duration / 2)
                        try:
                            sample["rss"] = h.proc_status(pid)["VmRSS"]
                        except OSError:
                            pass
                    t = threading.Thread(target=mid_sample)
                    t.start()
                    s = h.run_wrk(url, self.a.duration, conc, headers=hdrs, body_file=frame, content_type="image/jpeg",
                                  timeout_s=30)
                    t.join()
                    res.setdefault((conc, name), []).append(s)
                    if conc == 4 and "rss" in sample:
                        mem[name].append(sample["rss"])
        lines = ["| concurrency | Spotter req/s | peer req/s | ratio (goal ≥ 5 at c=4) | Spotter p50 / p99 ms "
                 "| peer p50 / p99 ms | p99 ratio (goal ≤ 0.2) | failed (Spotter / peer) |",
                 "|---|---|---|---|---|---|---|---|"]
        for conc in (1, 4, 16):
            s, p = res[(conc, "spotter")], res[(conc, "peer")]
            ok_rps = lambda runs: [(r["requests"] - r["error_total"]) / (r["duration_us"] / 1e6) for r in runs]
            ratio = [a / b for a, b in zip(ok_rps(s), ok_rps(p)) if b > 0]
            p99r = [a["latency_us"]["p99"] / b["latency_us"]["p99"] for a, b in zip(s, p) if b["latency_us"]["p99"] > 0]
            lines.append(
                f"| {conc} | {h.fmt_range(ok_rps(s), '.1f')} | {h.fmt_range(ok_rps(p), '.1f')} | {h.fmt_range(ratio, '.2f')} "
                f"| {h.fmt_range([r['latency_us']['p50'] / 1000 for r in s], '.1f')} / "
                f"{h.fmt_range([r['latency_us']['p99'] / 1000 for r in s], '.1f')} "
                f"| {h.fmt_range([r['latency_us']['p50'] / 1000 for r in p], '.1f')} / "
                f"{h.fmt_range([r['latency_us']['p99'] / 1000 for r in p], '.1f')} "
                f"| {h.fmt_range(p99r, '.2f')} | {sum(r['error_total'] for r in s)} / {sum(r['error_total'] for r in p)} |")
        self.sections.append(("3. Classify over HTTPS (Spotter POST /api/v1/classify / Python peer POST /classify)", lines,
                              f"Same {os.path.basename(frame)} body, wrk {self.a.duration} s per run; req/s counts "
                              f"successful responses only. Top-1 on that frame: Spotter '{sp_top}', peer '{peer_top}'. "
                              "Spotter's camera pipeline keeps running (2 fps) during the test; the peer has none. "
                              "wrk's percentiles cover every response, so where a server refused requests (the "
                              "failed column; Spotter answers uploads beyond its in-flight and queue bounds with an "
                              "immediate 503 busy) its p50/p99 mix those fast refusals in."))
        return mem

    def scenario_4(self, sp, nginx):
        log("scenario 4: small TLS responses vs nginx")
        res = {"spotter": [], "nginx": []}
        for rep in range(self.a.reps):
            for name, target, hdrs in (("spotter", sp, [f"Authorization: Bearer {sp.api_key}"]), ("nginx", nginx, [])):
                res[name].append(h.run_wrk(f"https://127.0.0.1:{target.port}/api/v1/status", self.a.duration, 16,
                                           headers=hdrs))
        s, n = res["spotter"], res["nginx"]
        lines = ["| server | req/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|"]
        for name, runs in (("Spotter /api/v1/status", s), ("nginx, static file of the same size", n)):
            lines.append(f"| {name} | {h.fmt_range([r['rps'] for r in runs], '.0f')} "
                         f"| {h.fmt_range([r['latency_us']['p50'] / 1000 for r in runs], '.2f')} "
                         f"| {h.fmt_range([r['latency_us']['p99'] / 1000 for r in runs], '.2f')} "
                         f"| {sum(r['error_total'] for r in runs)} |")
        lines.append(f"| **ratio Spotter / nginx** | {h.fmt_range([a['rps'] / b['rps'] for a, b in zip(s, n)], '.2f')} (goal ≥ 1) "
                     f"| | {h.fmt_range([a['latency_us']['p99'] / max(b['latency_us']['p99'], 1) for a, b in zip(s, n)], '.2f')} (goal ≤ 1) | |")
        self.sections.append(("4. Small TLS responses (GET /api/v1/status vs nginx)", lines,
                              f"wrk, 16 keep-alive connections, 2 threads, {self.a.duration} s per run, same certificate. "
                              "Spotter authenticates the bearer key, reads live counters and the store size per "
                              "request; nginx sends a file."))

    def scenario_5(self, idle, loaded, peaks):
        model = self.model_bytes
        lines = ["| process | idle RSS MiB | RSS under classify load (c=4) MiB | peak RSS MiB |", "|---|---|---|---|"]
        for name in ("spotter", "peer"):
            lines.append(f"| {'Spotter' if name == 'spotter' else 'Python peer'} | {mib(idle[name]):.1f} "
                         f"| {h.fmt_range([mib(x) for x in loaded[name]], '.1f')} | {mib(peaks[name]):.1f} |")
        ratio = peaks["spotter"] / peaks["peer"] if peaks["peer"] else float("nan")
        lines.append(f"| **Spotter peak / peer peak** | | | {ratio:.2f} (goal ≤ 0.33) |")
        lines.append(f"| **Spotter peak − model size** | | | {mib(peaks['spotter'] - model):.1f} MiB (goal ≤ 30) |")
        self.sections.append(("5. Memory (same model loaded)", lines,
                              f"Model file {mib(model):.1f} MiB. Idle: after start-up and 3 s of quiet. Peak: VmHWM at "
                              "the end of scenario 3."))

    def peak_rss(self, sp, want):
        """The main job's peak RSS (camera/files source + model + API under the scenarios run) against
        the goal of model size + 30 MiB; printed on every run, --quick included."""
        st = h.proc_status(sp.pid)
        model, peak = self.model_bytes, st["VmHWM"]
        ran = ", ".join(str(n) for n in sorted(want & {3, 4}))
        lines = ["| figure | MiB |", "|---|---|",
                 f"| model file | {mib(model):.1f} |",
                 f"| Spotter peak RSS (VmHWM) | {mib(peak):.1f} |",
                 f"| **peak − model** (goal ≤ 30) | **{mib(peak - model):.1f}** ({mib(peak - model) - 30:+.1f} vs the goal) |",
                 f"| of the RSS at the end: anonymous / file-backed | {mib(st['RssAnon']):.1f} / {mib(st['RssFile']):.1f} |"]
        self.sections.append(("Peak RSS of the main job (goal: model size + 30 MiB)", lines,
                              f"The daemon of scenarios {ran}: files source at 2 fps, the model loaded, the API under "
                              "those scenarios' load; VmHWM from /proc at the end. File-backed pages are the binary's "
                              "and libraries' code as far as it ran (clean, shared with the page cache)."))

    def scenario_6(self, cert, key):
        log("scenario 6: start to ready")
        sp_times, peer_times = [], []
        for rep in range(max(self.a.reps, 3)):
            p = self.start_spotter(f"start-{rep}")
            p.stop()
            self.procs.remove(p)
            # A restart (the certificate and store exist), the usual start of an appliance.
            p2 = h.Proc("spotter-restart", [self.a.spotter, "run", "--config",
                                            os.path.join(self.work, f"start-{rep}", "spotter.toml")],
                        os.path.join(self.work, f"start-{rep}", "restart.log"))
            self.procs.append(p2)
            sp_times.append(h.wait_ok(p2, p.port, "/readyz", p.cert, timeout=60, poll_s=0.002) * 1000)
            p2.stop()
            self.procs.remove(p2)
            q = self.start_peer(cert, key)
            peer_times.append(q.ready_s * 1000)
            q.stop()
            self.procs.remove(q)
        lines = ["| process | start → ready ms |", "|---|---|",
                 f"| Spotter (`/readyz` 200, files source, model loaded and canary passed) | {h.fmt_range(sp_times, '.0f')} |",
                 f"| Python peer (`/health` 200, interpreter loaded) | {h.fmt_range(peer_times, '.0f')} |",
                 f"| **ratio Spotter / peer** | {h.fmt_range([a / b for a, b in zip(sp_times, peer_times)], '.2f')} |"]
        self.sections.append(("6. Start to ready (goal " + GOALS["start"] + ")", lines,
                              "From process start to the first 200, polled every 2–5 ms over TLS."))

    def scenario_7(self):
        log("scenario 7: store")
        rates, per_result = [], []
        for rep in range(self.a.reps):
            p = self.start_spotter(f"store-{rep}", fps=240.0)
            ctx = h.tls_context(p.cert)
            auth = {"Authorization": f"Bearer {p.api_key}"}

            def stored():
                s, b = h.https_get("127.0.0.1", p.port, "/api/v1/status", ctx, headers=auth)
                return json.loads(b)["counters"]["results_stored"]
            time.sleep(2)
            n0, w0, t0 = stored(), h.write_bytes(p.pid), time.monotonic()
            time.sleep(self.a.duration)
            n1, w1, t1 = stored(), h.write_bytes(p.pid), time.monotonic()
            p.stop()
            self.procs.remove(p)
            if n1 > n0:
                rates.append((n1 - n0) / (t1 - t0))
                per_result.append((w1 - w0) / (n1 - n0))
        lines = ["| figure | value |", "|---|---|",
                 f"| results stored per second (inference-bound, files source at 240 fps) | {h.fmt_range(rates, '.1f')} |",
                 f"| bytes written to storage per result (/proc/PID/io write_bytes) | {h.fmt_range(per_result, '.0f')} |"]
        # The store alone, sled vs SQLite (WAL), same records, same run.
        n_fast = 20_000 if self.a.quick else 100_000
        rate = 30.0
        runs = {"full speed": {"results": n_fast}, f"paced at {rate:.0f}/s": {"results": int(rate * self.a.duration), "rate": rate}}
        figures = (("results_per_s", "results/s", ".0f"), ("write_bytes_per_result", "bytes written to disk per result", ".0f"),
                   ("db_bytes_per_million", "database MB per million results", ".0f"))
        lines += ["", "| store alone | figure | sled (Spotter) | SQLite WAL | sled / SQLite |", "|---|---|---|---|---|"]
        for label, opts in runs.items():
            got = {"sled": {}, "sqlite": {}, "ratio": {}}
            for rep in range(self.a.reps):
                work = os.path.join(self.a.work, f"store-bench-{label.split()[0]}-{rep}")
                argv = [sys.executable, os.path.join(os.path.dirname(__file__), "store_bench.py"), "--spotter", self.a.spotter,
                        "--work", work, "--results", str(opts["results"])]
                if "rate" in opts:
                    argv += ["--rate", str(opts["rate"])]
                r = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
                for k, _, _ in figures:
                    scale = 1e-6 if k == "db_bytes_per_million" else 1
                    got["sled"].setdefault(k, []).append(r["sled"][k] * scale)
                    got["sqlite"].setdefault(k, []).append(r["sqlite"][k] * scale)
                    got["ratio"].setdefault(k, []).append(r["ratio_sled_over_sqlite"][k] or 0)
            for k, name, spec in figures:
                lines.append(f"| {label}, {opts['results']} results | {name} | {h.fmt_range(got['sled'][k], spec)} | "
                             f"{h.fmt_range(got['sqlite'][k], spec)} | {h.fmt_range(got['ratio'][k], '.2f')} |")
        self.sections.append(("7. Store", lines,
                              "Daemon-level rows: inference bounds the rate. Store-alone rows: `spotter bench-store` "
                              "(sled, the daemon's settings) and Python's sqlite3 (journal_mode=WAL, synchronous=NORMAL, one "
                              "transaction per result, label and model index tables) store the same records; write_bytes "
                              "from /proc/self/io. SQLite's results/s includes Python's per-insert overhead. See README, "
                              "\"Data and backups\"."))

    # -- scenario 8: goodput under overload (issue 21) ---------------------------------------
    def scenario_8(self, frame):
        log("scenario 8: goodput under overload, uploads at concurrency 4 vs 16")
        extra = f"upload_queue = {self.a.goodput_queue}" if self.a.goodput_queue is not None else ""
        sp = self.start_spotter("goodput", fps=self.a.goodput_fps, extra_api=extra)
        peer = None if self.a.no_peer else self.start_peer(sp.cert, sp.tls_key)
        ctx = h.tls_context(sp.cert)
        auth = {"Authorization": f"Bearer {sp.api_key}"}

        def camera():
            s, b = h.https_get("127.0.0.1", sp.port, "/api/v1/status", ctx, headers=auth)
            c = json.loads(b)["counters"]
            # Camera frames the inference thread took (the rest were replaced unseen).
            return c["frames_captured"] - c["frames_dropped"], time.monotonic()

        def camera_rate(seconds):
            (n0, t0) = camera()
            time.sleep(seconds)
            (n1, t1) = camera()
            return (n1 - n0) / (t1 - t0)

        time.sleep(2)
        idle_cam = camera_rate(min(self.a.duration, 5))
        res = {}
        for conc in (4, 16):
            for rep in range(self.a.reps):
                targets = [("spotter", sp, "/api/v1/classify", [f"Authorization: Bearer {sp.api_key}"])]
                if peer:
                    targets.append(("peer", peer, "/classify", []))
                for name, target, path, hdrs in targets:
                    cam = {}
                    import threading

                    def sample_camera():
                        time.sleep(1)
                        cam["fps"] = camera_rate(max(self.a.duration - 3, 1))
                    t = threading.Thread(target=sample_camera) if name == "spotter" else None
                    if t:
                        t.start()
                    r = h.run_wrk(f"https://127.0.0.1:{target.port}{path}", self.a.duration, conc, headers=hdrs,
                                  body_file=frame, content_type="image/jpeg", timeout_s=30)
                    if t:
                        t.join()
                    secs = r["duration_us"] / 1e6
                    r["ok_rps"] = (r["requests"] - r["error_total"]) / secs if secs > 0 else 0.0
                    r["refused_rps"] = r["errors"]["status"] / secs if secs > 0 else 0.0
                    r["camera_fps"] = cam.get("fps")
                    res.setdefault((conc, name), []).append(r)
        lines = ["| concurrency | Spotter classifications/s | Spotter refusals/s (503) | camera frames inferred/s "
                 f"(idle {idle_cam:.1f}) | peer classifications/s |", "|---|---|---|---|---|"]
        for conc in (4, 16):
            s = res[(conc, "spotter")]
            p = res.get((conc, "peer"), [])
            lines.append(f"| {conc} | {h.fmt_range([r['ok_rps'] for r in s], '.1f')} "
                         f"| {h.fmt_range([r['refused_rps'] for r in s], '.1f')} "
                         f"| {h.fmt_range([r['camera_fps'] for r in s if r['camera_fps'] is not None], '.1f')} "
                         f"| {h.fmt_range([r['ok_rps'] for r in p], '.1f') if p else 'not run'} |")
        ratio = [b["ok_rps"] / a["ok_rps"] for a, b in zip(res[(4, "spotter")], res[(16, "spotter")]) if a["ok_rps"] > 0]
        line = f"| **ratio 16 / 4** | {h.fmt_range(ratio, '.2f')} (goal ≥ 1) | | |"
        if peer:
            pr = [b["ok_rps"] / a["ok_rps"] for a, b in zip(res[(4, "peer")], res[(16, "peer")]) if a["ok_rps"] > 0]
            line += f" {h.fmt_range(pr, '.2f')} |"
        else:
            line += " |"
        lines.append(line)
        print("\n".join(lines), file=sys.stderr, flush=True)
        self.sections.append(("8. Goodput under overload (uploads at concurrency 4 vs 16)", lines,
                              f"wrk {self.a.duration} s per run posting {os.path.basename(frame)}; wrk ignores "
                              "Retry-After and sends the next request at once. Classifications/s counts 200s only. "
                              f"The camera (files source at {self.a.goodput_fps} fps) keeps running; its column is "
                              "frames the inference thread took per second, sampled during each Spotter run."))
        sp.stop()
        self.procs.remove(sp)
        if peer:
            peer.stop()
            self.procs.remove(peer)

    # -- report -----------------------------------------------------------------------------
    def write(self, started):
        cpu = ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
                cpu = m.group(1) if m else ""
        except OSError:
            pass
        commit = subprocess.run(["git", "-C", h.REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", h.REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        out = [
            "# Spotter benchmark results",
            "",
            f"Written by `bash benches/run.sh{' --quick' if self.a.quick else ''}` on "
            f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
            "",
            f"- machine: {os.cpu_count()} CPUs, {cpu or 'unknown CPU'}, {platform.system()} {platform.release()} "
            f"{platform.machine()}",
            f"- commit: {commit}{' (working tree modified)' if dirty else ''}",
            f"- binary: `{self.a.spotter}`",
            f"- model: {os.path.basename(self.a.model)} ({mib(self.model_bytes):.1f} MiB), {self.a.threads} threads, LiteRT",
            f"- repetitions: {self.a.reps}; figures are median (min–max); ratios are per repetition, Spotter over "
            f"the baseline measured in the same run",
            f"- load average at the end: {open('/proc/loadavg').read().split()[0:3]}; other work on the machine "
            f"skews absolute times, less so the ratios",
            f"- tools: {(wrk_v.stdout + wrk_v.stderr).splitlines()[0] if (wrk_v.stdout + wrk_v.stderr) else 'wrk'}; "
            f"{(nginx_v.stderr or nginx_v.stdout).strip()}",
            f"- wall time: {time.monotonic() - started:.0f} s",
            "",
            "Goals (reported, not asserted): invoke ratio ≤ 1.0; overhead ≤ 0.10 of invoke at 640×480; classify "
            "throughput ≥ 5× the Python peer at concurrency 4 with p99 ≤ ⅕; status ≥ nginx req/s with p99 ≤ nginx; "
            "RSS ≤ model + 30 MiB and ≤ ⅓ of the peer; start to ready ≤ 300 ms; a YOLOv8n detector end to end "
            "≤ 1.0 of Python's per frame, pre-processing ≤ 0.15 and decode + NMS ≤ 0.02 of invoke.",
            "",
        ]
        for title, lines, note in self.sections:
            out += [f"## {title}", ""] + lines + ["", note, ""]
        with open(self.a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(out))
        log(f"wrote {self.a.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k in ("spotter", "model", "photos", "image", "litert-lib", "peer-python", "peer-dir", "work", "out",
              "runtime-vs-python"):
        ap.add_argument(f"--{k}", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7")
    ap.add_argument("--quick", action="store_true")
    # Scenario 8 (goodput under overload).
    ap.add_argument("--no-peer", action="store_true", help="scenario 8 without the Python peer")
    ap.add_argument("--frame", help="scenario 8's upload (default: the 640x480 frame made from --image)")
    ap.add_argument("--goodput-fps", type=float, default=10.0, help="scenario 8's camera rate")
    ap.add_argument("--goodput-queue", type=int, help="scenario 8: api.upload_queue (default: Spotter's)")
    a = ap.parse_args()
    for k in ("spotter", "model", "photos", "image", "litert_lib", "peer_dir", "work", "out", "runtime_vs_python"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    want = {int(x) for x in a.scenarios.split(",") if x}
    run = Run(a)
    started = time.monotonic()
    try:
        if 1 in want:
            run.scenario_1()
        if 2 in want:
            run.scenario_2(run.frames())
        if want & {3, 4, 5}:
            sp = run.start_spotter("main")
            time.sleep(3)
            idle = {"spotter": h.proc_status(sp.pid)["VmRSS"]}
            tls_key = sp.tls_key
            if 4 in want:
                s, body = h.https_get("127.0.0.1", sp.port, "/api/v1/status", h.tls_context(sp.cert),
                                      headers={"Authorization": f"Bearer {sp.api_key}"})
                if s != 200:
                    raise h.BenchError(f"GET /api/v1/status answered {s}")
                nginx = run.start_nginx(sp.cert, tls_key, body)
                run.scenario_4(sp, nginx)
            if want & {3, 5}:
                peer = run.start_peer(sp.cert, tls_key)
                time.sleep(3)
                idle["peer"] = h.proc_status(peer.pid)["VmRSS"]
                frame = run.frames()[(640, 480)]
                loaded = run.scenario_3_5(sp, peer, frame)
                peaks = {"spotter": h.proc_status(sp.pid)["VmHWM"], "peer": h.proc_status(peer.pid)["VmHWM"]}
                if 5 in want:
                    run.scenario_5(idle, loaded, peaks)
            run.peak_rss(sp, want)
            run.stop_all()
        if 6 in want:
            cert_src = os.path.join(a.work, "main", "state", "tls")
            if not os.path.exists(os.path.join(cert_src, "cert.pem")):
                p = run.start_spotter("main")
                run.stop_all()
            run.scenario_6(os.path.join(cert_src, "cert.pem"), os.path.join(cert_src, "key.pem"))
        if 7 in want:
            run.scenario_7()
        if 8 in want:
            run.scenario_8(os.path.abspath(a.frame) if a.frame else run.frames()[(640, 480)])
        if 9 in want:
            run.scenario_9()
    except h.BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        run.stop_all()
    run.write(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
