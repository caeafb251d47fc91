"""Learner of diffusion behaviour cloning: denoising (or flow-matching) regression + EMA."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.diffusion import ema_step_
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET
from rllib_diffusion.utils.optim import set_lr


def step_lr(schedule: list, step: int, samples_per_step: float) -> float:
    """A piecewise-linear ``[[samples, lr], ...]`` schedule (RLlib's form) at gradient
    step ``step``: ``lr = interp(step · samples_per_step)``."""
    xs, ys = zip(*schedule)
    return float(np.interp(step * samples_per_step, xs, ys))


def samples_per_gradient_step(config: Any) -> float:
    """RLlib's sample counter per gradient step of this offline config."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import samples_per_step

    return samples_per_step(
        config.train_batch_size_per_learner,
        config.dataset_num_iters_per_learner or 1,
        config.num_learners,
    )


class DiffusionBCTorchLearner(TorchLearner):
    """MSE between predicted and true noise (or velocity); AdamW; EMA per gradient step."""

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        params = self.get_parameters(module.net)
        optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)
        self.register_optimizer(
            module_id=module_id,
            optimizer=optimizer,
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        pred, target = fwd_out[PREDICTION], fwd_out[TARGET]
        loss = torch.nn.functional.mse_loss(pred, target)
        self.metrics.log_value((module_id, M.BC_LOSS), loss.detach(), window=1)
        return loss

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict: dict[Any, Any]) -> None:
        # The learning rate and the EMA follow every gradient step (RLlib's
        # after_gradient_based_update runs once per update() call = per iteration).
        for module_id in self.module.keys():
            self._set_step_lr(module_id)
        super().apply_gradients(gradients_dict)
        for module_id in self.module.keys():
            self._update_ema(module_id)

    def _set_step_lr(self, module_id) -> None:
        """The ``lr`` schedule's value at this gradient step (a float ``lr`` stays)."""
        cfg = self.config.get_config_for_module(module_id)
        if not isinstance(cfg.lr, (list, tuple)):
            return
        step = int(self.module[module_id].unwrapped().ema_step)
        lr = step_lr(cfg.lr, step, samples_per_gradient_step(cfg))
        for _, optimizer in self.get_optimizers_for_module(module_id):
            set_lr(optimizer, lr)

    def _update_ema(self, module_id) -> None:
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        module.ema_step += 1
        ema_step_(
            module.ema_net,
            module.net,
            int(module.ema_step),
            decay=cfg.ema_decay,
            start=cfg.ema_start,
            every=cfg.ema_update_every,
        )
