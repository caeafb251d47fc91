"""TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning term and state normalisation."""

from rllib_diffusion.algorithms.td3bc.td3bc import TD3BC, TD3BCConfig

__all__ = ["TD3BC", "TD3BCConfig"]
