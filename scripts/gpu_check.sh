#!/usr/bin/env bash
# The GPU check on a machine without internet: install the pure-Python dependencies from
# .whl/ (filled by scripts/gpu_wheels.sh) when they are missing, then run scripts/gpu_check.py.
#
#   bash scripts/gpu_check.sh                       # writes ${OUT:-outputs/gpu_check}/gpu_check.json
#   bash scripts/gpu_check.sh --quick --device cpu  # extra arguments go to gpu_check.py
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
SITE=${SITE:-/tmp/site}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if ! "$PY" -c "import open_clip, hydra, omegaconf, ftfy, regex, submitit, pytest" 2>/dev/null; then
    ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check.sh: dependencies missing and no .whl/ (run scripts/gpu_wheels.sh)" >&2; exit 2; }
    if ! "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl; then
        echo "gpu_check.sh: pip could not install .whl/; unpacking the wheels instead" >&2
        for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE"; done  # a wheel is a zip of its files
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" scripts/gpu_check.py --out "${OUT:-outputs/gpu_check}" "$@"
