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

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo import DPPO
from rllib_diffusion.tuning import (
    DPPO_ENV_STEPS,
    EVAL_RETURN,
    TRAIN_RETURN,
    SweepArgs,
    TuneSweep,
    asha_sweep,
    dppo_checkpoint_meta,
    dppo_sweep_config,
    ft_denoising_choices,
    learner_metric,
)

ENV_ID = "Hopper-v5"
METRIC = TRAIN_RETURN
MAX_ITERATIONS = 100
NUM_SAMPLES = 8


def make_sweep(args: SweepArgs) -> TuneSweep:
    config, settings = dppo_sweep_config(
        args, env_id=ENV_ID, eval_interval=10, eval_episodes=10, checkpoint_interval=10
    )
    config.training(
        actor_lr=tune.loguniform(1e-5, 3e-4),
        critic_lr=tune.loguniform(3e-4, 3e-3),
        clip_param=tune.choice([0.005, 0.01, 0.02, 0.05]),
    )
    config.rl_module(
        model_config={
            **config.model_config,
            "ft_denoising_steps": tune.choice(ft_denoising_choices(config)),
        }
    )
    max_t = args.max_iterations or MAX_ITERATIONS
    return asha_sweep(
        max_t=max_t,
        num_samples=args.num_samples or NUM_SAMPLES,
        checkpoint_frequency=settings.checkpoint_interval,
        trainable=DPPO,
        param_space=config,
        metric=METRIC,
        checkpoint_meta=dppo_checkpoint_meta(settings),
        report_metrics=[EVAL_RETURN, DPPO_ENV_STEPS, learner_metric(M.APPROX_KL)],
        description=f"DPPO on {ENV_ID}, ASHA over actor/critic lr, clip, K_ft",
    )
