"""Small API mixins that learners require from RLModules (``rl_module_required_apis``)."""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn


class DenoisingChainAPI(abc.ABC):
    """An RLModule whose action is the end of a denoising chain with per-step log-probs.

    Glossary: B batch, N env steps, K_ft fine-tuned denoising steps, Ta action horizon,
    Da action dim, U PPO units per env step.

    The chain-PPO learner scores *units*: by default one per fine-tuned transition (DPPO:
    a ratio per denoising step); a module may score whole chains instead (ReinFlow)
    by overriding :meth:`ppo_units`, :attr:`ratio_steps` and :meth:`pair_logp`.
    """

    @abc.abstractmethod
    def pair_logp(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor) -> Tensor:
        """Log-prob ``(B,)`` of the units ``x_prev -> x_next`` (default: denoising
        transitions, ``(B, Ta, Da)`` each).

        ``k`` ``(B,)`` long indexes the unit's ratio step (0 = first fine-tuned step); the
        log-prob is the mean over executed action rows and action dims (DPPO.md).
        """

    @property
    @abc.abstractmethod
    def ft_denoising_steps(self) -> int:
        """K_ft, number of denoising steps that are RL actions."""

    @abc.abstractmethod
    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters the actor optimizer trains (never the frozen base actor)."""

    @abc.abstractmethod
    def exploration_std(self, obs: Tensor, k: Tensor) -> Tensor:
        """Exploration std of ratio step ``k`` ``(B,)`` at ``obs`` (a health metric)."""

    @property
    def ratio_steps(self) -> int:
        """Ratio steps per env step (k = 0..ratio_steps−1): the clip schedule and the
        denoising discount run over these. Default: one per fine-tuned step."""
        return self.ft_denoising_steps

    def ppo_units(
        self, chains: Tensor, chain_logp: Tensor, repeats: int = 1
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The learner's rows from the rollouts' chains ``(N, K_ft+1, Ta, Da)`` and
        per-step log-probs ``(N, K_ft)``: ``(x_prev, x_next, k, old_logp)`` with N·U rows,
        env-step major (row ``i·U + u`` belongs to env step i).

        Default (DPPO): one unit per fine-tuned transition, U = K_ft; ``repeats`` must be 1.
        """
        if repeats != 1:
            raise ValueError(f"per-transition units take no repeats, got {repeats}")
        n, k_ft = chains.shape[0], chains.shape[1] - 1
        return (
            chains[:, :-1].reshape(n * k_ft, *chains.shape[2:]),
            chains[:, 1:].reshape(n * k_ft, *chains.shape[2:]),
            torch.arange(k_ft, device=chains.device).repeat(n),
            chain_logp.reshape(n * k_ft),
        )

    def pair_logp_entropy(
        self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """``(pair_logp, entropy (B,) or None)``; the entropy feeds an entropy bonus.
        Default: no entropy (DPPO has no bonus)."""
        return self.pair_logp(obs, x_prev, x_next, k), None


class TrainPrecisionAPI:
    """An RLModule whose ``forward_train`` runs its networks (the denoiser's ε or velocity
    prediction) and so runs them at the learner's ``precision`` knob: the learner
    (``MixedPrecisionMixin``) sets :attr:`train_precision` when it builds. Acting is
    always fp32."""

    #: ``"fp32"`` or ``"bf16"`` (see :mod:`rllib_diffusion.utils.precision`).
    train_precision: str = "fp32"

    def train_autocast(self, device: torch.device | str):
        """The context ``forward_train`` runs its networks in."""
        from rllib_diffusion.utils.precision import autocast

        return autocast(self.train_precision, device)


class EvalWhenInferenceOnly:
    """An RLModule built ``inference_only`` (EnvRunners, evaluation) starts in eval mode.

    RLlib 2.60's ``TorchRLModule.forward_inference``/``forward_exploration`` run
    ``self.eval()`` and, if the module was in training mode (``nn.Module``'s default at
    build), ``self.train()`` after the forward: two recursive walks over the submodules
    per call (the walks cost ≈ 0.35 ms of a ≈ 7 ms Diffusion-QL action selection,
    ``benchmarks/module_mode.py``). An inference-only module never
    trains (RLlib refuses its ``forward_train``), so eval mode from the start leaves only
    the ``eval()`` walk and gives the same outputs. Host: ``class M(EvalWhenInferenceOnly,
    ..., TorchRLModule)``; the learner's modules (``inference_only=False``) are untouched
    (RLlib's ``forward_train`` puts them in training mode)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.inference_only:
            self.eval()
