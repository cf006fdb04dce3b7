#!/usr/bin/env bash
# The GPU check of issue #22, for a machine with a CUDA GPU:
#   scripts/gpu_check.sh              install CUDA torch 2.13.0 + the project in .venv-gpu, run
#                                     the tests marked gpu, bench layer (training and decode
#                                     shapes), bench generate, dry runs of jobs/scale/*.yaml LM
#                                     recipes; one table of MFU and ratios at the end
#   scripts/gpu_check.sh --cpu-smoke  the same steps in the existing .venv on CPU, small grids:
#                                     checks the script, not the GPU
# Sized for < 8 min on one H100/H200: the wheel install ~2-3 min (a ~1 GB CUDA wheel; set
# PIP_FIND_LINKS to a local copy to skip most of it), the gpu tests ~20 s, bench layer's full
# grid ~1 min (16 training and 8 decode shapes, ms each, 7-9 repeats), bench generate --quick
# seconds (it runs on CPU: the full sweep is minutes and belongs to `phmscale bench generate`),
# each LM dry run 8 steps capped at 150 s (scripts/gpu_check.py). Env: TORCH_CUDA (cu128),
# RECIPES (glob), PHMSCALE_PEAK_FLOPS (a GPU not in train/meters.py's table).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then smoke=1; fi
recipes="${RECIPES:-jobs/scale/*.yaml}"
started=$SECONDS

if (( smoke )); then
    # shellcheck disable=SC1091
    . .venv/bin/activate
    device=cpu
    quick=(--quick)
else
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu_check: no CUDA GPU here (nvidia-smi finds none); --cpu-smoke checks the script" >&2
        exit 2
    fi
    nvidia-smi -L
    python3 -m venv .venv-gpu
    # shellcheck disable=SC1091
    . .venv-gpu/bin/activate
    pip install -q "torch==2.13.0" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA:-cu128}"
    pip install -q -e ".[dev]"
    python -c "import torch; assert torch.cuda.is_available(), 'CUDA torch cannot see the GPU'"
    device=cuda
    quick=()
fi

echo "== tests marked gpu ($device)"
python -m pytest -q -m gpu tests/gpu -p no:cacheprovider
echo "== bench layer, bench generate, LM dry runs"
python scripts/gpu_check.py --device "$device" "${quick[@]}" --recipes "$recipes"
echo "gpu_check: done in $((SECONDS - started)) s"
