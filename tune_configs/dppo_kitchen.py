"""DPPO fine-tuning sweep on a robot manipulation task: Franka Kitchen, with ASHA.

    pip install 'rllib-diffusion[robotics]'
    rllib-diffusion pretrain --dataset D4RL/kitchen/complete-v2 --download --horizon 4 \
        --act-steps 4 --out runs/kitchen_bc
    rllib-diffusion tune tune_configs/dppo_kitchen.py --checkpoint runs/kitchen_bc/checkpoint \
        --storage-path runs/tune --name dppo_kitchen --num-samples 8

Without the D4RL data (no network), scripted demonstrations stand in (docs/datasets.md,
"Scripted kitchen demonstrations"); the dataset's tasks reach the sweep's envs through the
checkpoint's policy config::

    python -m rllib_diffusion.collect.kitchen_demos --episodes 50 \
        --dataset-id local/kitchen/scripted-v0
    rllib-diffusion pretrain --dataset local/kitchen/scripted-v0 --horizon 4 --act-steps 4 \
        --gradient-steps 10000 --out runs/kitchen/bc_all3
    rllib-diffusion tune tune_configs/dppo_kitchen.py --checkpoint runs/kitchen/bc_all3/checkpoint \
        --storage-path runs/tune --name dppo_kitchen_scripted --num-samples 8

Env: gymnasium-robotics ``FrankaKitchen-v1`` (9-D joint-velocity control of a Franka arm)
with D4RL's four tasks (microwave, kettle, light switch, slide cabinet), Dict observations
flattened to 81-D, 280 steps per episode; the env of Minari's ``D4RL/kitchen/*-v2``
datasets. The return is the number of tasks completed (normalised score 100 · tasks / 4).
Trainable: ``DPPO`` built from a DiffusionBC checkpoint of that env.
Searched: actor_lr, critic_lr, clip_param, gamma (long sparse-reward episodes may need
0.999) and K_ft (K/4, K/2 or K of the pretrained chain).
Metric: ``sweep/return_mean``, the deterministic evaluation return (10 episodes every 10
iterations), carried forward between evaluations: a kitchen episode (280 steps) is
longer than a small iteration, so the training return is often missing.
Budget: ``--max-iterations`` (default 100) × ``decisions_per_iteration`` (2000) ×
``act_steps`` env steps per trial; ASHA as in ``dppo_hopper.py``.
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.algorithms.dppo.sweep import dppo_asha_sweep
from rllib_diffusion.tuning import SweepArgs, TuneSweep

ENV_ID = "FrankaKitchen-v1"


def make_sweep(args: SweepArgs) -> TuneSweep:
    return dppo_asha_sweep(
        args,
        env_id=ENV_ID,
        search=dict(
            actor_lr=tune.loguniform(3e-6, 1e-4),
            critic_lr=tune.loguniform(3e-4, 3e-3),
            clip_param=tune.choice([0.005, 0.01, 0.02]),
            gamma=tune.choice([0.99, 0.999]),
        ),
    )
