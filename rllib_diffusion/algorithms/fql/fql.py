"""FQL as an RLlib offline algorithm (shares Diffusion-QL's data path and targets)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQL, DiffusionQLConfig


class FQLConfig(DiffusionQLConfig):
    """FQL knobs: ``alpha`` (distillation weight), ``normalize_q_loss``."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or FQL)
        self.alpha = 10.0
        self.normalize_q_loss = True
        self.eta = 0.0  # unused by FQL

    @override(DiffusionQLConfig)
    def training(
        self,
        *,
        alpha: float | None = NotProvided,
        normalize_q_loss: bool | None = NotProvided,
        **kwargs: Any,
    ) -> FQLConfig:
        """Args:
        alpha: weight of the distillation term toward the BC flow's Euler solution.
        normalize_q_loss: divide the Q term by stopgrad(mean |Q|).
        **kwargs: ``DiffusionQLConfig.training`` args.
        """
        super().training(**kwargs)
        if alpha is not NotProvided:
            self.alpha = alpha
        if normalize_q_loss is not NotProvided:
            self.normalize_q_loss = normalize_q_loss
        return self

    @override(DiffusionQLConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.fql.fql_rl_module import FQLModule

        return RLModuleSpec(module_class=FQLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.fql.fql_learner import FQLTorchLearner

        return FQLTorchLearner

    @override(DiffusionQLConfig)
    def validate(self) -> None:
        super().validate()
        if self.alpha < 0:
            self._value_error(f"alpha must be >= 0, got {self.alpha}.")


class FQL(DiffusionQL):
    @classmethod
    @override(DiffusionQL)
    def get_default_config(cls) -> FQLConfig:
        return FQLConfig()
