#!/usr/bin/env python3
"""Make the benchmark's camera frame: SRC stretched to 640x480, saved as a baseline JPEG (quality 85),
like one MJPEG frame from a VGA webcam. Usage: make_frame.py SRC DEST"""

import sys

from PIL import Image


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: make_frame.py SRC DEST")
    src, dest = sys.argv[1], sys.argv[2]
    with Image.open(src) as img:
        img.convert("RGB").resize((640, 480), Image.BILINEAR).save(dest, "JPEG", quality=85)


if __name__ == "__main__":
    main()
