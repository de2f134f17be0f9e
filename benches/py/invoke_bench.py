#!/usr/bin/env python3
"""Time LiteRT's Python Interpreter invoke on one model, for comparison with `spotter bench`.

Loads MODEL with ai_edge_litert.interpreter.Interpreter(model_path, num_threads=T) (the default
op resolver, which applies the XNNPACK delegate), fills the input tensor from IMAGE resized with
Pillow's bilinear filter to the model's input size (quantized with the input tensor's own scale
and zero point), then times `invoke()` alone over WARMUP + RUNS calls and prints one JSON object:
{"model", "threads", "runs", "warmup", "input_shape", "input_dtype", "litert_version",
 "invoke": {"median_ms", "p99_ms"}}. Percentiles are nearest-rank, as in `spotter bench`.
"""

import argparse
import json
import math
import sys
import time


def nearest_rank(sorted_values, p):
    """The nearest-rank p-th percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    n = len(sorted_values)
    rank = math.ceil(p / 100.0 * n)
    return sorted_values[min(max(rank, 1), n) - 1]


def input_tensor(detail, image_path, np, Image):
    """The model input for IMAGE: RGB, bilinear stretch, quantized like Spotter does."""
    shape = detail["shape"]
    if len(shape) != 4 or shape[3] != 3:
        raise SystemExit(f"invoke_bench: unsupported input shape {list(shape)} (expected [1,H,W,3])")
    h, w = int(shape[1]), int(shape[2])
    with Image.open(image_path) as img:
        rgb = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
    dtype = detail["dtype"]
    if dtype == np.float32:
        data = (rgb - 127.5) / 127.5
    else:
        scale, zero = detail["quantization"]
        # Real value in [-1, 1] (mean 127.5, std 127.5), then the tensor's own quantization;
        # for the usual uint8 scale 1/128 zero point 128 this is close to the raw pixel.
        real = (rgb - 127.5) / 127.5
        q = np.round(real / scale + zero) if scale > 0 else rgb
        info = np.iinfo(dtype)
        data = np.clip(q, info.min, info.max)
    return data.astype(dtype).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if a.runs < 1 or a.warmup < 0 or a.threads < 1:
        raise SystemExit("invoke_bench: --runs and --threads must be >= 1, --warmup >= 0")

    import numpy as np
    from PIL import Image
    from ai_edge_litert import interpreter as litert
    try:
        from importlib.metadata import version
        litert_version = version("ai-edge-litert")
    except Exception:  # metadata missing in an unusual install: report, don't fail
        litert_version = "unknown"

    interp = litert.Interpreter(model_path=a.model, num_threads=a.threads)
    interp.allocate_tensors()
    inputs = interp.get_input_details()
    if len(inputs) != 1:
        raise SystemExit(f"invoke_bench: {a.model} has {len(inputs)} inputs, expected 1")
    detail = inputs[0]
    data = input_tensor(detail, a.image, np, Image)

    samples = []
    for i in range(a.warmup + a.runs):
        interp.set_tensor(detail["index"], data)
        t = time.perf_counter_ns()
        interp.invoke()
        dt = time.perf_counter_ns() - t
        if i >= a.warmup:
            samples.append(dt / 1e6)
    # Read an output so a lazily-evaluated invoke would show up as an error here.
    interp.get_tensor(interp.get_output_details()[0]["index"])
    samples.sort()
    json.dump(
        {
            "model": a.model,
            "threads": a.threads,
            "runs": a.runs,
            "warmup": a.warmup,
            "input_shape": [int(x) for x in detail["shape"]],
            "input_dtype": np.dtype(detail["dtype"]).name,
            "litert_version": litert_version,
            "invoke": {"median_ms": nearest_rank(samples, 50), "p99_ms": nearest_rank(samples, 99)},
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
