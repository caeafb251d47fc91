"""Gaussian-mixture (GMM) action distribution for RLlib's new stack: DPPO's GMM baseline.

Shapes: B batch, K mixture modes, D flattened (chunk) action dim (Ta·Da).

The policy network (RLlib's default encoder + pi head) outputs, per observation, the
flat vector ``[means (K·D) | log-stds (K·D, only with a state-dependent std) | logits (K)]``.
:class:`TorchGMM` turns it into the mixture the official ``GMMModel`` builds
(irom-lab/dppo ``model/common/gmm.py``, ``mlp_gmm.py``):

    π(a|s) = Σ_k w_k(s) · Π_d N(a_d; μ_kd(s), σ_kd(s)),   w = softmax(logits),
    μ = tanh(raw means)  (the official squashes the means into [-1, 1]),
    σ = fixed_std, or exp(clamp(raw log-std, log std_min, log std_max)).

Log-density (:func:`gmm_log_prob`, the one implementation):

    log π(a|s) = logsumexp_k [ log_softmax(logits)_k + Σ_d log N(a_d; μ_kd, σ_kd) ].

Entropy has no closed form; like the official (``approx_entropy``) we report the
weight-averaged component entropy Σ_k w_k H(N_k), a lower bound of the mixture's
entropy. PPO runs with entropy coefficient 0 (as the official GMM configs), so it only
feeds metrics. The deterministic action is the mean of the most likely mode; the
official instead samples a mode by its weight and returns its mean (std set to 1e-4),
which is not deterministic, so evaluations here would not repeat.

K = 1 is never built here: ``num_modes=1`` keeps RLlib's own diagonal Gaussian.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.algorithms.bc.bc_catalog import BCCatalog
from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchDeterministic,
    TorchDistribution,
)
from torch import distributions as D

from rllib_diffusion.modules.model_config import ConfigError

#: model_config keys of the GMM head (stored in checkpoint metadata; defined once here).
NUM_MODES_KEY = "gmm_num_modes"
FIXED_STD_KEY = "gmm_fixed_std"
STD_MIN_KEY = "gmm_std_min"
STD_MAX_KEY = "gmm_std_max"


@dataclass(frozen=True)
class GMMHead:
    """Mixture head settings (official ``GMM_MLP`` arguments in brackets).

    Attributes:
        num_modes: K mixture modes (``num_modes``, 5 in every official GMM config).
        fixed_std: per-mode std held fixed (``fixed_std``, 0.1 in every official GMM
            config); None: the network predicts a log-std per state, mode and dim.
        std_min: lower std clamp of the predicted std (``std_min``, 0.01).
        std_max: upper std clamp of the predicted std (``std_max``, 1).
    """

    num_modes: int
    fixed_std: float | None = 0.1
    std_min: float = 0.01
    std_max: float = 1.0

    def __post_init__(self) -> None:
        if self.num_modes < 2:
            raise ConfigError(
                f"num_modes={self.num_modes}: a mixture needs >= 2 modes (--num-modes 1 "
                "is the plain Gaussian policy)."
            )
        if self.fixed_std is not None and not self.fixed_std > 0:
            raise ConfigError(f"gmm_fixed_std={self.fixed_std} must be > 0 (--gmm-fixed-std).")
        if not 0 < self.std_min < self.std_max:
            raise ConfigError(
                f"gmm std bounds ({self.std_min}, {self.std_max}) need 0 < std_min < std_max "
                "(--gmm-std-min, --gmm-std-max)."
            )

    def model_config(self) -> dict[str, Any]:
        """The model_config entries that declare this head."""
        return {
            NUM_MODES_KEY: self.num_modes,
            FIXED_STD_KEY: self.fixed_std,
            STD_MIN_KEY: self.std_min,
            STD_MAX_KEY: self.std_max,
        }

    @classmethod
    def from_model_config(cls, model_config: Any) -> GMMHead | None:
        """The head a model_config declares, or None for a plain Gaussian policy."""
        if not isinstance(model_config, dict) or model_config.get(NUM_MODES_KEY) is None:
            return None
        return cls(
            num_modes=int(model_config[NUM_MODES_KEY]),
            fixed_std=model_config.get(FIXED_STD_KEY),
            std_min=float(model_config.get(STD_MIN_KEY, 0.01)),
            std_max=float(model_config.get(STD_MAX_KEY, 1.0)),
        )

    def input_dim(self, action_dim: int) -> int:
        """Network outputs needed for D = ``action_dim``: K·D means (+ K·D log-stds) + K."""
        per_mode = action_dim if self.fixed_std is not None else 2 * action_dim
        return self.num_modes * (per_mode + 1)


def gmm_log_prob(
    means: torch.Tensor, stds: torch.Tensor, logits: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """log π(a) = logsumexp_k [log_softmax(logits)_k + Σ_d log N(a_d; μ_kd, σ_kd)].

    Args: means, stds (B, K, D); logits (B, K); actions (B, D). Returns (B,).
    """
    z = (actions.unsqueeze(-2) - means) / stds
    comp = -0.5 * z.pow(2) - stds.log() - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(torch.log_softmax(logits, -1) + comp.sum(-1), dim=-1)


def split_gmm_inputs(
    inputs: torch.Tensor, head: GMMHead
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network outputs (B, input_dim) -> means (B, K, D) in [-1, 1], stds (B, K, D), logits (B, K)."""
    k = head.num_modes
    per_mode = inputs.shape[-1] // k - 1
    dim = per_mode if head.fixed_std is not None else per_mode // 2
    if head.input_dim(dim) != inputs.shape[-1]:
        raise ValueError(f"GMM inputs of width {inputs.shape[-1]} do not fit {head}.")
    batch = inputs.shape[:-1]
    means = torch.tanh(inputs[..., : k * dim]).reshape(*batch, k, dim)
    logits = inputs[..., -k:]
    if head.fixed_std is not None:
        stds = torch.full_like(means, head.fixed_std)
    else:
        raw = inputs[..., k * dim : 2 * k * dim].reshape(*batch, k, dim)
        stds = raw.clamp(math.log(head.std_min), math.log(head.std_max)).exp()
    return means, stds, logits


