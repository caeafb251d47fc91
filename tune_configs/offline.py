"""Offline RL sweep: Diffusion-QL, Diffusion-QL (flow), IDQL, DAC or FQL, with ASHA.

    rllib-diffusion tune tune_configs/offline.py --dataset mujoco/hopper/medium-v0 \
        --set algo=diffusion_ql --storage-path runs/tune --name dql_hopper --num-samples 8

Pick the algorithm with ``--set algo=NAME`` (``OfflineSettings.algo``; default
diffusion_ql): one algorithm per sweep, since a sweep has one trainable. Searched, per
algorithm (``DiffusionQLConfig`` / ``IDQLConfig`` / ``DACConfig`` / ``FQLConfig`` fields):

* diffusion_ql, diffusion_ql_flow: ``eta`` (Q-term weight), ``actor_lr``;
* idql: ``expectile``, ``actor_lr``;
* dac: ``lcb_rho``, ``bc_threshold``;
* fql: ``alpha`` (distillation weight, FQL's per-task knob).

One iteration = ``steps_per_iteration`` (1000) gradient steps, then a deterministic
evaluation (``eval_episodes``, 5), so the metric ``sweep/return_mean`` (that evaluation
return, ``evaluation/env_runners/episode_return_mean``) is measured on every iteration
and ASHA decides at ``max_t // 10 · 3^i`` on it; critic and
actor losses (``learners/default_policy/losses/critic_loss``, ``…/actor_loss``) are
logged too. As for diffusion_bc.py, one trial runs at a time by default (Ray Data
actors need CPUs outside the trials' placement groups).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.offline_run import load_validated_dataset
from rllib_diffusion.data.offline import prepare_transition_data
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.tuning import (
    EVAL_RETURN,
    SweepArgs,
    TuneSweep,
    learner_metric,
    offline_checkpoint_meta,
    offline_sweep_settings,
    offline_trial_resources,
)
from rllib_diffusion.tuning.offline import offline_q_train
from rllib_diffusion.tuning.schedulers import asha_sweep

MAX_ITERATIONS = 50
NUM_SAMPLES = 8


def search_space(algo: str) -> dict[str, Any]:
    """The ``training()`` arguments searched for ``algo``."""
    lr = {"actor_lr": tune.loguniform(1e-4, 1e-3)}
    spaces = {
        "diffusion_ql": {"eta": tune.loguniform(0.1, 10.0), **lr},
        "diffusion_ql_flow": {"eta": tune.loguniform(0.1, 10.0), **lr},
        "idql": {"expectile": tune.choice([0.7, 0.8, 0.9]), **lr},
        "dac": {
            "lcb_rho": tune.choice([0.0, 0.5, 1.0, 1.5, 2.0]),
            "bc_threshold": tune.choice([0.5, 1.0, 2.0]),
        },
        "fql": {"alpha": tune.choice([3.0, 10.0, 30.0, 100.0, 300.0])},
    }
    if algo not in spaces:
        allowed = offline_q_train().ALGORITHMS
        raise ConfigError(f"--set algo={algo}: allowed {', '.join(sorted(allowed))}.")
    return spaces[algo]


def make_sweep(args: SweepArgs) -> TuneSweep:
    max_t = args.max_iterations or MAX_ITERATIONS
    train = offline_q_train()
    s = offline_sweep_settings(args, train.OfflineSettings, max_t)
    space = search_space(s.algo)
    dataset, env_id = load_validated_dataset(s.dataset, download=s.download, env_id=s.env_id)
    data_path, _ = prepare_transition_data(dataset, seed=s.seed)
    config, _ = train.build_offline_config(
        s, data_path, env_id, dataset.obs_dim, dataset.action_dim, dataset=dataset
    )
    config.training(**space)
    offline_trial_resources(config)
    return asha_sweep(
        max_t=max_t,
        num_samples=args.num_samples or NUM_SAMPLES,
        checkpoint_frequency=max(1, max_t // 10),
        trainable=config.algo_class,
        param_space=config,
        metric_source=EVAL_RETURN,
        max_concurrent_trials=1,
        checkpoint_meta=offline_checkpoint_meta(s, env_id),
        report_metrics=[learner_metric(M.CRITIC_LOSS), learner_metric(M.ACTOR_LOSS)],
        description=f"{s.algo} on {dataset.name} ({env_id}), ASHA over {', '.join(space)}",
    )
