"""DPPO fine-tuning sweep on Hopper-v5 with ASHA early stopping.

    rllib-diffusion tune tune_configs/dppo_hopper.py --checkpoint runs/pretrain/checkpoint \
        --storage-path runs/tune --name dppo_hopper --num-samples 8

Trainable: ``DPPO`` built from the DiffusionBC checkpoint (``dppo_config_from_pretrained``).
Searched: actor_lr, critic_lr, clip_param (``DPPOConfig.training``) and K_ft
(``DPPOModelConfig.ft_denoising_steps``: K/4, K/2 or K of the pretrained chain).
Metric: ``sweep/return_mean``, the deterministic evaluation return (10 episodes every
``eval_interval`` = 10 iterations, at most ``--max-iterations``), carried forward between
evaluations, so it is reported on every iteration however long an episode is
(``sweep/return_fresh`` 1 on evaluation iterations). The training return
(``env_runners/episode_return_mean``, only over episodes that ended in the iteration) is
shown for reference. ASHA decides at iterations ``eval_interval · 3^i``, on the
evaluation of that iteration.
Budget: ``--max-iterations`` (default 100) × ``decisions_per_iteration`` (2000) ×
``act_steps`` env steps per trial, plus the evaluations. Each trial needs 1 CPU + 1 per
EnvRunner (default 1 runner).
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.algorithms.dppo.sweep import dppo_asha_sweep
from rllib_diffusion.tuning import SweepArgs, TuneSweep

ENV_ID = "Hopper-v5"


def make_sweep(args: SweepArgs) -> TuneSweep:
    return dppo_asha_sweep(
        args,
        env_id=ENV_ID,
        search=dict(
            actor_lr=tune.loguniform(1e-5, 3e-4),
            critic_lr=tune.loguniform(3e-4, 3e-3),
            clip_param=tune.choice([0.005, 0.01, 0.02, 0.05]),
        ),
    )
