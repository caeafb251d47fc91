"""Diffusion-QL (DDPM and flow-matching actors) on RLlib's offline API."""

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQL, DiffusionQLConfig
from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, train_offline

__all__ = ["DiffusionQL", "DiffusionQLConfig", "OfflineSettings", "train_offline"]
