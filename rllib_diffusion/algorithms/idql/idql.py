"""IDQL as an RLlib offline algorithm.

``IDQLConfig`` extends ``DiffusionQLConfig`` (same data path, targets, EMA and module)
instead of ``BCConfig`` directly: the two differ only in the learner and a few knobs, and
a second copy of that config would drift.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQL, DiffusionQLConfig


class IDQLConfig(DiffusionQLConfig):
    """IQL critics (expectile τ = 0.7 for locomotion, 0.9 AntMaze) + diffusion BC actor."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or IDQL)
        self.expectile = 0.7
        self.eta = 0.0  # no Q term in IDQL's actor loss

    @override(DiffusionQLConfig)
    def training(self, *, expectile: float | None = NotProvided, **kwargs: Any) -> IDQLConfig:
        """Args:
        expectile: τ of the value function's expectile regression.
        **kwargs: ``DiffusionQLConfig.training`` args.
        """
        super().training(**kwargs)
        if expectile is not NotProvided:
            self.expectile = expectile
        return self

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.idql.idql_learner import IDQLTorchLearner

        return IDQLTorchLearner

    @override(DiffusionQLConfig)
    def validate(self) -> None:
        super().validate()
        if not 0 < self.expectile < 1:
            self._value_error(f"expectile must be in (0, 1), got {self.expectile}.")


class IDQL(DiffusionQL):
    @classmethod
    @override(DiffusionQL)
    def get_default_config(cls) -> IDQLConfig:
        return IDQLConfig()
