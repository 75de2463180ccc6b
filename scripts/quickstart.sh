#!/usr/bin/env bash
# make quickstart: test.py and demo.py end to end on a tiny RANDOMLY INITIALISED model.
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=outputs/quickstart
echo "== building a tiny random model and 24 generated images in $OUT"
$PY scripts/make_smoke_data.py --out "$OUT" --num-images 24
echo "== test.py"
$PY test.py ckpt="$OUT/tiny_random.safetensors" data.csv="$OUT/labels.csv" \
    data.image_root="$OUT/images" eval.num_workers=0 hydra.run.dir="$OUT/test"
echo "== demo.py"
$PY demo.py "$OUT/images/0000.jpg" "$OUT/images/0001.jpg" --ckpt "$OUT/tiny_random.safetensors" \
    --desc1 "A vivid abstract painting." --desc2 "A muted abstract painting."
cat <<'MSG'

NOTE: these scores come from a randomly initialised tiny model and mean nothing.
Real scores need trained weights: the authors' checkpoint (checkpoints/README.md)
or a model you train with train.py.
MSG
