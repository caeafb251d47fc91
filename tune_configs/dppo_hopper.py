"""DPPO fine-tuning sweep on Hopper-v5 with ASHA early stopping.

    rllib-diffusion tune tune_configs/dppo_hopper.py --checkpoint runs/pretrain/checkpoint \
        --storage-path runs/tune --name dppo_hopper --num-samples 8

Trainable: ``DPPO`` built from the DiffusionBC checkpoint (``dppo_config_from_pretrained``).
Searched: actor_lr, critic_lr, clip_param (the last fine-tuned step's ratio clip) and
K_ft (``model_config.ft_denoising_steps``: K/4, K/2 or K of the pretrained chain).
Metric: ``env_runners/episode_return_mean`` (training return of the exploring policy,
every iteration). ``evaluation/env_runners/episode_return_mean`` (deterministic) is
logged every ``eval_interval`` iterations for reference.
Budget: ``--max-iterations`` (default 100) × ``decisions_per_iteration`` (2000) ×
``act_steps`` env steps per trial; ASHA stops the worse trials at iterations
``max_t/10 · 3^i``. Each trial needs 1 CPU + 1 per EnvRunner (default 1 runner).
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.tuning import SweepArgs, TuneSweep, dppo_asha_sweep

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
