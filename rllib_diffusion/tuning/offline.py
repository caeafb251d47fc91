"""Helpers shared by the offline sweeps (DiffusionBC pretraining and offline Q-learning):
their settings, the CPUs a trial reserves beside Ray Data, the checkpoint meta of the
offline Q family. Their metric is the evaluation return, measured every iteration."""

from __future__ import annotations

import dataclasses
import importlib
import types
from collections.abc import Callable
from typing import Any

from rllib_diffusion.tuning.sweep import SweepArgs


def offline_sweep_settings(args: SweepArgs, settings_class: type, max_t: int) -> Any:
    """Settings of a DiffusionBC/offline sweep trial: ``--dataset`` required, 1,000
    gradient steps per iteration, a 5-episode evaluation every iteration (the sweep
    metric is fresh on every result), ``gradient_steps`` covering ``max_t`` iterations."""
    dataset_id = args.require("dataset", "Minari id, dataset directory, .npz or .hdf5")
    s = args.settings(
        settings_class,
        dataset=dataset_id,
        env_id=args.env_id,
        download=args.download,
        steps_per_iteration=1000,
        eval_interval=1,
        eval_episodes=5,
        seed=args.seed,
    )
    s.gradient_steps = max_t * s.steps_per_iteration
    return s


def offline_trial_resources(config: Any, cpus: float = 0.5) -> Any:
    """Reserve ``cpus`` (< 1) per offline trial so Ray Data fits beside it.

    Ray Data's read tasks (1 CPU each) and pre-learner actor (0.25 CPU) run outside the
    trial's placement group; a trial reserving a whole CPU on a 2-CPU machine leaves
    them waiting forever. The trial process still uses a full core when it computes.
    """
    return config.resources(num_cpus_for_main_process=cpus).learners(num_cpus_per_learner=cpus)


def offline_q_train() -> types.ModuleType:
    """The offline Q family's run module (``algorithms/offline_q/train.py``; its former
    home ``algorithms/diffusion_ql/train.py`` where that package is absent)."""
    try:
        return importlib.import_module("rllib_diffusion.algorithms.offline_q.train")
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("rllib_diffusion.algorithms.offline_q"):
            raise
        return importlib.import_module("rllib_diffusion.algorithms.diffusion_ql.train")


def model_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """The model config of a resolved trial config (``AlgorithmConfig.to_dict()`` form)."""
    return config.get("_model_config") or config.get("model_config") or {}


def offline_checkpoint_meta(settings: Any, env_id: str) -> Callable[[dict[str, Any]], dict]:
    """Meta of offline-RL trial checkpoints (Diffusion-QL, IDQL, DAC, FQL), as
    ``rllib-diffusion offline`` writes it."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        return {
            "algorithm": settings.algo,
            "env_id": env_id,
            "env_config": offline_q_train().offline_env_config(env_id),
            "model_config": model_config_of(config),
            "hyperparameters": {k: config.get(k) for k in ("eta", "grad_clip", "tau")},
            "settings": dataclasses.asdict(settings),
        }

    return meta
