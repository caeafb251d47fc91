"""DSRL's replay: :class:`~rllib_diffusion.algorithms.replay.TransitionReplay` (now above
the families, shared with DIPO/QSM), re-exported for existing imports."""

from rllib_diffusion.algorithms.replay import COLUMNS, TransitionReplay

__all__ = ["COLUMNS", "TransitionReplay"]
