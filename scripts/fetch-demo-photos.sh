#!/usr/bin/env bash
# Fetch demo photos from the scikit-image wheel (skimage/data/): chelsea.png
# (CC0), coffee.png (CC0), astronaut.png (public domain, NASA), rocket.jpg
# (public domain). Prints the folder.
source "$(dirname "$0")/lib.sh"
OUT="$CACHE/demo/photos"
PHOTOS="chelsea.png coffee.png astronaut.png rocket.jpg"
have=1
for p in $PHOTOS; do [ -s "$OUT/$p" ] || have=0; done
if [ $have -eq 0 ]; then
    say "fetching demo photos from PyPI (scikit-image==0.26.0 wheel)"
    pip_fetch "$CACHE/pip" --only-binary :all: scikit-image==0.26.0
    whl=$(ls "$CACHE"/pip/scikit_image-0.26.0-*.whl | head -n1)
    mkdir -p "$OUT"
    for p in $PHOTOS; do
        unzip -p "$whl" "skimage/data/$p" > "$OUT/$p.tmp" && mv "$OUT/$p.tmp" "$OUT/$p"
    done
fi
echo "$OUT"
