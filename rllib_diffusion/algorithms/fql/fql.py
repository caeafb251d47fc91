"""FQL as an RLlib offline algorithm: its own config, module and learner; the data
path, targets and online phase are the family's (``offline_q``)."""

from __future__ import annotations

from typing import Any, Literal

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.offline_q import (
    OfflineQConfigMixin,
    OfflineQMixin,
)
from rllib_diffusion.knobs import set_provided


class FQLConfig(OfflineQConfigMixin, BCConfig):
    """FQL knobs: ``alpha`` (distillation weight), ``normalize_q_loss``, ``q_agg``. No EMA
    actor.

    Defaults are those of the official code (github.com/seohongpark/fql, ``agents/fql.py``
    ``get_config``): α = 10 with the distillation MSE averaged over action dims,
    ``normalize_q_loss`` off, the TD target from the mean of the two Q heads, 4×512 nets,
    batch 256. The official per-task α (README) covers OGBench and D4RL AntMaze/Adroit
    only, none of the MuJoCo locomotion tasks, so :meth:`task_defaults` sets nothing.
    """

    ALGO_NAME = "fql"
    #: Model flags FQL reads (it samples no candidates: ``num_candidates`` is not one).
    MODEL_KNOBS = ("denoising_steps", "hidden_dims")

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or FQL)
        self.alpha = 10.0
        self.normalize_q_loss = False
        self.q_agg = "mean"

    @override(BCConfig)
    def training(
        self,
        *,
        alpha: float | None = NotProvided,
        normalize_q_loss: bool | None = NotProvided,
        q_agg: Literal["mean", "min"] | None = NotProvided,
        **kwargs: Any,
    ) -> FQLConfig:
        """Args:
        alpha: weight α of the distillation MSE toward the BC flow's Euler solution, a
            mean over batch and action dims as in the official code (the old sum over
            action dims equals α·Da here); tune per task.
        normalize_q_loss: divide the Q term by stopgrad(mean |Q|) (official default:
            off; its README recommends on for new tasks, which makes α scale-free).
        q_agg: how the TD target combines the target Q heads: "mean" (official default)
            or "min" (clipped double Q, used by the official AntMaze and Adroit runs).
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(self, {"alpha": alpha, "normalize_q_loss": normalize_q_loss, "q_agg": q_agg})
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
        if self.q_agg not in ("mean", "min"):
            self._value_error(f"q_agg must be 'mean' or 'min', got {self.q_agg!r}.")


class FQL(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> FQLConfig:
        return FQLConfig()
