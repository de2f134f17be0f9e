#!/usr/bin/env python3
"""Time LiteRT's Python Interpreter invoke on one model, for comparison with `spotter bench`.

Invoke mode (default): loads MODEL with ai_edge_litert.interpreter.Interpreter(model_path, num_threads=T) (the default
op resolver, which applies the XNNPACK delegate), fills the input tensor from IMAGE resized with
Pillow's bilinear filter to the model's input size (quantized with the input tensor's own scale
and zero point), then times `invoke()` alone over WARMUP + RUNS calls and prints one JSON object:
{"model", "threads", "runs", "warmup", "input_shape", "input_dtype", "litert_version",
 "invoke": {"median_ms", "p99_ms"}}. Percentiles are nearest-rank, as in `spotter bench`.

End-to-end mode (--e2e, Ultralytics YOLO detectors: one output [1, 4+classes, anchors]): the
reference pipeline of the testdata README's yolo_reference.json, timed per frame from the encoded
IMAGE bytes in memory to the list of detections, WARMUP + RUNS times:
  decode    Pillow decodes the JPEG (full size, RGB);
  pre       letterbox (Pillow bilinear, keep aspect, centred, pad 114), /255, quantize with the
            input tensor's scale and zero point (float inputs take the /255 values);
  invoke    set_tensor + invoke;
  post      get_tensor, dequantize with the output tensor's parameters, best class per anchor,
            score >= --min-score (default 0.25), class-aware NMS at --iou (0.45), boxes mapped back
            through the letterbox to image pixels (normalized or pixel box units, told by the
            largest coordinate) and clipped;
  e2e       the whole frame.
The JSON then also holds "decode", "pre", "post", "e2e" (median_ms, p99_ms), "detections" (of the
last frame: label index, score, box) and "image_size".
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


def letterbox(img, w, h, pad, Image):
    """IMG scaled to fit WxH keeping its aspect ratio (bilinear), centred on a PAD canvas.
    Returns the canvas and (scale, left, top) to map boxes back."""
    iw, ih = img.size
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    left, top = (w - nw) // 2, (h - nh) // 2
    canvas = Image.new("RGB", (w, h), (pad, pad, pad))
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (left, top))
    return canvas, scale, left, top


def quantize_unit(rgb_u8, detail, np):
    """Pixels /255, then the input tensor's own quantization (or float32 as is)."""
    real = rgb_u8.astype(np.float32) / 255.0
    dtype = detail["dtype"]
    if dtype == np.float32:
        return real[None, ...]
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero), info.min, info.max).astype(dtype)[None, ...]


def nms(boxes, scores, iou, np):
    """Greedy NMS on ltrb boxes, highest score first (among equal quantized scores the later
    anchor first, as yolo_reference.json was made); indices kept."""
    order = np.argsort(scores, kind="stable")[::-1]
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clip(0).prod(axis=1)
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-12)]
    return keep


def yolo_post(raw, detail, in_w, in_h, scale, left, top, img_w, img_h, min_score, iou, np):
    """Detections [(class, score, l, t, r, b)] from a [1, 4+C, N] output, in image pixels."""
    out = raw[0].astype(np.float32)
    qs, qz = detail["quantization"]
    if raw.dtype != np.float32 and qs > 0:
        out = (out - qz) * qs
    cls_scores = out[4:]
    cls = cls_scores.argmax(axis=0)
    score = cls_scores[cls, np.arange(cls_scores.shape[1])]
    sel = score >= min_score
    if not sel.any():
        return []
    cx, cy, bw, bh = out[0, sel], out[1, sel], out[2, sel], out[3, sel]
    cls, score = cls[sel], score[sel]
    # This export writes 0..1 coordinates; pixel-unit exports exceed a few units.
    if float(out[:4].max()) <= 2.0:
        cx, bw, cy, bh = cx * in_w, bw * in_w, cy * in_h, bh * in_h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    # Class-aware: offset each class's boxes so different classes never overlap.
    offset = cls[:, None].astype(np.float32) * (max(in_w, in_h) + 1.0)
    keep = nms(boxes + offset, score, iou, np)
    dets = []
    for i in keep:
        l, t, r, b = boxes[i]
        l, r = [min(max((v - left) / scale, 0.0), img_w) for v in (l, r)]
        t, b = [min(max((v - top) / scale, 0.0), img_h) for v in (t, b)]
        dets.append((int(cls[i]), float(score[i]), float(l), float(t), float(r), float(b)))
    return dets


def e2e(a, interp, detail, np, Image):
    """The reference detector pipeline per frame; {stage: [ms]} and the last frame's detections."""
    import io

    outs = interp.get_output_details()
    shape = [int(x) for x in outs[0]["shape"]] if len(outs) == 1 else []
    if len(shape) != 3 or shape[1] < 5 or shape[2] <= shape[1]:
        raise SystemExit(f"invoke_bench: --e2e handles one YOLO output [1, 4+classes, anchors]; "
                         f"{a.model} has {[list(o['shape']) for o in outs]}")
    in_h, in_w = int(detail["shape"][1]), int(detail["shape"][2])
    with open(a.image, "rb") as f:
        data = f.read()
    stages = {k: [] for k in ("decode", "pre", "invoke", "post", "e2e")}
    dets, size = [], None
    ns = time.perf_counter_ns
    for i in range(a.warmup + a.runs):
        t0 = ns()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        t1 = ns()
        canvas, scale, left, top = letterbox(img, in_w, in_h, 114, Image)
        x = quantize_unit(np.asarray(canvas), detail, np)
        t2 = ns()
        interp.set_tensor(detail["index"], x)
        interp.invoke()
        t3 = ns()
        raw = interp.get_tensor(outs[0]["index"])
        dets = yolo_post(raw, outs[0], in_w, in_h, scale, left, top, img.width, img.height,
                         a.min_score, a.iou, np)
        t4 = ns()
        size = [img.width, img.height]
        if i >= a.warmup:
            for k, d in (("decode", t1 - t0), ("pre", t2 - t1), ("invoke", t3 - t2),
                         ("post", t4 - t3), ("e2e", t4 - t0)):
                stages[k].append(d / 1e6)
    return stages, dets, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--e2e", action="store_true", help="time the whole YOLO detector pipeline per frame")
    ap.add_argument("--min-score", type=float, default=0.25, help="--e2e: score threshold")
    ap.add_argument("--iou", type=float, default=0.45, help="--e2e: NMS IoU threshold")
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
    result = {
        "model": a.model,
        "threads": a.threads,
        "runs": a.runs,
        "warmup": a.warmup,
        "input_shape": [int(x) for x in detail["shape"]],
        "input_dtype": np.dtype(detail["dtype"]).name,
        "litert_version": litert_version,
    }
    if a.e2e:
        stages, dets, size = e2e(a, interp, detail, np, Image)
        for k, v in stages.items():
            v.sort()
            result[k] = {"median_ms": nearest_rank(v, 50), "p99_ms": nearest_rank(v, 99)}
        result.update(image=a.image, image_size=size, min_score=a.min_score, iou=a.iou,
                      detections=[{"class_id": c, "score": round(s, 4), "box_px_ltrb": [round(v, 1) for v in b]}
                                  for c, s, *b in dets])
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
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
    result["invoke"] = {"median_ms": nearest_rank(samples, 50), "p99_ms": nearest_rank(samples, 99)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
