"""FQL: flow Q-learning with a one-step policy distilled from a BC flow."""

from rllib_diffusion.algorithms.fql.fql import FQL, FQLConfig

__all__ = ["FQL", "FQLConfig"]
