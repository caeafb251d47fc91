"""Diffusion BC pretraining sweep (``DiffusionBC`` on RLlib's offline API) with ASHA.

    rllib-diffusion tune tune_configs/diffusion_bc.py --dataset mujoco/hopper/medium-v0 \
        --storage-path runs/tune --name bc_hopper --num-samples 8

One iteration = ``steps_per_iteration`` (1000) gradient steps followed by a deterministic
evaluation of ``eval_episodes`` (5) episodes, so the metric ``sweep/return_mean`` (that
evaluation return, ``evaluation/env_runners/episode_return_mean``) is measured on every
iteration and ASHA decides at ``max_t // 10 · 3^i`` on it (the denoising loss
``learners/default_policy/losses/bc_loss`` is logged too, but is a poor proxy for
return). Searched: constant AdamW ``lr`` (the sweep has no cosine decay; rerun the best
with ``pretrain --lr``), ``weight_decay``, K (``DiffusionPolicyConfig.denoising_steps``)
and the MLP sizes (``DiffusionPolicyConfig.hidden_dims``). The action chunk (horizon, act_steps,
obs_history) is fixed per sweep (``--set horizon=8``): it changes the prepared data.

Ray Data's read tasks and pre-learner actor run outside each trial's placement group:
a trial reserves half a CPU (``offline_trial_resources``) and one trial runs at a time
by default; raise ``--max-concurrent-trials`` to about CPUs / 2 on bigger machines. The prepared parquet lives in the local cache
(``$RLLIB_DIFFUSION_CACHE``): on a multi-node cluster point it at shared storage.
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC
from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, build_pretrain_config
from rllib_diffusion.algorithms.bc.sweep import diffusion_bc_checkpoint_meta
from rllib_diffusion.algorithms.offline_run import load_validated_dataset
from rllib_diffusion.data.offline import prepare_offline_data
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig
from rllib_diffusion.tuning import (
    EVAL_RETURN,
    SweepArgs,
    TuneSweep,
    learner_metric,
    offline_sweep_settings,
    offline_trial_resources,
    search_model_config,
)
from rllib_diffusion.tuning.schedulers import asha_sweep

MAX_ITERATIONS = 50
NUM_SAMPLES = 8


def make_sweep(args: SweepArgs) -> TuneSweep:
    max_t = args.max_iterations or MAX_ITERATIONS
    # The lr is searched as a constant; gradient_steps only sizes the (unused) schedule.
    s = offline_sweep_settings(args, PretrainSettings, max_t)
    dataset, env_id = load_validated_dataset(s.dataset, download=s.download, env_id=s.env_id)
    data = prepare_offline_data(dataset, horizon=s.horizon, obs_history=s.obs_history, seed=s.seed)
    config, policy = build_pretrain_config(s, data, env_id)
    config.training(lr=tune.loguniform(1e-4, 3e-3), weight_decay=tune.loguniform(1e-7, 1e-4))
    offline_trial_resources(config)
    config.rl_module(model_config=policy.to_dict())
    search_model_config(
        config,
        DiffusionPolicyConfig,
        denoising_steps=tune.choice([10, 20]),
        hidden_dims=tune.choice([[256, 256, 256], [512, 512, 512]]),
    )
    return asha_sweep(
        max_t=max_t,
        num_samples=args.num_samples or NUM_SAMPLES,
        checkpoint_frequency=max(1, max_t // 10),
        trainable=DiffusionBC,
        param_space=config,
        metric_source=EVAL_RETURN,
        max_concurrent_trials=1,
        checkpoint_meta=diffusion_bc_checkpoint_meta(s),
        report_metrics=[learner_metric(M.BC_LOSS)],
        description=f"DiffusionBC on {dataset.name} ({env_id}), ASHA over lr, wd, K, MLP",
    )
