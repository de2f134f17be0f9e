#!/usr/bin/env python3
"""Make the benchmark's camera frame: SRC stretched to WIDTHxHEIGHT (default 640x480), saved as a
baseline JPEG (quality 85), like one MJPEG frame from a webcam. Usage: make_frame.py SRC DEST [WxH]"""

import sys

from PIL import Image


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: make_frame.py SRC DEST [WxH]")
    src, dest = sys.argv[1], sys.argv[2]
    size = sys.argv[3] if len(sys.argv) == 4 else "640x480"
    try:
        w, h = (int(v) for v in size.split("x"))
    except ValueError:
        raise SystemExit(f"make_frame.py: size must be WxH, got {size!r}")
    if not (0 < w <= 8192 and 0 < h <= 8192):
        raise SystemExit(f"make_frame.py: size {size} out of range")
    with Image.open(src) as img:
        img.convert("RGB").resize((w, h), Image.BILINEAR).save(dest, "JPEG", quality=85)


if __name__ == "__main__":
    main()
