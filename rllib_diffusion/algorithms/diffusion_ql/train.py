"""Former home of the offline Q-learning run driver; it now lives in
:mod:`rllib_diffusion.algorithms.offline_q.train` (it serves every algorithm of the
registry's ``offline_q`` kind, not Diffusion-QL alone). Re-exported for existing
imports (``tune_configs/offline.py``, ``benchmarks/``)."""

from rllib_diffusion.algorithms.offline_q.train import (
    ALGORITHMS,
    OfflineSettings,
    build_offline_config,
    normalizes_rewards,
    offline_env_config,
    reward_normalization_factor,
    train_offline,
)

__all__ = [
    "ALGORITHMS",
    "OfflineSettings",
    "build_offline_config",
    "normalizes_rewards",
    "offline_env_config",
    "reward_normalization_factor",
    "train_offline",
]
