"""IDQL: implicit Q-learning critics with a diffusion behaviour policy."""

from rllib_diffusion.algorithms.idql.idql import IDQL, IDQLConfig

__all__ = ["IDQL", "IDQLConfig"]
