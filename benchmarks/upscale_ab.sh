#!/bin/bash
# Time `kdsr upscale` (default flags) of one large photo in two checkouts, side by side (issue 24).
#   bash benchmarks/upscale_ab.sh OLD_TREE NEW_TREE [COLS ROWS]   # mosaic of COLS x ROWS B100 images (default 5 5)
# The photo is a mosaic of 480x320 B100 images (portraits turned), JPEG q92: a stand-in for a camera photo.
# Prints wall / user / system time, peak RSS and minor page faults per tree (GNU time), and whether the outputs
# match byte for byte. Each tree must have its C++ extension built (kdsr_kernels/_C*.so).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); cols=${3:-5}; rows=${4:-5}
data=${DATA:-$(realpath ../shared/data)}
work=$(mktemp -d)
python - "$data/B100" "$cols" "$rows" "$work/photo.jpg" <<'PY'
import os, sys
from PIL import Image
src, cols, rows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = sorted(os.listdir(src))
canvas = Image.new("RGB", (480 * cols, 320 * rows))
for i in range(cols * rows):
    im = Image.open(os.path.join(src, names[i % len(names)])).convert("RGB")
    if im.size != (480, 320):
        im = im.rotate(90, expand=True).resize((480, 320))
    canvas.paste(im, ((i % cols) * 480, (i // cols) * 320))
canvas.save(out, quality=92)
print(f"photo {canvas.size[0]}x{canvas.size[1]} ({canvas.size[0] * canvas.size[1] / 1e6:.2f} MP)")
PY
for tree in "$old" "$new"; do
  (cd "$tree" && /usr/bin/time -f "$(git -C "$tree" rev-parse --short HEAD): wall %e s, user %U s, sys %S s, peak RSS %M KB, minor faults %R" \
    python -m kdsr upscale "$work/photo.jpg" -o "$work/$(basename "$tree")" --no-progress --threads "${THREADS:-2}" --ext png 2>&1 \
    | grep -E "wall|rror")
done
cmp -s "$work/$(basename "$old")/photo_x4.png" "$work/$(basename "$new")/photo_x4.png" && echo "outputs identical" || echo "outputs differ"
rm -rf "$work"
