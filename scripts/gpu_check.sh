#!/usr/bin/env bash
# The GPU check on a machine without internet: install the pure-Python dependencies from
# .whl/ (filled by scripts/gpu_wheels.sh) when they are missing, then run scripts/gpu_check.py.
#
#   bash scripts/gpu_check.sh                       # writes ${OUT:-outputs/gpu_check}/gpu_check.json
#   bash scripts/gpu_check.sh --quick --device cpu  # extra arguments go to gpu_check.py
#
# Environment: PY (the interpreter; default: the first with torch), WHEELS (default .whl),
# SITE (where the wheels go; default outputs/gpu_check_site, emptied first), GPU_CHECK_INSTALL (auto: only
# when an import fails | always | never).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then  # the first interpreter that has torch
    for candidate in .venv/bin/python python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" 2>/dev/null; then
            PY=$candidate; break
        fi
    done
fi
[ -n "${PY:-}" ] || { echo "gpu_check.sh: no Python with torch found (set PY=...)" >&2; exit 2; }
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-$PWD/outputs/gpu_check_site}  # outputs/ is git-ignored; absolute for PYTHONPATH
INSTALL=${GPU_CHECK_INSTALL:-auto}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
IMPORTS="import open_clip, hydra, omegaconf, antlr4, ftfy, wcwidth, regex, submitit, hydra_plugins.hydra_submitit_launcher, pytest"
started=$SECONDS
# What the GPU machine is expected to have already (not among the wheels): say what is missing.
missing=$("$PY" -c "import importlib.util as u; print(' '.join(n for n in ('numpy', 'torchvision', 'transformers',
    'timm', 'safetensors', 'pandas', 'scipy', 'PIL', 'tqdm', 'matplotlib', 'cv2') if u.find_spec(n) is None))")
[ -z "$missing" ] || echo "gpu_check.sh: warning: $PY lacks $missing (not among the wheels of $WHEELS/; the parts that import them will fail)" >&2
if [ "$INSTALL" = always ] || { [ "$INSTALL" = auto ] && ! "$PY" -c "$IMPORTS" 2>/dev/null; }; then
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check.sh: dependencies missing and no $WHEELS/ (run scripts/gpu_wheels.sh)" >&2; exit 2; }
    echo "gpu_check.sh: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS/ into $SITE" >&2
    rm -rf "$SITE"
    if ! "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl; then
        echo "gpu_check.sh: pip could not install $WHEELS/; unpacking the wheels instead" >&2
        for wheel in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE"; done  # a wheel is a zip of its files
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "$IMPORTS" || { echo "gpu_check.sh: still missing after installing $WHEELS/ (above)" >&2; exit 2; }
    echo "gpu_check.sh: installed in $((SECONDS - started)) s" >&2
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import sys, torch, open_clip; print('gpu_check.sh: python', sys.version.split()[0], 'torch', torch.__version__,
      'cuda', torch.cuda.is_available(), 'open_clip', open_clip.__version__, 'from', open_clip.__file__)"
exec "$PY" scripts/gpu_check.py --out "${OUT:-outputs/gpu_check}" "$@"
