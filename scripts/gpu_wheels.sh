#!/usr/bin/env bash
# Download the project's pure-Python dependencies that a bare CUDA image lacks as wheels
# into .whl/ (git-ignored), for a GPU machine with no internet:
#
#   bash scripts/gpu_wheels.sh                 # here, with internet (PyPI)
#   pip install --no-index --no-deps --target "$PWD/outputs/site" .whl/*.whl   # there, in the repository
#   export PYTHONPATH="$PWD/outputs/site:$PWD"
#
# The target is CPython 3.12 on x86-64 Linux (override with PYTHON_VERSION). Versions are
# the pins of requirements.txt; the few packages not pinned there are pinned below.
# torch, torchvision, numpy, pandas, transformers, timm, ... are expected on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
DEST=${DEST:-.whl}
mkdir -p "$DEST"

pin() {  # the version pinned in requirements.txt
    local version
    version=$(sed -n "s/^$1==\([^ #]*\).*/\1/p" requirements.txt)
    [ -n "$version" ] || { echo "gpu_wheels.sh: $1 is not pinned in requirements.txt" >&2; exit 1; }
    echo "$1==$version"
}

packages=(
    "$(pin open_clip_torch)" "$(pin hydra-core)" "$(pin omegaconf)" "$(pin ftfy)" "$(pin regex)"
    "$(pin submitit)" "$(pin hydra-submitit-launcher)"
    wcwidth==0.9.4       # ftfy's dependency
    cloudpickle==3.1.3   # submitit's dependency
    # the CUDA tests (scripts/gpu_check.py runs pytest -m cuda); pytest is pinned in requirements-dev.txt
    "pytest==$(sed -n 's/^pytest==\([^ #]*\).*/\1/p' requirements-dev.txt)"
    iniconfig==2.3.1 pluggy==1.7.0 pygments==2.21.0
)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version "$PYTHON_VERSION" --implementation cp --platform manylinux2014_x86_64 "${packages[@]}"

# omegaconf's parser runtime is published as an sdist only: build its (pure-Python) wheel.
if ! ls "$DEST"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" antlr4-python3-runtime==4.9.3
fi
ls -1 "$DEST"
du -sh "$DEST"
