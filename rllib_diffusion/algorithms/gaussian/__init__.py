"""DPPO's Gaussian-policy baseline: RLlib BC pretraining, then RLlib PPO fine-tuning.

Both stages use RLlib's default Gaussian MLP modules on the same data, normalisation
and env as the diffusion policies (Ta = act_steps = 1, flat actions), so results compare
fine-tuning from BC at matched env-step budgets.
"""

from rllib_diffusion.algorithms.gaussian.gaussian_bc import (
    GaussianBCSettings,
    build_gaussian_bc_config,
    gaussian_env_config,
    pretrain_gaussian,
)
from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
    GaussianPPOSettings,
    bc_to_ppo_state,
    build_gaussian_ppo_config,
    finetune_gaussian_ppo,
    load_bc_policy,
    read_gaussian_bc_meta,
)

__all__ = [
    "GaussianBCSettings",
    "GaussianPPOSettings",
    "bc_to_ppo_state",
    "build_gaussian_bc_config",
    "build_gaussian_ppo_config",
    "finetune_gaussian_ppo",
    "gaussian_env_config",
    "load_bc_policy",
    "pretrain_gaussian",
    "read_gaussian_bc_meta",
]
