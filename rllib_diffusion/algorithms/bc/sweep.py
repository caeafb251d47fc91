"""DiffusionBC pretraining sweeps (``tune_configs/diffusion_bc.py``): the checkpoint meta
of a trial. Metric: the evaluation return, measured every iteration
(:func:`rllib_diffusion.tuning.offline.offline_sweep_settings`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def diffusion_bc_checkpoint_meta(settings: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Meta of DiffusionBC trial checkpoints, as ``pretrain`` writes it."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        from rllib_diffusion.algorithms.bc.pretrain import ALGORITHM_NAME
        from rllib_diffusion.tuning.offline import model_config_of

        policy = model_config_of(config)
        return {
            "algorithm": ALGORITHM_NAME,
            "env_id": policy.get("env_id"),
            "policy_config": policy,
            "settings": dataclasses.asdict(settings),
        }

    return meta
