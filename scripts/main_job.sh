#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: the Hopper-v5 "medium"
# dataset shipped in data/ -> diffusion BC pretraining on RLlib -> evaluation in the env.
# Extra arguments go to experiments/pipeline.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec .venv/bin/python experiments/pipeline.py "$@"
