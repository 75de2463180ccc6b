#!/usr/bin/env bash
# How far the quickstart's figures move across CPU kernel levels (docs/results.md, "Spread").
# Runs the quickstart's three measuring commands (stage 1, stage 2, test.py; demo.py measures
# nothing) once per level that PyTorch's CPU dispatch offers on this host, each level in its
# own output folder, and prints the toy test SRCC / PLCC of each. The levels stand in for other
# x86 machines: a CPU without AVX-512 runs the avx2 kernels, and so on.
#   bash scripts/quickstart_spread.sh [PYTHON] [OUT_ROOT]
#   LEVELS="default avx2" SPLIT_SEED=102 bash scripts/quickstart_spread.sh
# A level written LEVEL/compatible also puts the BLAS and oneDNN libraries on their most
# portable code paths (MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41), as the oldest x86 would.
# The toy set is built once under OUT_ROOT/toy (numpy / PIL / OpenCV, no torch) and shared by
# every level, so only the training and scoring kernels differ between levels.
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=${2:-outputs/quickstart-spread}
SPLIT_SEED=${SPLIT_SEED:-101}
LEVELS=${LEVELS:-default avx2 avx512}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SPLIT=data.build.split_seed=$SPLIT_SEED
DATA=data.root=$OUT/toy
mkdir -p "$OUT"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'); torch $($PY -c 'import torch; print(torch.__version__)')"
for entry in $LEVELS; do
    level=${entry%%/*}
    root=$OUT/${entry//\//-}
    export ATEN_CPU_CAPABILITY=$level
    if [[ $entry == */compatible ]]; then
        export MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41
    else
        unset MKL_CBWR ONEDNN_MAX_CPU_ISA
    fi
    echo "== ATEN_CPU_CAPABILITY=$level MKL_CBWR=${MKL_CBWR:-} ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-} -> $root"
    $PY -c "import torch; print('capability in force:', torch.backends.cpu.get_cpu_capability())"
    $PY train.py experiment=quickstart_pretrain $SPLIT $DATA paths.output_root=$root
    $PY train.py experiment=quickstart $SPLIT $DATA paths.output_root=$root
    $PY test.py ckpt=$root/train/quickstart-finetune-split$SPLIT_SEED/best.safetensors data=toy \
        $SPLIT $DATA hydra.run.dir=$root/test
done
unset ATEN_CPU_CAPABILITY MKL_CBWR ONEDNN_MAX_CPU_ISA
$PY - "$OUT" "$SPLIT_SEED" $LEVELS <<'PY'
import json, sys
out, split, entries = sys.argv[1], sys.argv[2], sys.argv[3:]
for entry in entries:
    root = f"{out}/{entry.replace('/', '-')}"
    test = json.load(open(f"{root}/test/metrics.json"))
    rows = [json.loads(line) for line in open(f"{root}/train/quickstart-finetune-split{split}/metrics.jsonl")]
    val = max(row["val/srcc"] for row in rows if "val/srcc" in row)
    print(f"{entry:18s} best val SRCC {val:.4f}  test SRCC {test['srcc']:.4f}  PLCC {test['plcc']:.4f}  acc {test['acc']:.4f}")
PY
