"""FQL as an RLlib offline algorithm: its own config, module and learner; the data
path, targets and online phase are the family's (``offline_q``)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.offline_q import (
    OfflineQConfigMixin,
    OfflineQMixin,
    set_provided,
)


class FQLConfig(OfflineQConfigMixin, BCConfig):
    """FQL knobs: ``alpha`` (distillation weight), ``normalize_q_loss``. No EMA actor."""

    ALGO_NAME = "fql"
    #: Model flags FQL reads (it samples no candidates: ``num_candidates`` is not one).
    MODEL_KNOBS = ("denoising_steps", "hidden_dims")

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or FQL)
        self.alpha = 10.0
        self.normalize_q_loss = True

    @override(BCConfig)
    def training(
        self,
        *,
        alpha: float | None = NotProvided,
        normalize_q_loss: bool | None = NotProvided,
        **kwargs: Any,
    ) -> FQLConfig:
        """Args:
        alpha: weight α of the distillation term toward the BC flow's Euler solution
            (tune per task, as the paper does).
        normalize_q_loss: divide the Q term by stopgrad(mean |Q|).
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(self, {"alpha": alpha, "normalize_q_loss": normalize_q_loss})
        return self

    @classmethod
    def default_model_config(
        cls,
        obs_dim: int,
        action_dim: int,
        *,
        denoising_steps: int = 5,
        hidden_dims: tuple[int, ...] | None = None,
        env_id: str | None = None,
    ):
        """FQL's networks (the paper's 4×512 MLPs unless ``hidden_dims`` sizes them all);
        the BC flow takes ``2 × denoising_steps`` Euler steps."""
        from rllib_diffusion.algorithms.fql.fql_rl_module import FQLModelConfig

        nets = (
            {}
            if hidden_dims is None
            else dict.fromkeys(("hidden_dims", "critic_hidden_dims"), hidden_dims)
        )
        return FQLModelConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            flow_steps=denoising_steps * 2,
            env_id=env_id,
            **nets,
        )

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.fql.fql_rl_module import FQLModule

        return RLModuleSpec(module_class=FQLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.fql.fql_learner import FQLTorchLearner

        return FQLTorchLearner

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if self.alpha < 0:
            self._value_error(f"alpha must be >= 0, got {self.alpha}.")


class FQL(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> FQLConfig:
        return FQLConfig()
