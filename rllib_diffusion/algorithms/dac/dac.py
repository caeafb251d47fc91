"""DAC as an RLlib offline algorithm (Diffusion-QL's data path, module and targets)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQL, DiffusionQLConfig

#: Per-task LCB coefficient ρ and BC threshold (OFFLINE.md).
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "hopper": {"lcb_rho": 1.5, "bc_threshold": 1.0},
    "walker2d": {"lcb_rho": 1.0, "bc_threshold": 1.0},
    "halfcheetah": {"lcb_rho": 0.0, "bc_threshold": 1.0},
}


class DACConfig(DiffusionQLConfig):
    """DAC knobs: η dual ascent (``eta_lr``, ``bc_threshold``), ``lcb_rho``, target samples."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DAC)
        self.eta_lr = 0.001
        self.bc_threshold = 1.0
        self.lcb_rho = 1.0
        self.num_target_samples = 10
        self.grad_clip = 1.0

    @override(DiffusionQLConfig)
    def training(
        self,
        *,
        eta_lr: float | None = NotProvided,
        bc_threshold: float | None = NotProvided,
        lcb_rho: float | None = NotProvided,
        num_target_samples: int | None = NotProvided,
        **kwargs: Any,
    ) -> DACConfig:
        """Args:
        eta_lr / bc_threshold: dual ascent of η (starts at 1, kept in [0.001, 100]).
        lcb_rho: ρ of the lower confidence bound over critic heads.
        num_target_samples: next actions per state averaged in the critic target.
        **kwargs: ``DiffusionQLConfig.training`` args.
        """
        super().training(**kwargs)
        for name, value in (
            ("eta_lr", eta_lr),
            ("bc_threshold", bc_threshold),
            ("lcb_rho", lcb_rho),
            ("num_target_samples", num_target_samples),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.dac.dac_learner import DACTorchLearner

        return DACTorchLearner

    @override(DiffusionQLConfig)
    def validate(self) -> None:
        super().validate()
        if self.num_target_samples < 1:
            self._value_error(f"num_target_samples must be >= 1, got {self.num_target_samples}.")
        if self.lcb_rho < 0:
            self._value_error(f"lcb_rho must be >= 0, got {self.lcb_rho}.")


class DAC(DiffusionQL):
    @classmethod
    @override(DiffusionQL)
    def get_default_config(cls) -> DACConfig:
        return DACConfig()
