"""RLModule of ReinFlow: a pretrained flow policy with a learned noise net, and a critic V(s).

Glossary: B batch, M learner rows, K Euler steps (all of them are RL actions), Ta action
horizon, Da action dim, Do flattened (normalised) observation dim.

ReinFlow (Zhang et al. 2025) turns the deterministic Euler integration of a flow policy
into a Markov chain by adding Gaussian noise whose std a small network learns:
``x_{k+1} = clip(x_k + v(x_k, t_k, s)·dt) + σ(t_k, s)·ε`` (``noisy_euler_chain``). Each
step's log-density is exact, and the PPO ratio is taken on the whole chain's log-prob,
averaged over the K steps plus the initial noise and over (Ta, Da), then clamped
(``flow_chain_logprob``). ``actor`` is the frozen pretrained velocity net, ``actor_ft``
the fine-tuned copy, ``noise_net`` the std head (as the official ``NoisyFlowMLP``: input
= [velocity net's time embedding (detached), observation]). Inference is the
deterministic flow of ``actor_ft``. The critic is dropped on EnvRunners.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dppo.chain_module import FineTunedChainModule
from rllib_diffusion.diffusion import (
    MLP,
    FlowChain,
    bounded_std,
    chain_logprobs,
    flow_chain_entropy,
    flow_chain_logprob,
    flow_times,
    noisy_euler_chain,
)
from rllib_diffusion.knobs import Positive, PositiveFloat, check_ranges
from rllib_diffusion.modules.apis import DenoisingChainAPI
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig


@dataclass
class ReinFlowModelConfig:
    """Model config of :class:`ReinFlowModule` (a dict in ``model_config``). Defaults are
    the official code's gym locomotion configs (``cfg/gym/finetune/hopper-v2/
    ft_ppo_reflow_mlp.yaml``; Walker2d and HalfCheetah use the same).

    Attributes:
        policy: the pretrained policy's :class:`DiffusionPolicyConfig`; its sampler must
            be "flow" (K = its ``denoising_steps`` Euler steps, all fine-tuned).
        min_std: lower bound of the learned noise std (official ``min_std`` 0.10; Ant 0.08).
        max_std: upper bound of the learned noise std (official ``max_std`` 0.24; Ant 0.16).
        noise_hidden_dims: hidden sizes of the noise net (Tanh MLP; official [64, 64]).
        logprob_clamp: (low, high) clamp of the averaged chain log-prob (official
            ``logprob_min/max`` -1, 1).
        include_init_logprob: count the initial noise x_0 ~ N(0, I) as one more term of
            the chain log-prob and entropy (official ``account_for_initial_stochasticity``).
        mean_clip: clamp of each Euler step's mean (official ``denoised_clip_value`` 1
            with ``clip_intermediate_actions``); None: no clamp.
        noise_clip: clamp of the standard-normal noise of a step (official
            ``randn_clip_value`` 3).
        critic_hidden_dims: residual Mish MLP sizes of the critic V(s).
    """

    policy: dict[str, Any]
    min_std: PositiveFloat = 0.10
    max_std: PositiveFloat = 0.24
    noise_hidden_dims: tuple[Positive, ...] = (64, 64)
    logprob_clamp: tuple[float, float] = (-1.0, 1.0)
    include_init_logprob: bool = True
    mean_clip: PositiveFloat | None = 1.0
    noise_clip: PositiveFloat = 3.0
    critic_hidden_dims: tuple[Positive, ...] = field(default_factory=lambda: (256, 256, 256))

    def __post_init__(self) -> None:
        self.logprob_clamp = tuple(self.logprob_clamp)
        self.noise_hidden_dims = tuple(self.noise_hidden_dims)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        check_ranges(self)
        if len(self.logprob_clamp) != 2 or self.logprob_clamp[0] >= self.logprob_clamp[1]:
            raise ConfigError(
                f"--logprob-clamp takes LOW HIGH with LOW < HIGH, got {self.logprob_clamp}."
            )
        if self.min_std > self.max_std:
            raise ConfigError(
                f"--min-std ({self.min_std}) must not exceed --max-std ({self.max_std})."
            )
        sampler = self.policy_config.sampler
        if sampler != "flow":
            raise ConfigError(
                f"ReinFlow fine-tunes flow policies; the pretrained sampler is {sampler!r}. "
                "Pretrain with `rllib-diffusion pretrain --sampler flow`."
            )

    @property
    def policy_config(self) -> DiffusionPolicyConfig:
        return DiffusionPolicyConfig.from_dict(self.policy, strict=False)

    def describe(self) -> str:
        """The chain, for the run's first line."""
        k = self.policy_config.denoising_steps
        return (
            f"flow {k} Euler steps, all fine-tuned, noise std in "
            f"[{self.min_std:g}, {self.max_std:g}]"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("logprob_clamp", "noise_hidden_dims", "critic_hidden_dims"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReinFlowModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class ReinFlowModule(FineTunedChainModule):
    """Noisy flow policy for ReinFlow. Observation (Do,), action Box [-1, 1] (Ta, Da)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = ReinFlowModelConfig.from_dict(dict(self.model_config or {}))
        pol = cfg.policy_config
        self.reinflow_config, self.policy_config = cfg, pol
        self._build_actors(pol)
        self.noise_net = MLP(
            pol.time_dim + pol.obs_dim,
            pol.horizon * pol.action_dim,
            cfg.noise_hidden_dims,
            activation="tanh",
        )
        # Buffers (checkpointed and synced to EnvRunners with the weights): the learner
        # lowers the upper bound during training (ReinFlow's "learn_decay" schedule).
        self.register_buffer("min_std", torch.tensor(float(cfg.min_std)))
        self.register_buffer("max_std", torch.tensor(float(cfg.max_std)))
        self._build_critic(pol, cfg.critic_hidden_dims)

    @property
    @override(DenoisingChainAPI)
    def ft_denoising_steps(self) -> int:
        return self.policy_config.denoising_steps

    @property
    @override(DenoisingChainAPI)
    def ratio_steps(self) -> int:
        return 1  # one ratio per env step: the whole chain's log-prob

    def set_max_std(self, value: float) -> None:
        """Move the noise std's upper bound (never below ``min_std``)."""
        self.max_std.fill_(max(float(value), float(self.min_std)))

    # ---------------------------------------------------------------- sampling
    def noise_std(self, obs: Tensor, t: Tensor) -> Tensor:
        """σ ``(B, Ta, Da)`` at flow times ``t`` ``(B,)``, in [min_std, max_std]."""
        pol = self.policy_config
        feature = torch.cat([self.actor_ft.time_emb(t).detach(), obs.float()], dim=-1)
        raw = self.noise_net(feature).reshape(obs.shape[0], pol.horizon, pol.action_dim)
        return bounded_std(raw, self.min_std, self.max_std)

    def sample(
        self,
        obs: Tensor,
        *,
        deterministic: bool,
        x_init: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FlowChain:
        """The noisy Euler chain of ``actor_ft`` (deterministic: the plain flow)."""
        pol, cfg = self.policy_config, self.reinflow_config
        obs = obs.float()
        if x_init is None:
            shape = (obs.shape[0], pol.horizon, pol.action_dim)
            x_init = torch.randn(shape, generator=generator, device=obs.device)
        return noisy_euler_chain(
            lambda x, t: self.actor_ft(x, t, obs),
            lambda x, t: self.noise_std(obs, t),
            x_init,
            pol.denoising_steps,
            deterministic=deterministic,
            mean_clip=cfg.mean_clip,
            final_clip=1.0,
            noise_clip=cfg.noise_clip,
            generator=generator,
        )

    def flow_actions(self, obs: Tensor, x_init: Tensor, *, base: bool = False) -> Tensor:
        """Deterministic flow ``(B, Ta, Da)`` of ``actor_ft`` (``base``: the frozen
        ``actor``) from ``x_init``, with the chain's clamps (the W2 BC regulariser's)."""
        net, obs = (self.actor if base else self.actor_ft), obs.float()
        return noisy_euler_chain(
            lambda x, t: net(x, t, obs),
            lambda x, t: torch.ones_like(x),
            x_init,
            self.policy_config.denoising_steps,
            deterministic=True,
            mean_clip=self.reinflow_config.mean_clip,
            final_clip=1.0,
        ).actions

    def chain_logp(self, chain: Tensor, step_logp: Tensor) -> Tensor:
        """Clamped whole-chain log-prob ``(B,)`` from per-step log-probs ``(B, K)``."""
        cfg = self.reinflow_config
        return flow_chain_logprob(
            chain[:, 0], step_logp, include_init=cfg.include_init_logprob, clamp=cfg.logprob_clamp
        )

    def step_means_stds(self, obs: Tensor, x_prev: Tensor) -> tuple[Tensor, Tensor]:
        """Means and stds ``(M, K, Ta, Da)`` of every step of chains whose first K entries
        are ``x_prev`` ``(M, K, Ta, Da)``, under ``actor_ft`` and the noise net (one
        batched forward over all steps)."""
        m, k = x_prev.shape[:2]
        flat = x_prev.reshape(m * k, *x_prev.shape[2:])
        obs_rep = obs.float().repeat_interleave(k, dim=0)
        t = flow_times(k, m, device=flat.device, dtype=flat.dtype).reshape(m * k)
        mean = flat + (1.0 / k) * self.actor_ft(flat, t, obs_rep)  # as noisy_euler_chain
        clip = self.reinflow_config.mean_clip
        if clip is not None:
            mean = mean.clamp(-clip, clip)
        std = self.noise_std(obs_rep, t)
        return mean.reshape(x_prev.shape), std.reshape(x_prev.shape)

    # ------------------------------------------------------- DenoisingChainAPI
    @override(DenoisingChainAPI)
    def ppo_units(
        self, chains: Tensor, chain_logp: Tensor, repeats: int = 1
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One unit per env step (the whole chain), each repeated ``repeats`` times
        (ReinFlow's ``repeat_samples``): ``x_prev = chain[:, :-1]`` and
        ``x_next = chain[:, 1:]`` ``(N·R, K, Ta, Da)``, ``k = 0``, the clamped chain log-prob."""
        old = self.chain_logp(chains, chain_logp)
        return (
            chains[:, :-1].repeat_interleave(repeats, dim=0),
            chains[:, 1:].repeat_interleave(repeats, dim=0),
            torch.zeros(chains.shape[0] * repeats, dtype=torch.long, device=chains.device),
            old.repeat_interleave(repeats, dim=0),
        )

    @override(DenoisingChainAPI)
    def pair_logp(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor) -> Tensor:
        """Clamped whole-chain log-prob ``(M,)`` of chains ``x_prev``/``x_next``
        ``(M, K, Ta, Da)`` (``k`` is unused: one ratio per chain)."""
        return self.pair_logp_entropy(obs, x_prev, x_next, k)[0]

    @override(DenoisingChainAPI)
    def pair_logp_entropy(
        self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor
    ) -> tuple[Tensor, Tensor]:
        means, stds = self.step_means_stds(obs, x_prev)
        chain = torch.cat([x_prev, x_next[:, -1:]], dim=1)
        step_logp = chain_logprobs(chain, means, stds, clamp=None)
        include_init = self.reinflow_config.include_init_logprob
        return self.chain_logp(chain, step_logp), flow_chain_entropy(
            stds, include_init=include_init
        )

    @override(DenoisingChainAPI)
    def actor_parameters(self) -> list[nn.Parameter]:
        return [*self.actor_ft.parameters(), *self.noise_net.parameters()]

    @override(DenoisingChainAPI)
    def exploration_std(self, obs: Tensor, k: Tensor) -> Tensor:
        """Mean noise std ``(B,)`` over the K steps at ``obs``."""
        steps = self.ft_denoising_steps
        times = flow_times(steps, obs.shape[0], device=obs.device)
        stds = [self.noise_std(obs, times[:, j]) for j in range(steps)]
        return torch.stack(stds, dim=1).flatten(1).mean(dim=1)

    # ---------------------------------------------------------------- forwards
    # As DPPO's: the EnvRunner-side forwards restore no_grad (no autograd graph per
    # rollout; the learner recomputes the log-probs).
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            out = self.sample(batch[Columns.OBS], deterministic=True)
        return {Columns.ACTIONS: out.actions}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            out = self.sample(batch[Columns.OBS], deterministic=False)
            step_logp = chain_logprobs(out.chain, out.means, out.stds, clamp=None)
        return {
            Columns.ACTIONS: out.actions,
            Columns.ACTION_LOGP: self.chain_logp(out.chain, step_logp),
            C.CHAINS: out.chain,
            C.CHAIN_LOGP: step_logp,
        }
