"""RLlib's SAC learner with the official DSRL losses, its temperature in the learner
state and DSRL-NA's noise-critic distillation on the official schedule.

Glossary: B batch, H critic heads (2, twin Q).

Losses (official ``ajwagen/dsrl``, SB3's SAC and its ``DSRL`` class), as the small
functions below: soft TD target with the min over target heads, critic loss
``0.5 · mse`` per head (RLlib 2.60's SAC uses a Huber loss with δ = 1, whose gradient
is a sign once |TD error| > 1: while Q climbs to hundreds it carries nothing of how
the target depends on the action), actor ``α log π − Q``, temperature
``−log α · (log π + H̄)`` and, for DSRL-NA, the distillation
``0.5 · Σ_i mse(Q^W_i, Q^A_i)`` of ``update_noise_critic``. DSRL-NA distils on
``noise_critic_grad_steps`` of every ``utd`` gradient steps, spread evenly (the official
runs them as one loop after the ``utd`` SAC steps).

RLlib 2.60's ``SACLearner`` keeps ``log α`` in ``curr_log_alpha`` but leaves it out of
``get_state``: a restored run would start again from ``initial_alpha`` while its
temperature optimiser state is restored. DSRL's resume must continue the temperature.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from ray.rllib.algorithms.sac.sac_learner import (
    LOGPS_KEY,
    QF_LOSS_KEY,
    QF_MEAN_KEY,
    QF_PREDS,
    QF_TWIN_LOSS_KEY,
    QF_TWIN_PREDS,
)
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ALL_MODULES
from torch import Tensor

#: Learner-state key of ``{module_id: log α}``.
LOG_ALPHA = "dsrl_log_alpha"
#: Optimizer of DSRL-NA's noise critic; its loss is also logged under this + "_loss".
NOISE_QF = "noise_qf"
#: Optimizer name (and loss key prefix) of SAC's temperature in RLlib's learner.
ALPHA = "alpha"


def soft_td_target(
    rewards: Tensor,
    terminateds: Tensor,
    q_target_next: Tensor,
    logp_next: Tensor,
    alpha: Tensor,
    discount: Tensor | float,
) -> Tensor:
    """``y = r + γ (1 − d) (min_i Q̄_i(s', a') − α log π(a'|s'))``, detached ``(B,)``.

    ``q_target_next`` is already the min over the target heads."""
    soft_next = q_target_next - alpha.detach() * logp_next
    return (rewards + discount * (1.0 - terminateds.float()) * soft_next).detach()


def critic_loss(q: Tensor, target: Tensor) -> Tensor:
    """One head's ``0.5 · mean_B (Q(s, a) − y)²`` (SB3: ``0.5 · F.mse_loss``)."""
    return 0.5 * (q - target).pow(2).mean()


def actor_loss(logp: Tensor, q_pi: Tensor, alpha: Tensor) -> Tensor:
    """``mean_B (α log π(ã|s) − Q(s, ã))``, ``ã ~ π`` reparameterised, α detached."""
    return (alpha.detach() * logp - q_pi).mean()


def temperature_loss(log_alpha: Tensor, logp: Tensor, target_entropy: float) -> Tensor:
    """``−mean_B log α · (log π(ã|s) + H̄)`` with ``log π`` detached."""
    return -(log_alpha * (logp.detach() + target_entropy)).mean()


def distillation_loss(noise_q: Tensor, env_q: Tensor) -> Tensor:
    """``0.5 · Σ_i mean_B (Q^W_i(s, w) − Q^A_i(s, decode(s, w)))²`` over heads
    ``(H, B)`` each, ``Q^A`` detached."""
    return 0.5 * (noise_q - env_q.detach()).pow(2).mean(dim=1).sum()


def distils_at(step: int, utd: int, noise_critic_grad_steps: int) -> bool:
    """Whether gradient step ``step`` (counted from 0) distils: ``noise_critic_grad_steps``
    of every ``utd`` steps, spread evenly (all of them when it is ``>= utd``)."""
    k = step % utd
    n = min(noise_critic_grad_steps, utd)
    return (k + 1) * n // utd > k * n // utd


