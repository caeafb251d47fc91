"""RLModule of TD3+BC (Fujimoto & Gu 2021): deterministic actor, twin critics, targets.

Glossary: B batch, Do obs dim, Da action dim, H critic heads (2).

Every network sees normalised states ``(s − μ) / σ`` with the dataset's statistics
(``obs_mean``, ``obs_std``: buffers from the model config, so acting and evaluation of a
checkpoint normalise exactly as training did). EnvRunners carry only the actor.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.diffusion import MLP
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.critics import QEnsemble
from rllib_diffusion.modules.q_actor import OffPolicyActorForwards

#: Added to the dataset's state std (official ``normalize_states(eps=1e-3)``).
STATE_STD_EPS = 1e-3


def state_statistics(obs: np.ndarray, eps: float = STATE_STD_EPS) -> tuple[list, list]:
    """``(μ, σ + eps)`` per dim of ``obs`` (N, Do): the official TD3+BC normalisation
    (population std over the dataset's states ``s`` of its transitions)."""
    obs = np.asarray(obs, dtype=np.float64)
    return obs.mean(axis=0).tolist(), (obs.std(axis=0) + eps).tolist()


@dataclass
class TD3BCModelConfig:
    """Attributes:
    obs_dim / action_dim: Do / Da.
    hidden_dims: actor MLP sizes (official: 256-256, ReLU, tanh output).
    critic_hidden_dims: sizes of each Q head (official: 256-256, ReLU).
    num_critics: Q heads (twin critics).
    max_action: actions are ``max_action · tanh(·)``.
    obs_mean / obs_std: state normalisation ``(s − obs_mean) / obs_std`` (Do values
        each); None: no normalisation.
    env_id: the env the data came from.
    """

    obs_dim: int
    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    max_action: float = 1.0
    obs_mean: tuple[float, ...] | None = None
    obs_std: tuple[float, ...] | None = None
    env_id: str | None = None

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        for name in ("obs_mean", "obs_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(v) for v in value))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("hidden_dims", "critic_hidden_dims", "obs_mean", "obs_std"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TD3BCModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class TD3BCModule(EvalWhenInferenceOnly, OffPolicyActorForwards, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = TD3BCModelConfig.from_dict(dict(self.model_config or {}))
        self.td3bc_config = cfg
        mean = torch.zeros(cfg.obs_dim) if cfg.obs_mean is None else torch.tensor(cfg.obs_mean)
        std = torch.ones(cfg.obs_dim) if cfg.obs_std is None else torch.tensor(cfg.obs_std)
        self.register_buffer("obs_mean", mean.float())
        self.register_buffer("obs_std", std.float())
        self.actor = MLP(
            cfg.obs_dim, cfg.action_dim, cfg.hidden_dims, activation="relu", out_activation="tanh"
        )
        if not self.inference_only:
            self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
            self.critic = QEnsemble(
                cfg.obs_dim,
                cfg.action_dim,
                num_heads=cfg.num_critics,
                hidden_dims=cfg.critic_hidden_dims,
                activation="relu",
            )
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))

    @property
    def max_action(self) -> float:
        return self.td3bc_config.max_action

    def normalize_obs(self, obs: Tensor) -> Tensor:
        """``(s − μ) / σ`` for raw states ``obs`` (B, Do)."""
        return (obs.float() - self.obs_mean) / self.obs_std

    def policy_actions(self, obs: Tensor, *, target: bool = False) -> Tensor:
        """``π(s) = max_action · tanh(f(norm(s)))`` (B, Da) from raw ``obs`` (B, Do); the
        target actor's with ``target``."""
        net = self.actor_target if target else self.actor
        return self.max_action * net(self.normalize_obs(obs))

    def q_values(self, obs: Tensor, actions: Tensor, *, target: bool = False) -> Tensor:
        """``Q_h(norm(s), a)`` for every head, (H, B); the target critics' with ``target``."""
        net = self.critic_target if target else self.critic
        return net(self.normalize_obs(obs), actions)

    def q1(self, obs: Tensor, actions: Tensor) -> Tensor:
        """``Q_1(norm(s), a)`` (B,): the first head only (official ``Critic.Q1``)."""
        x = torch.cat([self.normalize_obs(obs), actions], dim=-1)
        return self.critic.heads[0](x).squeeze(-1)

    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """``π(s)``: TD3+BC acts deterministically offline and in the online phase."""
        return self.policy_actions(obs)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["actor_target", "critic", "critic_target"]
