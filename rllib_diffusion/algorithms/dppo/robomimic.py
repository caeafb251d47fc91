"""DPPO's robomimic settings scaled to a small CPU machine, for the robomimic tasks
(``robomimic/{Lift,Can,Square,Transport}-v0``): the values that
``benchmarks/robot_finetune.py`` ran and ``tune_configs/dppo_robomimic.py`` starts from.

DPPO's configs (``cfg/robomimic/finetune/{lift,can}/ft_ppo_diffusion_mlp.yaml``): γ 0.999,
clip 0.001 → 0.01 over the fine-tuned steps, 10 epochs, minibatch 7,500 pairs, critic
warm-up 2 iterations, actor lr 1e-5, 50 envs × 300 decisions (15,000) per iteration.
Here: 10 envs × 100 decisions (1,000, i.e. 4,000 env steps with Ta = 4) per iteration,
so the minibatch is 2,500 (env step, denoising step) pairs (four per epoch) and the actor
lr is the gym configs' 1e-4: 15× fewer samples per iteration and budgets of a few hundred
thousand env steps instead of millions.

The training envs get DPPO's robomimic reward (:data:`ROBOMIMIC_ENV_KWARGS`): the
reference's ``RobomimicLowdimWrapper`` never ends an episode (``done`` is always False),
so an episode runs its 300 (Lift/Can) env steps and robosuite's sparse reward pays 1 on
every step the task is solved, summed over the executed chunk: a policy that lifts
sooner and holds the object earns more. Our envs end an episode at the first success by
default (return = success), which leaves PPO a 0/1 outcome per episode and nothing for
speed or holding; the start and final evaluations keep that default (success rate).
"""

from __future__ import annotations

from typing import Any

#: DPPO knobs (``DPPOConfig.training()`` names).
ROBOMIMIC_KNOBS: dict[str, Any] = {
    "gamma": 0.999,
    "clip_param": 0.01,
    "clip_param_base": 0.001,
    "num_epochs": 10,
    "pair_minibatch_size": 2500,
    "critic_warmup_iterations": 2,
    "actor_lr": 1e-4,
}

#: Run settings (``FinetuneSettings`` fields). ``num_env_runners`` 0 samples in the
#: driver: DPPO samples and learns in turn, so a remote EnvRunner adds no parallelism on
#: a 2-core machine (and Ray starts its workers at niceness +15).
ROBOMIMIC_RUN: dict[str, Any] = {
    "num_env_runners": 0,
    "num_envs_per_env_runner": 10,
    "decisions_per_iteration": 1000,
}

#: Training-env kwargs (``FinetuneSettings.env_kwargs``): DPPO's robomimic reward, 1 per
#: solved env step until the time limit (no termination at the first success).
ROBOMIMIC_ENV_KWARGS: dict[str, Any] = {"terminate_on_success": False}
