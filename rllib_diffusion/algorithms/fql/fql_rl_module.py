"""RLModule of FQL (Park, Li, Levine 2025): BC flow, one-step policy, critics.

Glossary: B batch, Do obs dim, Da action dim, S Euler steps of the BC flow.

Acting and TD targets use only the one-step policy ``a = μ_ω(s, z)``, z ~ N(0, I), so
EnvRunners carry just ``onestep``; the BC flow and critics are learner-only.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.diffusion import MLP, DiffusionMLP, euler_sample
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.critics import QEnsemble
from rllib_diffusion.modules.diffusion_policy_module import FLOW_TIME_SCALE
from rllib_diffusion.modules.q_actor import OffPolicyActorForwards


@dataclass
class FQLModelConfig:
    """Attributes:
    obs_dim / action_dim: Do / Da.
    flow_steps: S, Euler steps of the BC flow (the distillation target).
    hidden_dims: BC flow and one-step policy MLP sizes.
    critic_hidden_dims: Q heads (LayerNorm MLPs, FQL: 4×512).
    num_critics: Q heads.
    max_action: actions are clamped to ±max_action.
    env_id: the env the data came from.
    """

    obs_dim: int
    action_dim: int
    flow_steps: int = 10
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    critic_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    num_critics: int = 2
    max_action: float = 1.0
    env_id: str | None = None

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"], d["critic_hidden_dims"] = (
            list(self.hidden_dims),
            list(self.critic_hidden_dims),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FQLModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class FQLModule(EvalWhenInferenceOnly, OffPolicyActorForwards, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = FQLModelConfig.from_dict(dict(self.model_config or {}))
        self.fql_config = cfg
        self.onestep = MLP(
            cfg.obs_dim + cfg.action_dim, cfg.action_dim, cfg.hidden_dims, activation="gelu"
        )
        if not self.inference_only:
            self.bc_flow = DiffusionMLP(
                cfg.action_dim,
                1,
                cfg.obs_dim,
                hidden_dims=cfg.hidden_dims,
                activation="gelu",
                residual=False,
                time_scale=FLOW_TIME_SCALE,
            )
            self.critic = QEnsemble(
                cfg.obs_dim,
                cfg.action_dim,
                num_heads=cfg.num_critics,
                hidden_dims=cfg.critic_hidden_dims,
                activation="gelu",
                layer_norm=True,
            )
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))

    def onestep_raw(self, obs: Tensor, noise: Tensor) -> Tensor:
        """``μ_ω(s, z)`` unclipped, (B, Da) for obs (B, Do), noise (B, Da): what the
        distillation loss compares with the flow's action (as the official code does)."""
        return self.onestep(torch.cat([obs.float(), noise], dim=-1))

    def clip_to_bounds(self, actions: Tensor) -> Tensor:
        """``actions`` clipped to ``[-max_action, max_action]`` (the official ``jnp.clip``:
        no gradient reaches an output past a bound)."""
        m = self.fql_config.max_action
        return actions.clamp(-m, m)

    def onestep_actions(self, obs: Tensor, noise: Tensor) -> Tensor:
        """``μ_ω(s, z)`` clipped to the action bounds: what acts, and what the TD target
        and the Q term evaluate."""
        return self.clip_to_bounds(self.onestep_raw(obs, noise))

    def flow_actions(self, obs: Tensor, noise: Tensor) -> Tensor:
        """Euler solution of the BC flow from ``noise`` (B, Da); differentiable."""
        obs = obs.float()
        out = euler_sample(
            lambda x, t: self.bc_flow(x, t, obs), noise.unsqueeze(1), self.fql_config.flow_steps
        )
        m = self.fql_config.max_action
        return out[:, 0].clamp(-m, m)

    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """``μ_ω(s, z)`` with fresh noise ``z ~ N(0, I)`` (the official agent samples it
        when evaluating too)."""
        noise = torch.randn(obs.shape[0], self.fql_config.action_dim, device=obs.device)
        return self.onestep_actions(obs, noise)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["bc_flow", "critic", "critic_target"]
