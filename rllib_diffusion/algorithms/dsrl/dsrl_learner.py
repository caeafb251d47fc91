"""RLlib's SAC learner, with its temperature in the learner state and DSRL-NA's
noise-critic distillation.

RLlib 2.60's ``SACLearner`` keeps ``log α`` in ``curr_log_alpha`` but leaves it out of
``get_state``: a restored run would start again from ``initial_alpha`` while its
temperature optimiser state is restored. DSRL's resume must continue the temperature.

DSRL-NA (``DSRLTorchRLModule`` with ``noise_aliased``): SAC's losses take the module's
NA outputs as they are (critics on env actions, actor on the noise critic); the noise
critic has its own Adam (``critic_lr``) and the loss ``0.5 · Σ_i mse(Q^W_i, Q^A_i)``
of the official ``update_noise_critic``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.dsrl.dsrl_rl_module import NOISE_Q_PREDS, NOISE_Q_TARGETS

#: Learner-state key of ``{module_id: log α}``.
LOG_ALPHA = "dsrl_log_alpha"
#: Optimizer of DSRL-NA's noise critic; its loss is also logged under this + "_loss".
NOISE_QF = "noise_qf"


class DSRLTorchLearner(SACTorchLearner):
    """``SACTorchLearner`` whose state includes ``log α`` per module, and which trains
    DSRL-NA's noise critic."""

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
        total = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        if NOISE_Q_PREDS not in fwd_out:
            return total
        # (heads, B): 0.5 · Σ_heads mean_B (Q^W − Q^A)², Q^A detached.
        diff = fwd_out[NOISE_Q_PREDS] - fwd_out[NOISE_Q_TARGETS].detach()
        distill = 0.5 * diff.pow(2).mean(dim=1).sum()
        # SAC's compute_gradients takes one loss per optimizer from here.
        self._temp_losses[(module_id, NOISE_QF + "_loss")] = distill
        self.metrics.log_value((module_id, NOISE_QF + "_loss"), distill, window=1)
        return total + distill

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
