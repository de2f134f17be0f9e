"""The Python peer Spotter is measured against: the usual "production-ready" image classifier.

FastAPI + uvicorn (uvloop and httptools, from `uvicorn[standard]`), one LiteRT
`ai_edge_litert.interpreter.Interpreter` loaded once at start-up with the XNNPACK delegate and the
same thread count as Spotter, Pillow for decode and resize, top-5 JSON out. It exists only for
comparison (benches/run.sh) and is kept honest: same model, same threads, same input size, the same
bilinear stretch and the same quantization rule as Spotter's default, no handicaps.

Endpoints:
  GET  /health    -> {"status": "ok"} once the interpreter is loaded (uvicorn only accepts
                     connections after start-up, so the first 200 is "ready").
  POST /classify  -> the request body is the image (JPEG/PNG/BMP bytes, as Spotter's
                     POST /api/v1/classify takes it); answers
                     {"model", "top": [{"index", "label", "score"}], "latency_ms": {...}}.

Configuration (environment): PEER_MODEL (path to .tflite, required), PEER_THREADS (default 2),
PEER_LABELS (optional labels file; default: the labels file embedded in the model's metadata zip).
Run: uvicorn app:app --host 127.0.0.1 --port P --ssl-certfile C --ssl-keyfile K
"""

import io
import os
import threading
import time
import zipfile

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

MODEL = os.environ["PEER_MODEL"]
THREADS = int(os.environ.get("PEER_THREADS", "2"))
MAX_BODY = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def load_labels(model_path, labels_path):
    """Labels from a file, else from the first .txt in the zip appended to the model."""
    if labels_path:
        with open(labels_path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    try:
        with zipfile.ZipFile(model_path) as z:
            for name in z.namelist():
                if name.endswith(".txt"):
                    text = z.read(name).decode("utf-8")
                    return [line.strip() for line in text.splitlines() if line.strip()]
    except zipfile.BadZipFile:
        pass
    return []


interpreter = Interpreter(model_path=MODEL, num_threads=THREADS)
interpreter.allocate_tensors()
IN = interpreter.get_input_details()[0]
OUT = interpreter.get_output_details()[0]
H, W = int(IN["shape"][1]), int(IN["shape"][2])
LABELS = load_labels(MODEL, os.environ.get("PEER_LABELS"))
# The interpreter is not thread-safe; uvicorn's threadpool runs requests concurrently.
LOCK = threading.Lock()


def quantize(rgb):
    """Spotter's default input rule: quantized inputs take raw pixels mapped onto the tensor's
    range (uint8: p; int8: p - 128); float inputs take (p - 127.5) / 127.5."""
    dtype = IN["dtype"]
    if dtype == np.uint8:
        return rgb
    if dtype == np.int8:
        return (rgb.astype(np.int16) - 128).astype(np.int8)
    return ((rgb.astype(np.float32) - 127.5) / 127.5).astype(np.float32)


def top5(raw):
    scale, zero = OUT["quantization"]
    scores = (raw.astype(np.float32) - zero) * scale if scale > 0 else raw.astype(np.float32)
    offset = 1 if len(LABELS) + 1 == scores.size else 0
    best = np.argsort(-scores)[:5]
    out = []
    for i in best:
        j = int(i) - offset
        label = LABELS[j] if 0 <= j < len(LABELS) else str(int(i))
        out.append({"index": int(i), "label": label, "score": float(scores[i])})
    return out


def classify_bytes(data):
    t0 = time.perf_counter()
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB").resize((W, H), Image.BILINEAR), dtype=np.uint8)
    except Exception as e:  # Pillow raises many types for bad input
        raise HTTPException(status_code=415, detail=f"not a decodable image: {e}") from e
    t1 = time.perf_counter()
    tensor = quantize(rgb).reshape(IN["shape"])
    with LOCK:
        interpreter.set_tensor(IN["index"], tensor)
        t2 = time.perf_counter()
        interpreter.invoke()
        t3 = time.perf_counter()
        raw = interpreter.get_tensor(OUT["index"])[0].copy()
    top = top5(raw)
    t4 = time.perf_counter()
    ms = lambda a, b: round((b - a) * 1000.0, 3)
    return {
        "model": os.path.basename(MODEL),
        "top": top,
        "latency_ms": {"pre": ms(t0, t2), "invoke": ms(t2, t3), "post": ms(t3, t4)},
    }


app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/classify")
async def classify(request: Request):
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(status_code=413, detail="body too large")
    if not body:
        raise HTTPException(status_code=400, detail="empty body")
    return await run_in_threadpool(classify_bytes, body)
