#!/usr/bin/env bash
# Install lossheads (editable, with the test tools). Where no torch is installed, take the CPU
# build first: a bare `torch` requirement would pull a multi-GB CUDA build. Bring your own CUDA
# torch before running this to train on a GPU; it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
