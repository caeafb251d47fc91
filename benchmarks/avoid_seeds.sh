#!/usr/bin/env bash
# Issue 15: the "avoid" fine-tuning comparison on AvoidM5-v0 with several seeds.
#
# For each seed: diffusion BC and Gaussian BC (40k steps) on the M1-like data, then DPPO and
# Gaussian PPO from them at the DPPO reference's avoid budget and settings (docs/avoid.md,
# "Measured: fine-tuning from the BC policies"), then benchmarks/avoid_modes.py over every
# seed's four policies (100 episodes each; return, success, routes and where the paths run:
# edge_step_fraction, row_crossing_x). A step whose checkpoint exists is skipped, so the
# same command continues after an interruption (a run killed mid-way is started again).
#
#   SEEDS="0 1 2" OUT=runs/avoid_seeds bash benchmarks/avoid_seeds.sh
#
# Result: benchmarks/results/avoid_modes_m5_seeds.json (+ .png); docs/avoid.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEEDS="${SEEDS:-0 1 2}"
OUT="${OUT:-runs/avoid_seeds}"
DATA="${DATA:-rllib-diffusion/avoid/m1-v0}"
RD="${RD:-rllib-diffusion}"
PY="${PY:-python}"

if ! "$PY" -c "import minari, sys; sys.exit('$DATA' not in minari.list_local_datasets())"; then
  "$PY" -m rllib_diffusion.collect.avoid_demos --env-id rllib_diffusion/AvoidM5-v0 \
    --row3-gaps 0 1 --episodes 200 --dataset-id "$DATA"
fi

step() {  # step NAME COMMAND...: run COMMAND unless NAME's checkpoint exists
  local dir="$OUT/$1"; shift
  if [ -e "$dir/checkpoint" ]; then echo "[avoid_seeds] $dir done"; return; fi
  echo "[avoid_seeds] $dir: start $(date -u +%T)"
  local t0=$SECONDS
  "$@" --out "$dir" --overwrite > "$dir.log" 2>&1
  echo "[avoid_seeds] $dir: $((SECONDS - t0)) s"
}

mkdir -p "$OUT"
CKPTS=()
for s in $SEEDS; do
  step "bc_s$s" "$RD" pretrain --dataset "$DATA" --gradient-steps 40000 \
    --steps-per-iteration 2000 --hidden-dims 256 256 256 --eval-episodes 20 --seed "$s"
  step "gaussian_bc_s$s" "$RD" pretrain-gaussian --dataset "$DATA" --gradient-steps 40000 \
    --steps-per-iteration 2000 --eval-episodes 20 --seed "$s"
  step "dppo_s$s" "$RD" finetune --algo dppo --checkpoint "$OUT/bc_s$s/checkpoint" \
    --env-steps 255000 --num-env-runners 0 --num-envs-per-env-runner 50 \
    --decisions-per-iteration 1250 --pair-minibatch-size 625 --num-epochs 10 \
    --actor-lr 1e-5 --critic-lr 1e-3 --gamma 0.99 --gamma-denoising 0.95 --clip 0.1 \
    --ft-denoising-steps 10 --min-sampling-std 0.1 --min-logprob-std 0.1 --target-kl 1 \
    --critic-warmup-iterations 1 --eval-interval 10 --eval-episodes 20 --seed "$s"
  step "gaussian_ppo_s$s" "$RD" finetune-gaussian \
    --checkpoint "$OUT/gaussian_bc_s$s/checkpoint" --env-steps 255000 --num-env-runners 0 \
    --num-envs-per-env-runner 50 --train-batch-size 5000 --minibatch-size 625 \
    --num-epochs 10 --lr 1e-4 --gamma 0.99 --lambda 0.95 --clip 0.1 --eval-interval 10 \
    --eval-episodes 20 --seed "$s"
  CKPTS+=(--checkpoint "diffusion BC s$s=$OUT/bc_s$s/checkpoint"
          --checkpoint "DPPO s$s=$OUT/dppo_s$s/checkpoint"
          --checkpoint "Gaussian BC s$s=$OUT/gaussian_bc_s$s/checkpoint"
          --checkpoint "Gaussian PPO s$s=$OUT/gaussian_ppo_s$s/checkpoint")
done
"$PY" benchmarks/avoid_modes.py --demos "${CKPTS[@]}" --episodes 100 --name m5_seeds \
  --note "seeds $SEEDS; benchmarks/avoid_seeds.sh"
