"""RLModule of DPPO: a frozen pretrained denoiser, a fine-tuned copy, and a critic V(s).

Glossary: B batch, S reverse steps per sample (K for DDPM, ddim_steps for DDIM),
K_ft fine-tuned steps (the last K_ft of S), Ta action horizon, Da action dim,
Do flattened (normalised) observation dim.

Only the network each step needs runs: ``actor`` (frozen) for the first S − K_ft
steps, ``actor_ft`` for the last K_ft. Exploration returns the executed chunk plus the
fine-tuned part of the chain ``(B, K_ft + 1, Ta, Da)`` and its per-step log-probs
``(B, K_ft)``; inference is (almost) deterministic and uses exactly the same two
networks. The critic is dropped on EnvRunners (``inference_only``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import columns as C
from rllib_diffusion.diffusion import (
    MLP,
    NoiseSchedule,
    ddim_mean_std,
    ddpm_mean_std,
    gaussian_step,
    reverse_timesteps,
    transition_logprob,
)
from rllib_diffusion.diffusion.sampling import DETERMINISTIC_MIN_STD
from rllib_diffusion.modules.apis import DenoisingChainAPI
from rllib_diffusion.modules.diffusion_policy_module import build_denoiser
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig


@dataclass
class DPPOModelConfig:
    """Model config of :class:`DPPOModule` (passed as a dict in ``model_config``).

    Attributes:
        policy: the pretrained policy's :class:`DiffusionPolicyConfig` (dims, K, sampler,
            normalisation); must be "ddpm" or "ddim".
        ft_denoising_steps: K_ft, the last reverse steps that are fine-tuned.
        min_sampling_std: std floor of exploration steps (DPPO: 0.1).
        min_logprob_std: std floor when evaluating log-probs (DPPO: 0.1).
        logprob_clamp: per-element log-prob clamp.
        ddim_eta: DDIM η during exploration (evaluation uses η = 0).
        critic_hidden_dims: residual Mish MLP sizes of V(s).
    """

    policy: dict[str, Any]
    ft_denoising_steps: int = 10
    min_sampling_std: float = 0.1
    min_logprob_std: float = 0.1
    logprob_clamp: tuple[float, float] = (-5.0, 2.0)
    ddim_eta: float = 1.0
    critic_hidden_dims: tuple[int, ...] = field(default_factory=lambda: (256, 256, 256))

    def __post_init__(self) -> None:
        self.logprob_clamp = tuple(self.logprob_clamp)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        pol = self.policy_config
        if pol.sampler not in ("ddpm", "ddim"):
            raise ConfigError(
                f"DPPO fine-tunes DDPM or DDIM policies; the pretrained sampler is "
                f"{pol.sampler!r}. Pretrain with --sampler ddpm or ddim."
            )
        if not 1 <= self.ft_denoising_steps <= pol.sampling_steps:
            raise ConfigError(
                f"ft_denoising_steps={self.ft_denoising_steps} must be in "
                f"[1, {pol.sampling_steps}] (the policy's reverse steps)."
            )

    @property
    def policy_config(self) -> DiffusionPolicyConfig:
        return DiffusionPolicyConfig.from_dict(self.policy, strict=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["logprob_clamp"] = list(self.logprob_clamp)
        d["critic_hidden_dims"] = list(self.critic_hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPPOModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class DPPOModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI, DenoisingChainAPI):
    """Denoising-chain policy for DPPO. Observation (Do,), action Box [-1, 1] (Ta, Da)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = DPPOModelConfig.from_dict(dict(self.model_config or {}))
        pol = cfg.policy_config
        self.dppo_config, self.policy_config = cfg, pol
        self.schedule = NoiseSchedule.from_name(pol.schedule, pol.denoising_steps)
        timesteps, prev_steps = reverse_timesteps(pol.sampler, pol.denoising_steps, pol.ddim_steps)
        self.register_buffer("timesteps", timesteps, persistent=False)
        self.register_buffer("prev_steps", prev_steps, persistent=False)
        self.actor = build_denoiser(pol).requires_grad_(False)
        self.actor_ft = copy.deepcopy(self.actor).requires_grad_(True)
        if not self.inference_only:
            self.critic = MLP(
                pol.obs_dim, 1, cfg.critic_hidden_dims, activation="mish", residual=True
            )

    @property
    def ft_denoising_steps(self) -> int:
        return self.dppo_config.ft_denoising_steps

    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into both the frozen and fine-tuned actor."""
        self.actor.load_state_dict(state_dict)
        self.actor_ft.load_state_dict(state_dict)

    # ---------------------------------------------------------------- sampling
    def _step_mean_std(
        self, net, obs: Tensor, x: Tensor, i: int | Tensor, *, deterministic: bool, floor: float
    ) -> tuple[Tensor, Tensor]:
        """Mean/std of reverse step ``i`` (index into ``self.timesteps``, scalar or (B,))."""
        pol = self.policy_config
        batch = x.shape[0]
        t = self.timesteps[i].expand(batch) if isinstance(i, int) else self.timesteps[i]
        eps = net(x, t, obs)
        if pol.sampler == "ddpm":
            return ddpm_mean_std(self.schedule, x, t, eps, clip_x0=pol.clip_x0, min_std=floor)
        t_prev = self.prev_steps[i].expand(batch) if isinstance(i, int) else self.prev_steps[i]
        eta = 0.0 if deterministic else self.dppo_config.ddim_eta
        return ddim_mean_std(
            self.schedule, x, t, t_prev, eps, eta=eta, clip_x0=pol.clip_x0, min_std=floor
        )

    def sample(
        self,
        obs: Tensor,
        *,
        deterministic: bool,
        x_init: Tensor | None = None,
        generator: torch.Generator | None = None,
        base_only: bool = False,
    ) -> dict[str, Tensor]:
        """Run the reverse chain; returns ``actions`` (B, Ta, Da), ``chain`` (B, K_ft+1, Ta, Da)
        and ``logp`` (B, K_ft) (log-probs under the log-prob std floor).

        ``base_only`` runs the frozen pretrained actor for every step (the BC regulariser's
        reference chains)."""
        pol, cfg = self.policy_config, self.dppo_config
        obs = obs.float()
        shape = (obs.shape[0], pol.horizon, pol.action_dim)
        x = torch.randn(shape, generator=generator, device=obs.device) if x_init is None else x_init
        num_steps = len(self.timesteps)
        first_ft = num_steps - cfg.ft_denoising_steps
        chain, logps = [], []
        for i in range(num_steps):
            net = self.actor if (i < first_ft or base_only) else self.actor_ft
            if deterministic:
                floor = (
                    0.0 if (pol.sampler == "ddim" or i == num_steps - 1) else DETERMINISTIC_MIN_STD
                )
            else:
                floor = cfg.min_sampling_std
            mean, std = self._step_mean_std(
                net, obs, x, i, deterministic=deterministic, floor=floor
            )
            if deterministic and floor == 0.0:
                std = torch.zeros_like(std)
            if i == first_ft:
                chain.append(x)
            x_next = gaussian_step(mean, std, generator=generator)
            if i >= first_ft:
                lp_std = std.clamp(min=cfg.min_logprob_std)
                logps.append(
                    transition_logprob(
                        x_next, mean, lp_std, clamp=cfg.logprob_clamp, act_steps=pol.act_steps
                    )
                )
                chain.append(x_next)
            x = x_next
        return {
            "actions": x.clamp(-1.0, 1.0),
            "chain": torch.stack(chain, dim=1),
            "logp": torch.stack(logps, dim=1),
        }

    def sampling_std(self, k: Tensor) -> Tensor:
        """Exploration std ``(B,)`` of fine-tuned step ``k`` (posterior std with its floor).

        For DDIM (η > 0) the std also depends on nothing but the timesteps, so a zero
        sample suffices to evaluate it.
        """
        cfg, pol = self.dppo_config, self.policy_config
        i = (len(self.timesteps) - cfg.ft_denoising_steps) + k.long()
        t = self.timesteps[i]
        if pol.sampler == "ddpm":
            std = (0.5 * self.schedule.posterior_log_variance_clipped[t]).exp()
        else:
            a_t = self.schedule.alphas_cumprod[t]
            t_prev = self.prev_steps[i]
            a_prev = torch.where(
                t_prev >= 0, self.schedule.alphas_cumprod[t_prev.clamp(min=0)], torch.ones_like(a_t)
            )
            std = cfg.ddim_eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        return std.clamp(min=cfg.min_sampling_std)

    @override(DenoisingChainAPI)
    def pair_logp(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor) -> Tensor:
        cfg = self.dppo_config
        i = (len(self.timesteps) - cfg.ft_denoising_steps) + k.long()
        mean, std = self._step_mean_std(
            self.actor_ft, obs.float(), x_prev, i, deterministic=False, floor=cfg.min_logprob_std
        )
        return transition_logprob(
            x_next, mean, std, clamp=cfg.logprob_clamp, act_steps=self.policy_config.act_steps
        )

    # ---------------------------------------------------------------- forwards
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.sample(batch[Columns.OBS], deterministic=True)
        return {Columns.ACTIONS: out["actions"]}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.sample(batch[Columns.OBS], deterministic=False)
        return {
            Columns.ACTIONS: out["actions"],
            Columns.ACTION_LOGP: out["logp"].sum(-1),
            C.CHAINS: out["chain"],
            C.CHAIN_LOGP: out["logp"],
        }

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The DPPO learner evaluates (env step, denoising step) pairs via pair_logp and
        # compute_values; nothing to precompute here.
        return {}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Tensor:
        return self.critic(batch[Columns.OBS].float()).squeeze(-1)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic"]
