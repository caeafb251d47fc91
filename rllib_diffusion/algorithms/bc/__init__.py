"""Diffusion behaviour cloning (DPPO's pretraining) on RLlib's offline API."""

from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC, DiffusionBCConfig
from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain

__all__ = ["DiffusionBC", "DiffusionBCConfig", "PretrainSettings", "pretrain"]
