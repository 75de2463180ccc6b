#!/usr/bin/env bash
# make quickstart: train MTPG-AIAA end to end on CPU in a few minutes -- a tiny Long-CLIP,
# the toy-art set (built on first use), stage 1 then stage 2, then test.py and demo.py.
# Every step is a plain command you can rerun; finished runs are resumed, not redone.
set -euo pipefail
PY=${1:-.venv/bin/python}
RUNS=outputs/train
TEST_DIR=outputs/quickstart/test
SECONDS=0

echo "== [1/4] stage 1: self-supervised prompt pretraining on manipulated toy-art (builds data/toy once)"
$PY train.py experiment=quickstart_pretrain
echo "== [2/4] stage 2: fusion + level-prompt learning, from stage 1   (${SECONDS}s so far)"
$PY train.py experiment=quickstart
echo "== [3/4] test.py on the toy test split   (${SECONDS}s so far)"
$PY test.py ckpt=$RUNS/quickstart-finetune/best.safetensors data=toy hydra.run.dir=$TEST_DIR
echo "== [4/4] demo.py on two test paintings"
# The lowest- and highest-scored test paintings, with their descriptions.
mapfile -t pair < <($PY - <<'PY'
import pandas as pd
rows = pd.read_csv("data/toy/test_set.csv").sort_values("score")
for row in (rows.iloc[0], rows.iloc[-1]):
    print("data/toy/images/" + row["image"])
    print(" ".join(str(row["comment"]).split()))
PY
)
$PY demo.py "${pair[0]}" "${pair[2]}" --desc1 "${pair[1]}" --desc2 "${pair[3]}" \
    --ckpt $RUNS/quickstart-finetune/best.safetensors

cat <<MSG

Done in ${SECONDS}s. Outputs:
  $RUNS/quickstart-pretrain/   stage-1 run (curves.png, metrics.csv, last.pt)
  $RUNS/quickstart-finetune/   stage-2 run (best.safetensors, curves.png)
  $TEST_DIR/                   metrics.json, predictions.csv, scatter.png
These numbers are on synthetic toy-art (docs/toy_dataset.md) and say nothing about BAID.
MSG
