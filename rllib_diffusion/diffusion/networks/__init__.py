"""Denoising / velocity networks: ``forward(x (B, Ta, Da), t (B,), cond (B, Dc)) -> (B, Ta, Da)``.

Shape glossary: B batch, K denoising steps, Ta action horizon, Da action dim,
Dc conditioning dim. Networks know nothing of noise schedules.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rllib_diffusion.diffusion.networks.embeddings import SinusoidalPosEmb, TimeEmbedding
from rllib_diffusion.diffusion.networks.mlp import ACTIVATIONS, MLP, DiffusionMLP, make_activation
from rllib_diffusion.diffusion.networks.unet1d import TemporalUNet1D

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "NETWORKS",
    "DiffusionMLP",
    "SinusoidalPosEmb",
    "TemporalUNet1D",
    "TimeEmbedding",
    "build_network",
    "make_activation",
]

NETWORKS: dict[str, type[nn.Module]] = {"mlp": DiffusionMLP, "unet": TemporalUNet1D}


def build_network(kind: str, **kw: Any) -> nn.Module:
    """Build a denoising network: ``"mlp"`` (``DiffusionMLP``) or ``"unet"`` (``TemporalUNet1D``).

    Keyword arguments go to the constructor (``action_dim``, ``horizon``, ``cond_dim``, ...).
    """
    try:
        cls = NETWORKS[kind]
    except KeyError:
        raise ValueError(
            f"unknown network kind {kind!r}; allowed values: {sorted(NETWORKS)}"
        ) from None
    return cls(**kw)
