#!/usr/bin/env python3
"""Print the runtime-vs-Python table from `spotter bench --json` and invoke_bench.py outputs.

Usage: report.py [--json-out FILE] --row MODEL THREADS SPOTTER_JSON PYTHON_JSON [--row ...]

Columns: Spotter's LiteRT invoke median, the Python Interpreter's invoke median, their ratio
(Spotter/Python; goal <= 1.0), and Spotter's overhead ratio (decode+resize+quantize+post over
invoke, medians; goal <= 0.10). Goals are reported, never enforced: the exit status only says
whether the inputs could be read.
"""

import argparse
import json
import os

INVOKE_GOAL = 1.0
OVERHEAD_GOAL = 0.10


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
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
