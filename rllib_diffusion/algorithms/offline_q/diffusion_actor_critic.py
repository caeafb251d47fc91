"""The diffusion actor-critic RLModule pieces shared by Diffusion-QL, DAC and IDQL.

Glossary: B batch, N action candidates, Do obs dim, Da action dim, T denoising steps.

Acting samples N candidate actions per state with the EMA actor (or the actor itself:
``acting_actor="online"``, DAC's) and picks one by a softmax over (or the argmax of)
the target critics' Q, as Diffusion-QL does. So the EnvRunners need ``critic_target``
and the acting actor; ``critic`` (and ``actor`` when acting with the EMA) are
learner-only. Each algorithm's module is ``<Algo>Module(DiffusionActorCriticMixin,
TorchRLModule, InferenceOnlyAPI)`` and adds its own state (DAC: the dual variable,
IDQL: the value net).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.diffusion import DiffusionMLP, NoiseSchedule, euler_sample, sample_chain
from rllib_diffusion.modules.critics import QEnsemble
from rllib_diffusion.modules.diffusion_policy_module import FLOW_TIME_SCALE
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.modules.q_actor import OffPolicyActorForwards

POLICIES = ("ddpm", "flow")


@dataclass
class DiffusionActorCriticConfig:
    """Network and acting knobs (OFFLINE.md defaults).

    Attributes:
        obs_dim / action_dim: Do / Da.
        policy: "ddpm" (VP schedule, ε-prediction) or "flow" (flow matching, Euler).
        denoising_steps: T (DDPM steps or Euler steps).
        hidden_dims: actor MLP (Mish).
        critic_hidden_dims: each Q head's MLP (Mish).
        num_critics: Q heads.
        num_candidates: N actions sampled per state when acting.
        action_selection: "softmax" over Q or "argmax" (IDQL adds "expectile").
        max_action: actions (and x̂0 during sampling) are clamped to ±max_action.
        actor_layer_norm / actor_dropout / actor_residual: actor MLP options (IDQL uses
            a residual MLP with LayerNorm and dropout 0.1).
        q_aggregation: how acting combines the target heads: "min" (Diffusion-QL, IDQL)
            or "mean" (DAC).
        sampler_variance: variance of each DDPM sampling step: "posterior" (β̃_t,
            Diffusion-QL's) or "beta" (β_t, the official DAC and IDQL samplers').
        sampler_clip: what sampling clamps to ±max_action at each step: "x0" (the
            reconstructed x̂0: Diffusion-QL, DAC) or "xt" (the step's sample: IDQL).
        acting_actor: the actor whose samples acting ranks: "ema" (Diffusion-QL, IDQL)
            or "online", the trained actor itself (the official DAC's
            ``sample_actions``); the critic targets use the EMA actor either way.
        env_id: the env the data came from.

    Field defaults are Diffusion-QL's (and those of checkpoints recorded before a field
    existed); each algorithm's ``default_model_config`` sets its official values.
    """

    SELECTIONS: ClassVar[tuple[str, ...]] = ("softmax", "argmax")

    obs_dim: int
    action_dim: int
    policy: str = "ddpm"
    denoising_steps: int = 5
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)
    num_critics: int = 2
    num_candidates: int = 50
    action_selection: str = "softmax"
    max_action: float = 1.0
    actor_layer_norm: bool = False
    actor_dropout: float = 0.0
    actor_residual: bool = False
    q_aggregation: str = "min"
    sampler_variance: str = "posterior"
    sampler_clip: str = "x0"
    acting_actor: str = "ema"
    env_id: str | None = None

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        if self.policy not in POLICIES:
            raise ConfigError(f"policy={self.policy!r}; allowed: {', '.join(POLICIES)}.")
        if self.action_selection == "expectile" and "expectile" not in self.SELECTIONS:
            raise ConfigError(
                "action_selection='expectile' needs IDQL's value network (value_network); "
                f"allowed here: {', '.join(self.SELECTIONS)}."
            )
        if self.action_selection not in self.SELECTIONS:
            raise ConfigError(
                f"action_selection={self.action_selection!r}; allowed: "
                f"{', '.join(self.SELECTIONS)}."
            )
        if self.q_aggregation not in ("min", "mean"):
            raise ConfigError(f"q_aggregation={self.q_aggregation!r}; allowed: min, mean.")
        variance, clip = self.sampler_variance, self.sampler_clip
        if variance not in ("posterior", "beta") or clip not in ("x0", "xt"):
            raise ConfigError(
                f"sampler_variance={self.sampler_variance!r} (allowed: posterior, beta), "
                f"sampler_clip={self.sampler_clip!r} (allowed: x0, xt)."
            )
        if self.acting_actor not in ("ema", "online"):
            raise ConfigError(f"acting_actor={self.acting_actor!r}; allowed: ema, online.")
        if self.num_critics < 2 or self.num_candidates < 1 or self.denoising_steps < 1:
            raise ConfigError("need num_critics >= 2, num_candidates >= 1, denoising_steps >= 1.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"], d["critic_hidden_dims"] = (
            list(self.hidden_dims),
            list(self.critic_hidden_dims),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """From a model-config dict; keys of other (or pre-redesign) configs are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class DiffusionActorCriticMixin(OffPolicyActorForwards):
    """Actor, EMA actor, critics, targets, sampling and acting by Q-ranked candidates.

    Host: ``TorchRLModule`` + ``InferenceOnlyAPI``. ``MODEL_CONFIG`` is the model-config
    dataclass; subclasses extend :meth:`setup` and :meth:`pick_candidates`.
    """

    MODEL_CONFIG: ClassVar[type] = DiffusionActorCriticConfig

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = self.MODEL_CONFIG.from_dict(dict(self.model_config or {}))
        self.dql_config = cfg
        if cfg.policy == "ddpm":
            self.schedule = NoiseSchedule.from_name("vp", cfg.denoising_steps)
        actor = DiffusionMLP(
            cfg.action_dim,
            1,
            cfg.obs_dim,
            hidden_dims=cfg.hidden_dims,
            residual=cfg.actor_residual,
            layer_norm=cfg.actor_layer_norm,
            dropout=cfg.actor_dropout,
            time_scale=FLOW_TIME_SCALE if cfg.policy == "flow" else 1.0,
        )
        critic = QEnsemble(
            cfg.obs_dim,
            cfg.action_dim,
            num_heads=cfg.num_critics,
            hidden_dims=cfg.critic_hidden_dims,
        )
        self.ema_actor = copy.deepcopy(actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        if not self.inference_only or cfg.acting_actor == "online":
            self.actor = actor
        if not self.inference_only:
            self.critic = critic
        # Gradient steps taken (EMA schedule); a buffer so checkpoints restore it.
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))

    def sample(self, obs: Tensor, *, ema: bool, x_init: Tensor | None = None) -> Tensor:
        """Actions ``(B, Da)`` from the (EMA) actor; differentiable w.r.t. the actor."""
        cfg = self.dql_config
        net = self.ema_actor if ema or not hasattr(self, "actor") else self.actor
        obs = obs.float()
        if x_init is None:
            x_init = torch.randn(obs.shape[0], 1, cfg.action_dim, device=obs.device)
        if cfg.policy == "flow":
            out = euler_sample(lambda x, t: net(x, t, obs), x_init, cfg.denoising_steps)
            return out[:, 0].clamp(-cfg.max_action, cfg.max_action)
        clip_xt = cfg.sampler_clip == "xt"
        chain = sample_chain(
            lambda x, t: net(x, t, obs),
            self.schedule,
            tuple(x_init.shape),
            clip_x0=None if clip_xt else cfg.max_action,
            noise_clip=None,
            final_clip=cfg.max_action,
            x_init=x_init,
            variance=cfg.sampler_variance,
            clip_xt=cfg.max_action if clip_xt else None,
        )
        return chain.actions[:, 0]

    def pick_candidates(self, obs: Tensor, q: Tensor, *, explore: bool) -> Tensor:
        """Index ``(B,)`` of the chosen candidate from their Q values ``q`` (B, N)."""
        if self.dql_config.action_selection == "argmax" and not explore:
            return q.argmax(dim=1)
        return torch.multinomial(torch.softmax(q, dim=1), 1).squeeze(1)

    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """Sample N candidates per state with the acting actor (``acting_actor``) and
        pick one by target Q."""
        cfg = self.dql_config
        obs = obs.float()
        b, n = obs.shape[0], cfg.num_candidates
        obs_rep = obs.repeat_interleave(n, dim=0)
        cand = self.sample(obs_rep, ema=cfg.acting_actor == "ema")
        q_heads = self.critic_target(obs_rep, cand)
        q = q_heads.mean(dim=0) if cfg.q_aggregation == "mean" else q_heads.min(dim=0).values
        idx = self.pick_candidates(obs, q.view(b, n), explore=explore)
        return cand.view(b, n, -1)[torch.arange(b, device=obs.device), idx]

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["actor", "critic"] if self.dql_config.acting_actor == "ema" else ["critic"]


def set_acting(
    module: Any, *, num_candidates: int | None = None, action_selection: str | None = None
) -> dict[str, Any]:
    """Change how a Diffusion-QL-family module acts: ``num_candidates`` samples per state,
    picked by ``action_selection`` (e.g. to evaluate one IDQL checkpoint with N = 1, i.e.
    its BC actor alone, or with expectile resampling). Returns the acting settings used."""
    cfg = getattr(module, "dql_config", None)
    if not isinstance(cfg, DiffusionActorCriticConfig):
        raise ConfigError(
            "--num-candidates/--action-selection apply to Diffusion-QL, IDQL and DAC "
            "checkpoints (N sampled candidates scored by Q); this policy does not act that way."
        )
    changes = {"num_candidates": num_candidates, "action_selection": action_selection}
    module.dql_config = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    return {
        "num_candidates": module.dql_config.num_candidates,
        "action_selection": module.dql_config.action_selection,
    }
