"""Small API mixins that learners require from RLModules (``rl_module_required_apis``)."""

from __future__ import annotations

import abc

from torch import Tensor


class DenoisingChainAPI(abc.ABC):
    """An RLModule whose action is the end of a denoising chain with per-step log-probs.

    Glossary: B batch, K_ft fine-tuned denoising steps, Ta action horizon, Da action dim.
    """

    @abc.abstractmethod
    def pair_logp(self, obs: Tensor, x_prev: Tensor, x_next: Tensor, k: Tensor) -> Tensor:
        """Log-prob ``(B,)`` of denoising transitions ``x_prev -> x_next`` ``(B, Ta, Da)``.

        ``k`` ``(B,)`` long indexes the fine-tuned step (0 = first fine-tuned step); the
        log-prob is the mean over executed action rows and action dims (DPPO.md).
        """

    @property
    @abc.abstractmethod
    def ft_denoising_steps(self) -> int:
        """K_ft, number of denoising steps that are RL actions."""
