"""Multi-layer perceptrons: a generic (optionally residual) MLP and the ε/velocity MLP.

Shape glossary:
    B   batch size
    K   number of denoising steps (t indexes them; flow time is a float in [0, 1])
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension (e.g. flattened observation history)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rllib_diffusion.diffusion.networks.embeddings import TimeEmbedding

__all__ = ["ACTIVATIONS", "MLP", "DiffusionMLP", "make_activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "mish": nn.Mish,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """Instantiate an activation by name (``mish``, ``relu``, ``gelu``, ``silu``, ``tanh``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed values: {sorted(ACTIVATIONS)}"
        ) from None


class _Layer(nn.Module):
    """``Linear → [LayerNorm] → act → [Dropout]``, with a skip when ``residual``."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        activation: str,
        layer_norm: bool,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.residual = residual and d_in == d_out
        self.body = nn.Sequential(
            nn.Linear(d_in, d_out),
            nn.LayerNorm(d_out) if layer_norm else nn.Identity(),
            make_activation(activation),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MLP(nn.Module):
    """``in_dim → hidden_dims → out_dim`` perceptron; a final linear layer without norm.

    With ``residual=True`` every hidden layer whose input and output widths match is a
    residual block ``x + act(norm(Linear(x)))``, which keeps deep (3×512) nets easy to
    optimise. Also used for critics.

    Forward: ``(B, in_dim) -> (B, out_dim)`` (any leading dims work).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int],
        activation: str = "mish",
        layer_norm: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
        out_activation: str | None = None,
    ) -> None:
        super().__init__()
        make_activation(activation)  # validate early, even when hidden_dims is empty
        dims = [in_dim, *hidden_dims]
        self.hidden = nn.Sequential(
            *[
                _Layer(d_in, d_out, activation, layer_norm, dropout, residual)
                for d_in, d_out in zip(dims[:-1], dims[1:])
            ]
        )
        self.out = nn.Linear(dims[-1], out_dim)
        self.out_activation = (
            nn.Identity() if out_activation is None else make_activation(out_activation)
        )

    def forward(self, x: Tensor) -> Tensor:
        # The input's dtype out: under autocast the Linear layers compute in bf16 while
        # what follows (losses, log-probs, targets) stays fp32 (a no-op otherwise).
        return self.out_activation(self.out(self.hidden(x))).to(x.dtype)


def _batch_time(t: Tensor | float | int, batch: int, device: torch.device) -> Tensor:
    """Accept a scalar or ``(B,)`` time and return ``(B,)``."""
    t = torch.as_tensor(t, device=device)
    return t.expand(batch) if t.dim() == 0 else t.reshape(batch)


class DiffusionMLP(nn.Module):
    """ε- (or velocity-) prediction MLP over a flattened action chunk.

    Input = concat[flatten(x) (Ta·Da), time-embedding(t) (time_dim), cond (Dc)];
    output Ta·Da reshaped to ``(B, Ta, Da)``. Knows nothing of schedules.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        *,
        time_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 512, 512),
        activation: str = "mish",
        layer_norm: bool = False,
        dropout: float = 0.0,
        residual: bool = True,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.horizon = horizon
        self.cond_dim = cond_dim
        self.time_emb = TimeEmbedding(time_dim, 2 * time_dim, time_scale=time_scale)
        flat = action_dim * horizon
        self.mlp = MLP(
            flat + time_dim + cond_dim,
            flat,
            hidden_dims,
            activation=activation,
            layer_norm=layer_norm,
            dropout=dropout,
            residual=residual,
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args:
            x: ``(B, Ta, Da)`` noisy actions.
            t: ``(B,)`` long denoising step or float flow time (a scalar is broadcast).
            cond: ``(B, Dc)`` conditioning (None allowed only when ``cond_dim == 0``).

        Returns:
            ``(B, Ta, Da)``.
        """
        batch = x.shape[0]
        parts = [x.reshape(batch, -1), self.time_emb(_batch_time(t, batch, x.device)).to(x.dtype)]
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"cond of shape (B, {self.cond_dim}) is required")
            parts.append(cond.reshape(batch, -1).to(x.dtype))
        return self.mlp(torch.cat(parts, dim=-1)).reshape(batch, self.horizon, self.action_dim)