class DSRLTorchLearner(SACTorchLearner):
    """``SACTorchLearner`` with the official losses (module doc), ``log α`` in its state
    and DSRL-NA's noise-critic distillation."""

    @override(SACTorchLearner)
    def build(self) -> None:
        super().build()
        self.gradient_steps = 0

    @override(SACTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        super().configure_optimizers_for_module(module_id, config)
        module = self.module[module_id].unwrapped()
        if getattr(module, "noise_aliased", False):
            params = module.noise_critic_parameters()
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=NOISE_QF,
                optimizer=torch.optim.Adam(params, eps=1e-7),
                params=params,
                lr_or_lr_schedule=config.critic_lr,
            )

    @override(SACTorchLearner)
    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """The module doc's losses; each optimiser's goes to ``_temp_losses``, which
        SAC's ``compute_gradients`` reads (one backward per optimiser)."""
        alpha = torch.exp(self.curr_log_alpha[module_id])
        target = soft_td_target(
            batch[Columns.REWARDS],
            batch[Columns.TERMINATEDS],
            fwd_out["q_target_next"],
            fwd_out["logp_next_resampled"],
            alpha,
            config.gamma,
        )
        losses = {QF_LOSS_KEY: critic_loss(fwd_out[QF_PREDS], target)}
        if config.twin_q:
            losses[QF_TWIN_LOSS_KEY] = critic_loss(fwd_out[QF_TWIN_PREDS], target)
        logp = fwd_out["logp_resampled"]
        losses[POLICY_LOSS_KEY] = actor_loss(logp, fwd_out["q_curr"], alpha)
        losses[ALPHA + "_loss"] = temperature_loss(
            self.curr_log_alpha[module_id], logp, self.target_entropy[module_id]
        )
        module = self.module[module_id].unwrapped()
        if getattr(module, "noise_aliased", False) and distils_at(
            self.gradient_steps, config.utd, config.noise_critic_grad_steps
        ):
            pairs = module.distillation_pairs(batch[Columns.OBS])
            losses[NOISE_QF + "_loss"] = distillation_loss(*pairs)
        for name, loss in losses.items():
            self._temp_losses[(module_id, name)] = loss
        self._log(module_id, losses, fwd_out, alpha, logp)
        return sum(losses.values())

    def _log(self, module_id: str, losses: dict, fwd_out: dict, alpha: Tensor, logp: Tensor):
        self.metrics.log_dict(
            {
                **losses,
                "alpha_value": alpha[0],
                LOGPS_KEY: logp.mean(),
                QF_MEAN_KEY: fwd_out[QF_PREDS].mean(),
            },
            key=module_id,
            window=1,
        )

    @override(SACTorchLearner)
    def compute_gradients(self, loss_per_module: dict[str, Any], **kwargs: Any) -> dict:
        """SAC's: one backward per optimiser of its own loss; an optimiser without a
        loss this step (the noise critic between distillation steps) gets no gradients
        (``None``: Adam skips its parameters)."""
        grads = {}
        for module_id in set(loss_per_module) - {ALL_MODULES}:
            for name, optim in self.get_optimizers_for_module(module_id):
                optim.zero_grad(set_to_none=True)
                loss = self._temp_losses.pop((module_id, name + "_loss"), None)
                if loss is None:
                    continue
                loss.backward(retain_graph=True)
                params = self.filter_param_dict_for_optimizer(self._params, optim)
                grads.update({pid: p.grad for pid, p in params.items() if p.grad is not None})
        return grads

    @override(SACTorchLearner)
    def apply_gradients(self, gradients_dict: dict[str, Any]) -> None:
        super().apply_gradients(gradients_dict)
        self.gradient_steps += 1

    @override(SACTorchLearner)
    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(LOG_ALPHA, components, not_components):
            state[LOG_ALPHA] = {
                mid: float(value.detach().cpu().reshape(-1)[0])
                for mid, value in self.curr_log_alpha.items()
            }
        return state

    @override(SACTorchLearner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        for mid, value in state.get(LOG_ALPHA, {}).items():
            # In place: the temperature optimiser holds this tensor.
            self.curr_log_alpha[mid].data.fill_(value)
