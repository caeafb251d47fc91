#!/usr/bin/env bash
# Create .venv and install rllib-diffusion with its test/viz extras.
# CPU machines (no nvidia-smi): torch is pinned to the 2.13.0 CPU wheel via
# constraints-cpu.txt. GPU machines: the CUDA build of torch is resolved normally.
# Re-running is cheap: pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
CONSTRAINTS=()
if ! command -v nvidia-smi >/dev/null 2>&1 || [ "${RLLIB_DIFFUSION_CPU:-}" = 1 ]; then
  CONSTRAINTS=(-c constraints-cpu.txt)
fi
echo "[setup] installing (torch: ${CONSTRAINTS[*]:-CUDA build})"
.venv/bin/python -m pip install --disable-pip-version-check -q "${CONSTRAINTS[@]}" -e ".[test,viz,robot]"
# robosuite 1.5.2 (robomimic's tasks) without its dependencies: its dependency mink==0.0.5
# requires numpy<2, which would downgrade numpy under torch/ray. What robosuite really
# needs for headless low-dim use is the [robot] extra installed above.
.venv/bin/python -m pip install --disable-pip-version-check -q --no-deps "robosuite==1.5.2"
.venv/bin/python -c "import torch, ray, gymnasium, mujoco, minari, numpy; from importlib.metadata import version; print(f'[setup] torch {torch.__version__}, ray {ray.__version__}, gymnasium {gymnasium.__version__}, mujoco {mujoco.__version__}, minari {minari.__version__}, numpy {numpy.__version__}, robosuite {version(\"robosuite\")}')"
