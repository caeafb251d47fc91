"""DPPO fine-tuning on Hopper-v5 with Population Based Training of actor_lr and clip.

    rllib-diffusion tune tune_configs/dppo_hopper_pbt.py --checkpoint runs/pretrain/checkpoint \
        --storage-path runs/tune --name dppo_hopper_pbt --num-samples 4

All trials run the whole budget. Every ``perturbation_interval`` = ``max_t // 10``
iterations each trial is evaluated (10 episodes) and checkpointed; the bottom 25% of
trials by ``sweep/return_mean`` (that evaluation return) copy the checkpoint of a
top-25% trial and continue with perturbed ``actor_lr`` (×0.8 / ×1.2 or resampled) and
``clip_param`` (a neighbour in the list or resampled). Keys are ``DPPOConfig.to_dict()``
names. A mutated actor_lr takes effect after the restored trial's first update (the
learner's lr schedule is rebuilt from the new config).
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.algorithms.dppo.sweep import dppo_pbt_sweep
from rllib_diffusion.tuning import SweepArgs, TuneSweep

ENV_ID = "Hopper-v5"
CLIPS = [0.005, 0.01, 0.02, 0.05]


def make_sweep(args: SweepArgs) -> TuneSweep:
    return dppo_pbt_sweep(
        args,
        env_id=ENV_ID,
        search=dict(actor_lr=tune.loguniform(1e-5, 3e-4), clip_param=tune.choice(CLIPS)),
        mutations={"actor_lr": tune.loguniform(1e-5, 3e-4), "clip_param": CLIPS},
    )
