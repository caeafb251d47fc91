"""Diffusion behaviour cloning (DPPO's pretraining) as an RLlib offline algorithm.

Data flows through RLlib's offline API: parquet files of normalised
(observation window, action chunk) samples (see :mod:`rllib_diffusion.data.offline`)
are read by ``OfflineData`` with ray.data, reshaped by :class:`WindowPreLearner`, and
fed to the ``LearnerGroup``. Evaluation runs the EMA policy in the real env through
evaluation EnvRunners, wrapped by the action-chunk wrapper.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.bc.window_prelearner import (
    LIGHT_PRELEARNER_KWARGS,
    SHUFFLED_ITER_KWARGS,
    WindowPreLearner,
)
from rllib_diffusion.algorithms.offline_restore import OfflineRestoreMixin


class DenoiserTrainingConfigMixin:
    """AdamW weight decay and the EMA schedule of a denoiser trained by
    :class:`~rllib_diffusion.algorithms.bc.diffusion_bc_learner.DiffusionBCTorchLearner`
    (diffusion BC, the SynthER generator). Host: ``<Algo>Config(DenoiserTrainingConfigMixin,
    BCConfig)``."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.weight_decay = 1e-6
        self.ema_decay = 0.995
        self.ema_update_every = 10
        self.ema_start = 1000

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
        if weight_decay is not NotProvided:
            self.weight_decay = weight_decay
        if ema_decay is not NotProvided:
            self.ema_decay = ema_decay
        if ema_update_every is not NotProvided:
            self.ema_update_every = ema_update_every
        if ema_start is not NotProvided:
            self.ema_start = ema_start
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


class DiffusionBCConfig(DenoiserTrainingConfigMixin, BCConfig):
    """Config of :class:`DiffusionBC`.

    Network and sampler knobs go in ``.rl_module(model_config=DiffusionPolicyConfig(...).to_dict())``;
    the dataset in ``.offline_data(input_=[parquet_dir])`` (use
    :func:`rllib_diffusion.algorithms.bc.diffusion_bc_config_for_dataset` to do both).
    Knobs: :class:`DenoiserTrainingConfigMixin`.
    """

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffusionBC)
        # DPPO's gym pretraining: AdamW, lr 1e-3 (cosine to 1e-4), EMA 0.995 every 10 steps.
        self.lr = 1e-3
        self.train_batch_size_per_learner = 256
        self.prelearner_class = WindowPreLearner
        self.dataset_num_iters_per_learner = 100
        self.iter_batches_kwargs = dict(SHUFFLED_ITER_KWARGS)
        self.map_batches_kwargs = dict(LIGHT_PRELEARNER_KWARGS)

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule

        return RLModuleSpec(module_class=DiffusionPolicyModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.bc.diffusion_bc_learner import DiffusionBCTorchLearner

        return DiffusionBCTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # The diffusion model config is complete by itself.
        return {}


class DiffusionBC(OfflineRestoreMixin, BC):
    """Diffusion BC: MARWIL/BC's offline training step with a denoising loss and EMA."""

    @classmethod
    @override(BC)
    def get_default_config(cls) -> DiffusionBCConfig:
        return DiffusionBCConfig()


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
