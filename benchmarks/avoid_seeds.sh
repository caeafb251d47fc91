#!/usr/bin/env bash
# Issue 15: the "avoid" fine-tuning comparison on AvoidM5-v0 with several seeds.
#
# For each seed: diffusion BC and Gaussian BC (40k steps) on the M1-like data, then DPPO and
# Gaussian PPO from them at the DPPO reference's avoid budget and settings (docs/avoid.md,
# "Measured: fine-tuning from the BC policies"), then benchmarks/avoid_modes.py over every
# seed's four policies (100 episodes each; return, success, routes and where the paths run:
# edge_step_fraction, row_crossing_x). A step whose checkpoint exists is skipped, so the
# same command continues after an interruption (a run killed mid-way is started again).
# Copies may run side by side (one per core, e.g. SEEDS="0 1" and SEEDS=2): a step is
# claimed by one copy (OUT/<step>.claim), the others wait for its checkpoint; give the
# helping copies COMPARE=0 and run the comparison once over every seed:
#
#   SEEDS="0 1 2" OUT=runs/avoid_seeds bash benchmarks/avoid_seeds.sh
#   SEEDS=2 COMPARE=0 bash benchmarks/avoid_seeds.sh &   # the same, on two cores
#   SEEDS="0 1" COMPARE=0 bash benchmarks/avoid_seeds.sh; SEEDS="0 1 2" bash benchmarks/avoid_seeds.sh
#
# The M2-/M3-like data (docs/avoid.md): DATA=rllib-diffusion/avoid/m2-v0 GAPS="0 2" NAME=m2_seeds
# (m3: GAPS="0 3"), with their own OUT; the dataset is made when missing.
#
# DQL=1 adds the Q-learning baseline per seed (online DQL from the same diffusion BC, the
# settings of docs/avoid.md's seed-0 run: reference defaults, 5,000-decision critic
# warm-up), e.g. SEEDS="0 1 2" DQL=1 NAME=m5_dql_seeds bash benchmarks/avoid_seeds.sh.
#
# Result: benchmarks/results/avoid_modes_<NAME>.json (+ .png; NAME m5_seeds by default);
# docs/avoid.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEEDS="${SEEDS:-0 1 2}"
OUT="${OUT:-runs/avoid_seeds}"
DATA="${DATA:-rllib-diffusion/avoid/m1-v0}"
RD="${RD:-rllib-diffusion}"
PY="${PY:-python}"
COMPARE="${COMPARE:-1}"
GAPS="${GAPS:-0 1}"
NAME="${NAME:-m5_seeds}"
DQL="${DQL:-0}"

if ! "$PY" -c "import minari, sys; sys.exit('$DATA' not in minari.list_local_datasets())"; then
  "$PY" -m rllib_diffusion.collect.avoid_demos --env-id rllib_diffusion/AvoidM5-v0 \
    --row3-gaps $GAPS --episodes 200 --dataset-id "$DATA"
fi

claim() {  # claim DIR: 0 if this copy runs DIR's step (free, or its claimer is gone)
  if mkdir "$1.claim" 2>/dev/null; then echo $$ > "$1.claim/pid"; return 0; fi
  local pid; pid="$(cat "$1.claim/pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then return 1; fi
  echo $$ > "$1.claim/pid"; return 0
}

step() {  # step NAME COMMAND...: run COMMAND unless NAME's checkpoint exists
  local dir="$OUT/$1"; shift
  if [ -e "$dir/checkpoint" ]; then echo "[avoid_seeds] $dir done"; return; fi
  if ! claim "$dir"; then
    echo "[avoid_seeds] $dir: another copy runs it; waiting for its checkpoint"
    while [ ! -e "$dir/checkpoint" ]; do
      sleep 20
      if claim "$dir"; then break; fi
    done
    if [ -e "$dir/checkpoint" ]; then return; fi
  fi
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
  [ "$DQL" = 1 ] || continue
  step "dql_s$s" "$RD" finetune --algo dql --checkpoint "$OUT/bc_s$s/checkpoint" \
    --env-steps 255000 --num-env-runners 0 --num-envs-per-env-runner 50 \
    --decisions-per-iteration 1250 --critic-warmup-decisions 5000 --eval-interval 10 \
    --eval-episodes 20 --seed "$s"
  CKPTS+=(--checkpoint "DQL s$s=$OUT/dql_s$s/checkpoint")
done
[ "$COMPARE" = 1 ] || exit 0
"$PY" benchmarks/avoid_modes.py --demos "${CKPTS[@]}" --episodes 100 --name "$NAME" \
  --note "seeds $SEEDS; benchmarks/avoid_seeds.sh"