class TorchGMM(TorchDistribution):
    """RLlib distribution of a K-mode diagonal Gaussian mixture (see module docstring).

    Use :func:`gmm_dist_class` for the subclass bound to a :class:`GMMHead`.
    """

    head: GMMHead | None = None

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, logits: torch.Tensor) -> None:
        self.means, self.stds, self.logits = means, stds, logits
        super().__init__(means, stds, logits)

    def _get_torch_distribution(self, means, stds, logits) -> D.Distribution:
        return D.MixtureSameFamily(
            D.Categorical(logits=logits), D.Independent(D.Normal(means, stds), 1)
        )

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return gmm_log_prob(self.means, self.stds, self.logits, value)

    def entropy(self) -> torch.Tensor:
        """Σ_k w_k H(N_k), H(N_k) = Σ_d [½ log(2πe) + log σ_kd]: a lower bound, (B,)."""
        comp = (0.5 * math.log(2 * math.pi * math.e) + self.stds.log()).sum(-1)
        return (torch.softmax(self.logits, -1) * comp).sum(-1)

    def kl(self, other: Any) -> torch.Tensor:
        raise NotImplementedError(
            "A Gaussian mixture has no closed-form KL; GMM PPO runs without a KL loss."
        )

    def rsample(self, *, sample_shape=None):
        raise NotImplementedError("Mode choice is discrete: a GMM sample is not reparameterised.")

    def to_deterministic(self) -> TorchDeterministic:
        """The mean of the most likely mode."""
        best = self.logits.argmax(-1)
        index = best[..., None, None].expand(*best.shape, 1, self.means.shape[-1])
        return TorchDeterministic(loc=self.means.gather(-2, index).squeeze(-2))

    @classmethod
    def required_input_dim(cls, space: Any, **kwargs) -> int:
        return cls.head.input_dim(int(math.prod(space.shape)))

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> TorchGMM:
        return cls(*split_gmm_inputs(logits, cls.head))


@functools.cache
def gmm_dist_class(head: GMMHead) -> type[TorchGMM]:
    """The :class:`TorchGMM` subclass for ``head`` (RLlib builds distributions per class)."""
    return type(f"TorchGMM{head.num_modes}", (TorchGMM,), {"head": head, "__module__": __name__})


class _GMMCatalogMixin:
    """Catalog part that swaps RLlib's diagonal Gaussian for the model_config's mixture."""

    def __init__(self, observation_space, action_space, model_config_dict, **kwargs) -> None:
        self.gmm_head = GMMHead.from_model_config(model_config_dict)
        if self.gmm_head is None:
            raise ConfigError(f"{type(self).__name__} needs '{NUM_MODES_KEY}' in model_config.")
        super().__init__(observation_space, action_space, model_config_dict, **kwargs)

    def get_action_dist_cls(self, framework: str) -> type[TorchGMM]:
        return gmm_dist_class(self.gmm_head)


class GMMBCCatalog(_GMMCatalogMixin, BCCatalog):
    """RLlib's BC catalog with a GMM pi head."""


class GMMPPOCatalog(_GMMCatalogMixin, PPOCatalog):
    """RLlib's PPO catalog with a GMM pi head."""


def policy_module_args(model_config: dict[str, Any], gmm_catalog: type) -> dict[str, Any]:
    """Keyword arguments of ``AlgorithmConfig.rl_module`` for a Gaussian-family policy:
    RLlib's default module as is, with ``gmm_catalog`` when model_config declares a mixture."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    if GMMHead.from_model_config(model_config) is None:
        return {"model_config": DefaultModelConfig(**model_config)}
    return {
        "model_config": dict(model_config),
        "rl_module_spec": RLModuleSpec(catalog_class=gmm_catalog),
    }
