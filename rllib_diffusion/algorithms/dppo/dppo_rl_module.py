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

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dppo.chain_module import FineTunedChainModule
from rllib_diffusion.diffusion import (
    NoiseSchedule,
    chain_logprobs,
    posterior_chain,
    reverse_step,
    reverse_step_std,
    reverse_timesteps,
    sample_chain,
    transition_logprob,
)
from rllib_diffusion.knobs import Count, Positive, PositiveFloat, Probability, check_ranges
from rllib_diffusion.modules.apis import DenoisingChainAPI
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig


@dataclass
class DPPOModelConfig:
    """Model config of :class:`DPPOModule` (passed as a dict in ``model_config``).

    Attributes:
        policy: the pretrained policy's :class:`DiffusionPolicyConfig` (dims, K, sampler,
            normalisation); must be "ddpm" or "ddim".
        ft_denoising_steps: K_ft, the last reverse steps that are fine-tuned. None (default)
            follows the sampler as DPPO's configs do: every DDIM step (K_ft = ddim_steps),
            or the last ``min(10, K)`` DDPM steps.
        min_sampling_std: std floor of exploration steps (DPPO: 0.1).
        min_logprob_std: std floor when evaluating log-probs (DPPO: 0.1).
        logprob_clamp: per-element (low, high) clamp of the log-probs.
        ddim_eta: DDIM η of rollouts and their log-probs (1: the reference's; evaluation
            uses 0); refused unless the policy samples with DDIM.
        critic_hidden_dims: residual Mish MLP sizes of the critic V(s).
    """

    policy: dict[str, Any]
    ft_denoising_steps: Count | None = None
    min_sampling_std: PositiveFloat = 0.1
    min_logprob_std: PositiveFloat = 0.1
    logprob_clamp: tuple[float, float] = (-5.0, 2.0)
    ddim_eta: Probability = 1.0
    critic_hidden_dims: tuple[Positive, ...] = field(default_factory=lambda: (256, 256, 256))

    def __post_init__(self) -> None:
        self.logprob_clamp = tuple(self.logprob_clamp)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        check_ranges(self)
        if len(self.logprob_clamp) != 2 or self.logprob_clamp[0] >= self.logprob_clamp[1]:
            raise ConfigError(
                f"--logprob-clamp takes LOW HIGH with LOW < HIGH, got {self.logprob_clamp}."
            )
        pol = self.policy_config
        if pol.sampler not in ("ddpm", "ddim"):
            raise ConfigError(
                f"DPPO fine-tunes DDPM or DDIM policies; the pretrained sampler is "
                f"{pol.sampler!r}. Pretrain with --sampler ddpm or ddim."
            )
        if self.ddim_eta != 1.0 and pol.sampler != "ddim":
            raise ConfigError(
                f"ddim_eta={self.ddim_eta} applies to DDIM sampling only; add --use-ddim or "
                "drop it."
            )
        if self.ft_denoising_steps is None:
            self.ft_denoising_steps = default_ft_denoising_steps(pol)
        if not 1 <= self.ft_denoising_steps <= pol.sampling_steps:
            raise ConfigError(
                f"ft_denoising_steps={self.ft_denoising_steps} (--ft-denoising-steps) must be in "
                f"[1, {pol.sampling_steps}] (the policy's reverse steps); leave it unset to "
                f"fine-tune {default_ft_denoising_steps(pol)} of them."
            )

    @property
    def policy_config(self) -> DiffusionPolicyConfig:
        return DiffusionPolicyConfig.from_dict(self.policy, strict=False)

    def describe(self) -> str:
        """The chain, for the run's first line."""
        pol = self.policy_config
        steps = (
            f"DDIM {pol.sampling_steps} steps (eta {self.ddim_eta:g})"
            if pol.sampler == "ddim"
            else f"DDPM {pol.denoising_steps} steps"
        )
        return f"{steps}, fine-tuning the last {self.ft_denoising_steps}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["logprob_clamp"] = list(self.logprob_clamp)
        d["critic_hidden_dims"] = list(self.critic_hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPPOModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def default_ft_denoising_steps(policy: DiffusionPolicyConfig) -> int:
    """K_ft when not given: all DDIM steps (DPPO's DDIM configs set ft = ddim_steps), else
    the last 10 DDPM steps (DPPO's gym/robomimic setting), at most K."""
    if policy.sampler == "ddim":
        return policy.sampling_steps
    return min(10, policy.sampling_steps)


class DPPOModule(FineTunedChainModule):
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
        self._build_actors(pol)
        self._build_critic(pol, cfg.critic_hidden_dims)

    @property
    def ft_denoising_steps(self) -> int:
        return self.dppo_config.ft_denoising_steps

    # ---------------------------------------------------------------- sampling
    def _eps_fn(self, net, obs: Tensor):
        return lambda x, t: net(x, t, obs)

    def _step_index(self, k: Tensor) -> Tensor:
        """Reverse-step index ``(B,)`` of fine-tuned step ``k`` (0 = first fine-tuned)."""
        return (len(self.timesteps) - self.dppo_config.ft_denoising_steps) + k.long()

    def sample(
        self,
        obs: Tensor,
        *,
        deterministic: bool,
        x_init: Tensor | None = None,
        generator: torch.Generator | None = None,
        base_only: bool = False,
    ) -> dict[str, Tensor]:
        """Run the reverse chain (the core's ``sample_chain``, frozen actor for the first
        S − K_ft steps, fine-tuned actor for the last K_ft).

        Returns ``actions`` (B, Ta, Da), the fine-tuned part of the chain ``chain``
        (B, K_ft+1, Ta, Da) and its per-step log-probs ``logp`` (B, K_ft), evaluated with
        the log-prob std (``max(std, min_logprob_std)``), exactly as ``pair_logp`` does.
        ``base_only`` runs the frozen pretrained actor for every step (the BC
        regulariser's reference chains)."""
        pol, cfg = self.policy_config, self.dppo_config
        obs = obs.float()
        k_ft = cfg.ft_denoising_steps
        if x_init is None:
            shape = (obs.shape[0], pol.horizon, pol.action_dim)
            x_init = torch.randn(shape, generator=generator, device=obs.device)
        out = sample_chain(
            self._eps_fn(self.actor, obs),
            self.schedule,
            tuple(x_init.shape),
            method=pol.sampler,
            ddim_steps=pol.ddim_steps,
            eta=cfg.ddim_eta,
            clip_x0=pol.clip_x0,
            min_std=cfg.min_sampling_std,
            deterministic=deterministic,
            x_init=x_init,
            generator=generator,
            eps_fn_ft=None if base_only else self._eps_fn(self.actor_ft, obs),
            ft_steps=0 if base_only else k_ft,
        )
        logp_std = self._logprob_std(torch.arange(k_ft, device=obs.device))
        logp = chain_logprobs(
            out.chain[:, -k_ft - 1 :],
            out.means[:, -k_ft:],
            logp_std.reshape(1, k_ft, 1, 1).expand_as(out.means[:, -k_ft:]),
            clamp=cfg.logprob_clamp,
            act_steps=pol.act_steps,
        )
        return {"actions": out.actions, "chain": out.chain[:, -k_ft - 1 :], "logp": logp}

    def _step_std(self, k: Tensor, min_std: float) -> Tensor:
        i = self._step_index(k)
        return reverse_step_std(
            self.schedule,
            self.policy_config.sampler,
            self.timesteps[i],
            self.prev_steps[i],
            eta=self.dppo_config.ddim_eta,
            min_std=min_std,
        )

    def _logprob_std(self, k: Tensor) -> Tensor:
        """Std ``(B,)`` under which fine-tuned step ``k`` is scored (its log-prob floor)."""
        return self._step_std(k, self.dppo_config.min_logprob_std)

    def sampling_std(self, k: Tensor) -> Tensor:
        """Exploration std ``(B,)`` of fine-tuned step ``k`` (the step's std with its floor);
        it depends on the timesteps only (and η for DDIM)."""
        return self._step_std(k, self.dppo_config.min_sampling_std)

    def step_mean_std(
        self, obs: Tensor, x_prev: Tensor, k: Tensor, *, net=None
    ) -> tuple[Tensor, Tensor]:
        """Mean and log-prob std ``(B, Ta, Da)`` of fine-tuned step ``k`` from ``x_prev``
        under ``net`` (default: the fine-tuned actor)."""
        cfg, pol = self.dppo_config, self.policy_config
        i = self._step_index(k)
        t, t_prev = self.timesteps[i], self.prev_steps[i]
        eps = (net or self.actor_ft)(x_prev, t, obs.float())
        return reverse_step(
            self.schedule, pol.sampler, x_prev, t, t_prev, eps,
            eta=cfg.ddim_eta, clip_x0=pol.clip_x0, min_std=cfg.min_logprob_std,
        )  # fmt: skip

    @override(DenoisingChainAPI)
    def actor_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.actor_ft.parameters())

    @override(DenoisingChainAPI)
    def exploration_std(self, obs: Tensor, k: Tensor) -> Tensor:
        return self.sampling_std(k)

    @override(DenoisingChainAPI)
    def pair_logp(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor) -> Tensor:
        cfg = self.dppo_config
        mean, std = self.step_mean_std(obs, x_prev, k)
        return transition_logprob(
            x_next, mean, std, clamp=cfg.logprob_clamp, act_steps=self.policy_config.act_steps
        )

    def posterior_chains(
        self, obs: Tensor, actions: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Chains of the K_ft fine-tuned steps that end at given chunks, scored as rollouts.

        The chain is drawn backwards from the forward process conditioned on the chunk
        (the core's ``posterior_chain`` over this module's last K_ft reverse timesteps,
        DDPM posterior or DDIM's ``q_σ`` with ``ddim_eta``); each of its K_ft pairs is
        scored with :meth:`pair_logp` under the current weights, as the learner scores
        rollout pairs. DiffPPO's ``generated`` synthetic actions (no chain of their own).

        Args:
            obs: ``(B, Do)`` observations.
            actions: ``(B, Ta, Da)`` chunks the chains end at (normalised, as the
                policy's chains end).
            generator: RNG of the chains (on ``actions``' device).

        Returns:
            ``forward_exploration``'s columns: ``actions`` (B, Ta, Da), ``chains``
            (B, K_ft+1, Ta, Da), ``chain_logp`` (B, K_ft) and ``action_logp`` (B,).
        """
        k_ft, n = self.ft_denoising_steps, actions.shape[0]
        chain = posterior_chain(
            self.schedule,
            actions.float(),
            self.timesteps[-k_ft:],
            self.prev_steps[-k_ft:],
            method=self.policy_config.sampler,
            eta=self.dppo_config.ddim_eta,
            generator=generator,
        )
        k = torch.arange(k_ft, device=chain.device).repeat(n)
        logp = self.pair_logp(
            obs.float().repeat_interleave(k_ft, dim=0),
            chain[:, :-1].flatten(0, 1),
            chain[:, 1:].flatten(0, 1),
            k,
        ).reshape(n, k_ft)
        return {
            Columns.ACTIONS: chain[:, -1],
            Columns.ACTION_LOGP: logp.sum(-1),
            C.CHAINS: chain,
            C.CHAIN_LOGP: logp,
        }

    # ---------------------------------------------------------------- forwards
    # Overriding the EnvRunner-side forwards drops TorchRLModule's default no_grad, so
    # they restore it: without it the fine-tuned steps build an autograd graph on every
    # rollout. The learner never needs grads from rollout outputs (it recomputes the
    # log-probs in pair_logp); no_grad rather than inference_mode keeps the outputs
    # usable as inputs of a later graph (e.g. chains fed back into pair_logp).
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            out = self.sample(batch[Columns.OBS], deterministic=True)
        return {Columns.ACTIONS: out["actions"]}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            out = self.sample(batch[Columns.OBS], deterministic=False)
        return {
            Columns.ACTIONS: out["actions"],
            Columns.ACTION_LOGP: out["logp"].sum(-1),
            C.CHAINS: out["chain"],
            C.CHAIN_LOGP: out["logp"],
        }
