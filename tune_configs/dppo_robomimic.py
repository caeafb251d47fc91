"""DPPO fine-tuning sweep on a robomimic task (Lift, Can, Square, Transport), with ASHA.

    python -m rllib_diffusion.collect.robot_demos --task lift --episodes 5 \
        --out runs/robot/lift_scripted_5.hdf5
    rllib-diffusion pretrain --dataset runs/robot/lift_scripted_5.hdf5 --out runs/robot/bc \
        --horizon 4 --act-steps 4 --gradient-steps 100 --steps-per-iteration 100
    rllib-diffusion tune tune_configs/dppo_robomimic.py --checkpoint runs/robot/bc/checkpoint \
        --storage-path runs/tune --name dppo_lift --num-samples 8

Env: the checkpoint's robomimic task (``robomimic/<Task>-v0`` on robosuite,
``pip install 'rllib-diffusion[robot]'``, see docs/robot_tasks.md); a checkpoint of
another env is refused. Trials train with DPPO's robomimic reward (1 per solved env step,
no termination at the first success: ``ROBOMIMIC_ENV_KWARGS``).
Trainable: ``DPPO`` built from the DiffusionBC checkpoint, with DPPO's robomimic settings
scaled to a small machine (``rllib_diffusion.algorithms.dppo.robomimic``: γ 0.999, clip
0.001 → clip_param, 10 epochs, 2,500-pair minibatches, critic warm-up 2 iterations,
1,000 decisions per iteration sampled in the trial process by 10 envs).
Searched: actor_lr, critic_lr, clip_param (the last fine-tuned step's clip) and K_ft
(K/4, K/2 or K of the pretrained chain).
Metric: ``sweep/return_mean``, the deterministic return over 20 episodes every 10
iterations (solved env steps per episode, in the training env), carried forward between
evaluations.
Budget: ``--max-iterations`` (default 60) × 1,000 decisions × Ta env steps per trial
(240k env steps with Ta = 4), plus the evaluations; one CPU per trial. ASHA decides at
iterations 10, 30 (``eval_interval · 3^i``).
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.algorithms.dppo.robomimic import (
    ROBOMIMIC_ENV_KWARGS,
    ROBOMIMIC_KNOBS,
    ROBOMIMIC_RUN,
)
from rllib_diffusion.algorithms.dppo.sweep import dppo_asha_sweep
from rllib_diffusion.tuning import SweepArgs, TuneSweep

SEARCH = dict(
    actor_lr=tune.loguniform(1e-5, 3e-4),
    critic_lr=tune.loguniform(3e-4, 3e-3),
    clip_param=tune.choice([0.005, 0.01, 0.02]),
)


def make_sweep(args: SweepArgs) -> TuneSweep:
    fixed = {k: v for k, v in ROBOMIMIC_KNOBS.items() if k not in SEARCH}
    return dppo_asha_sweep(
        args,
        env_id=robomimic_env_id(args),
        search=SEARCH,
        max_iterations=60,
        eval_interval=10,
        eval_episodes=20,
        checkpoint_interval=10,
        env_kwargs=ROBOMIMIC_ENV_KWARGS,
        **ROBOMIMIC_RUN,
        **fixed,
    )


def robomimic_env_id(args: SweepArgs) -> str:
    """The checkpoint's env id, which must be a robomimic task."""
    from rllib_diffusion.checkpoints import read_checkpoint_meta
    from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS
    from rllib_diffusion.modules.model_config import ConfigError

    checkpoint = args.require("checkpoint", "a DiffusionBC checkpoint from `pretrain`")
    env_id = read_checkpoint_meta(checkpoint).env_id
    if env_id not in ROBOT_TASKS:
        raise ConfigError(
            f"this sweep is for the robomimic tasks ({', '.join(ROBOT_TASKS)}); checkpoint "
            f"'{checkpoint}' is a {env_id} policy: use tune_configs/dppo_hopper.py or copy it."
        )
    return env_id
