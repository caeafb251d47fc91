"""Training a denoiser by regression, shared above the families: the learner of
diffusion behaviour cloning and of the SynthER generator (denoising or flow-matching MSE,
AdamW, EMA per gradient step), the config mixin of its knobs, and the learning-rate
schedules of offline runs in RLlib's units."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin, PrecisionConfigMixin
from rllib_diffusion.algorithms.window_prelearner import (
    LIGHT_PRELEARNER_KWARGS,
    SHUFFLED_ITER_KWARGS,
)
from rllib_diffusion.diffusion import ema_step_
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET
from rllib_diffusion.utils.optim import adam, set_lr


def step_lr(schedule: list, step: int, samples_per_step: float) -> float:
    """A piecewise-linear ``[[samples, lr], ...]`` schedule (RLlib's form) at gradient
    step ``step``: ``lr = interp(step · samples_per_step)``."""
    xs, ys = zip(*schedule)
    return float(np.interp(step * samples_per_step, xs, ys))


def samples_per_gradient_step(config: Any) -> float:
    """RLlib's sample counter per gradient step of this offline config."""
    return samples_per_step(
        config.train_batch_size_per_learner,
        config.dataset_num_iters_per_learner or 1,
        config.num_learners,
    )


class DiffusionBCTorchLearner(MixedPrecisionMixin, SkipNonFiniteStepsMixin, TorchLearner):
    """MSE between predicted and true noise (or velocity); AdamW; EMA per gradient step."""

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        params = self.get_parameters(module.net)
        optimizer = adam(params, decoupled=True, weight_decay=config.weight_decay)
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


class DenoiserTrainingConfigMixin(PrecisionConfigMixin):
    """AdamW weight decay and the EMA schedule of a denoiser trained by
    :class:`DiffusionBCTorchLearner`
    (diffusion BC, the SynthER generator). Host: ``<Algo>Config(DenoiserTrainingConfigMixin,
    BCConfig)``."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.weight_decay = 1e-6
        # NaN/inf gradients skip the optimizer's step, checked with one sync per optimizer
        # (SkipNonFiniteStepsMixin) instead of RLlib's two per parameter.
        self.torch_skip_nan_gradients = True
        self.ema_decay = 0.995
        self.ema_update_every = 10
        self.ema_start = 1000
        # Offline reading: 100 gradient steps per iteration, shuffled light pre-learners.
        self.dataset_num_iters_per_learner = 100
        self.iter_batches_kwargs = dict(SHUFFLED_ITER_KWARGS)
        self.map_batches_kwargs = dict(LIGHT_PRELEARNER_KWARGS)

    def get_default_learner_class(self):
        return DiffusionBCTorchLearner

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # The denoiser's model config is complete by itself.
        return {}

    @override(BCConfig)
    def training(
        self,
        *,
        weight_decay: float | None = NotProvided,
        ema_decay: float | None = NotProvided,
        ema_update_every: int | None = NotProvided,
        ema_start: int | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        weight_decay: AdamW weight decay.
        ema_decay: decay of the EMA weights used for acting.
        ema_update_every: gradient steps between EMA updates.
        ema_start: gradient steps during which the EMA copy simply tracks the weights.
        **kwargs: RLlib's ``training()`` args (``lr`` may be a schedule, see
            :func:`cosine_lr_schedule`; ``train_batch_size_per_learner``, ``grad_clip`` ...).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "weight_decay": weight_decay,
                "ema_decay": ema_decay,
                "ema_update_every": ema_update_every,
                "ema_start": ema_start,
            },
        )
        return self

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.ema_decay < 1.0:
            self._value_error(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.ema_update_every < 1:
            self._value_error(f"ema_update_every must be >= 1, got {self.ema_update_every}.")
        if self.ema_start < 0:
            self._value_error(f"ema_start must be >= 0, got {self.ema_start}.")
        if self.weight_decay < 0:
            self._value_error(f"weight_decay must be >= 0, got {self.weight_decay}.")


def cosine_lr_schedule(
    lr: float, lr_end: float, total_samples: int, warmup_samples: int = 0, points: int = 32
) -> list[list[float]]:
    """Piecewise-linear cosine decay (with linear warm-up) in RLlib's ``lr`` schedule form.

    RLlib schedules are indexed by its lifetime sample counter; offline runs give the
    totals in its units (:func:`samples_per_step`). The diffusion BC learner
    reads the same schedule once per gradient step (RLlib: once per iteration).
    """
    import math

    sched: list[list[float]] = []
    if warmup_samples > 0:
        sched.append([0, lr * 0.01])
    decay = max(total_samples - warmup_samples, 1)
    for i in range(points + 1):
        frac = i / points
        value = lr_end + 0.5 * (lr - lr_end) * (1.0 + math.cos(math.pi * frac))
        sched.append([int(warmup_samples + frac * decay), value])
    return sched


def samples_per_step(batch_size: int, steps_per_iteration: int, num_learners: int = 0) -> float:
    """How far RLlib's lifetime sample counter, which indexes ``lr`` schedules, moves per
    gradient step of an offline run. RLlib's offline ``training_step`` adds one batch per
    learner per *iteration*, however many gradient steps the iteration makes, so a
    schedule sized in gradient steps × batch would run ``steps_per_iteration`` times too
    slowly."""
    return batch_size * max(1, num_learners) / steps_per_iteration
