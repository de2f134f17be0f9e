#!/usr/bin/env python3
"""Print the runtime-vs-Python table from `spotter bench --json` and invoke_bench.py outputs.

Usage: report.py [--json-out FILE] --row MODEL THREADS SPOTTER_JSON PYTHON_JSON [--row ...]

Columns: Spotter's LiteRT invoke median, the Python Interpreter's invoke median, their ratio
(Spotter/Python; goal <= 1.0), and Spotter's overhead ratio (decode+resize+quantize+post over
invoke, medians; goal <= 0.10). Goals are reported, never enforced: the exit status only says
whether the inputs could be read.

Rows whose Python JSON comes from `invoke_bench.py --e2e` (a detector's whole pipeline per frame)
also go into a second table: end-to-end per frame (encoded bytes in, detections out) for both and
their ratio (goal <= 1.0), each stage beside Python's, and Spotter's pre-processing and post-
processing (decode + NMS) as fractions of its invoke beside the issue-17 targets (0.15, 0.02).
"""

import argparse
import json
import os

INVOKE_GOAL = 1.0
OVERHEAD_GOAL = 0.10
E2E_GOAL = 1.0
PRE_GOAL = 0.15
POST_GOAL = 0.02


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--row", nargs=4, action="append", required=True, metavar=("MODEL", "THREADS", "SPOTTER_JSON", "PYTHON_JSON"))
    ap.add_argument("--json-out")
    a = ap.parse_args()

    rows = []
    for model, threads, sp_path, py_path in a.row:
        sp, py = load(sp_path), load(py_path)
        lit = sp["runtimes"].get("litert")
        if lit is None or lit.get("skipped"):
            raise SystemExit(f"report: {sp_path} has no LiteRT measurement: {json.dumps(sp['runtimes'])}")
        st = lit["stages"]
        s_inv = st["invoke"]["median_ms"]
        p_inv = py["invoke"]["median_ms"]
        rows.append(
            {
                "model": os.path.basename(model),
                "threads": int(threads),
                "frame": f"{lit.get('image_width', '?')}x{lit.get('image_height', '?')}",
                "spotter_invoke_median_ms": s_inv,
                "spotter_invoke_p99_ms": st["invoke"]["p99_ms"],
                "python_invoke_median_ms": p_inv,
                "python_invoke_p99_ms": py["invoke"]["p99_ms"],
                "invoke_ratio": s_inv / p_inv if p_inv > 0 else None,
                "overhead_ratio": lit["overhead_ratio"],
                "pre_post_median_ms": sum(st[k]["median_ms"] for k in ("decode", "resize", "quantize", "post")),
                "store_median_ms": st["store"]["median_ms"],
                "total_median_ms": st["total"]["median_ms"],
                "spotter_reason": lit["reason"],
            }
        )
        if "e2e" in py:
            pre = sum(st[k]["median_ms"] for k in ("decode", "resize", "quantize"))
            s_e2e = st["e2e"]["median_ms"]
            p_e2e = py["e2e"]["median_ms"]
            rows[-1].update(
                {
                    "spotter_pre_median_ms": pre,
                    "spotter_post_median_ms": st["post"]["median_ms"],
                    "spotter_e2e_median_ms": s_e2e,
                    "spotter_e2e_p99_ms": st["e2e"]["p99_ms"],
                    "python_decode_median_ms": py["decode"]["median_ms"],
                    "python_pre_median_ms": py["decode"]["median_ms"] + py["pre"]["median_ms"],
                    "python_post_median_ms": py["post"]["median_ms"],
                    "python_e2e_median_ms": p_e2e,
                    "python_e2e_p99_ms": py["e2e"]["p99_ms"],
                    "e2e_ratio": s_e2e / p_e2e if p_e2e > 0 else None,
                    "pre_ratio": lit.get("pre_ratio"),
                    "post_ratio": lit.get("post_ratio"),
                    "python_detections": len(py.get("detections", [])),
                    "min_score": sp.get("min_score"),
                }
            )

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    def goal(x, limit):
        return "" if x is None else ("ok" if x <= limit else "MISSED")

    head = f"{'model':<36} {'thr':>3} {'frame':>9} {'spotter ms':>10} {'python ms':>10} {'invoke ratio':>14} {'pre+post ms':>11} {'overhead':>13} {'total ms':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['model']:<36} {r['threads']:>3} {r['frame']:>9} {f(r['spotter_invoke_median_ms'], '.3f'):>10} "
            f"{f(r['python_invoke_median_ms'], '.3f'):>10} {f(r['invoke_ratio'], '.2f'):>7} {goal(r['invoke_ratio'], INVOKE_GOAL):>6} "
            f"{f(r['pre_post_median_ms'], '.3f'):>11} {f(r['overhead_ratio'], '.3f'):>6} {goal(r['overhead_ratio'], OVERHEAD_GOAL):>6} "
            f"{f(r['total_median_ms'], '.3f'):>9}"
        )
    print()
    print(f"invoke ratio = Spotter LiteRT invoke median / Python Interpreter invoke median (goal <= {INVOKE_GOAL})")
    print(f"overhead = (decode+resize+quantize+post) / invoke, Spotter medians, on the JPEG frame of each row (goal <= {OVERHEAD_GOAL})")
    e2e = [r for r in rows if "e2e_ratio" in r]
    if e2e:
        print()
        head = (f"{'model':<36} {'thr':>3} {'frame':>9} {'pre ms S/P':>15} {'invoke ms S/P':>17} {'post ms S/P':>15} "
                f"{'e2e ms S/P':>17} {'e2e ratio':>13} {'pre/invoke':>14} {'post/invoke':>15}")
        print(head)
        print("-" * len(head))
        for r in e2e:
            pair = lambda a, b: f"{f(r[a], '.2f')}/{f(r[b], '.2f')}"  # noqa: E731
            print(
                f"{r['model']:<36} {r['threads']:>3} {r['frame']:>9} "
                f"{pair('spotter_pre_median_ms', 'python_pre_median_ms'):>15} "
                f"{pair('spotter_invoke_median_ms', 'python_invoke_median_ms'):>17} "
                f"{pair('spotter_post_median_ms', 'python_post_median_ms'):>15} "
                f"{pair('spotter_e2e_median_ms', 'python_e2e_median_ms'):>17} "
                f"{f(r['e2e_ratio'], '.2f'):>6} {goal(r['e2e_ratio'], E2E_GOAL):>6} "
                f"{f(r['pre_ratio'], '.3f'):>7} {goal(r['pre_ratio'], PRE_GOAL):>6} "
                f"{f(r['post_ratio'], '.4f'):>8} {goal(r['post_ratio'], POST_GOAL):>6}"
            )
        print()
        print("S/P = Spotter / Python (ai_edge_litert + numpy + Pillow, the yolo_reference.json method), medians; "
              "pre = JPEG decode + resize/letterbox + quantize; post = output decode + NMS (+ rules)")
        print(f"e2e ratio = Spotter / Python per frame, encoded JPEG in, detections out (goal <= {E2E_GOAL})")
        print(f"pre/invoke, post/invoke: Spotter's, medians (targets <= {PRE_GOAL} for a 1280x720 frame into 640x640, "
              f"<= {POST_GOAL} for YOLOv8n 640 on one thread)")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
