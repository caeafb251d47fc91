"""Diffusion-QL as an RLlib offline algorithm (RLlib's BC/MARWIL offline training step).

Data: transition parquet from :func:`rllib_diffusion.data.offline.prepare_transition_data`
read by ``OfflineData`` and mapped by ``TransitionPreLearner``. The online phase:
``config.online_phase(enabled=True)`` (see ``offline_q``).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.offline_q import (
    EMAActorConfigMixin,
    OfflineQConfigMixin,
    OfflineQMixin,
    dataset_kind,
    task_name,
)
from rllib_diffusion.knobs import set_provided

#: Per-task hyper-parameters of the paper (OFFLINE.md): η and the grad-norm clip.
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "hopper": {"eta": 1.0, "grad_clip": 9.0},
    "walker2d": {"eta": 1.0, "grad_clip": 1.0},
    "halfcheetah": {"eta": 1.0, "grad_clip": 9.0},
}
#: Per (task, dataset kind): the official code's ``hyperparameters`` table (main.py of
#: Zhendong-Wang/Diffusion-Policies-for-Offline-RL; lr 3e-4, no max-Q backup, raw
#: rewards everywhere on locomotion). Where the kind is unknown, TASK_DEFAULTS (medium).
DATASET_DEFAULTS: dict[tuple[str, str], dict[str, float]] = {
    ("hopper", "medium"): {"eta": 1.0, "grad_clip": 9.0},
    ("hopper", "medium-replay"): {"eta": 1.0, "grad_clip": 4.0},
    ("hopper", "medium-expert"): {"eta": 1.0, "grad_clip": 5.0},
    ("walker2d", "medium"): {"eta": 1.0, "grad_clip": 1.0},
    ("walker2d", "medium-replay"): {"eta": 1.0, "grad_clip": 4.0},
    ("walker2d", "medium-expert"): {"eta": 1.0, "grad_clip": 5.0},
    ("halfcheetah", "medium"): {"eta": 1.0, "grad_clip": 9.0},
    ("halfcheetah", "medium-replay"): {"eta": 1.0, "grad_clip": 2.0},
    ("halfcheetah", "medium-expert"): {"eta": 1.0, "grad_clip": 7.0},
}


class DiffusionQLConfig(EMAActorConfigMixin, OfflineQConfigMixin, BCConfig):
    """Config of :class:`DiffusionQL`. Model knobs: ``DiffusionQLModelConfig`` dict."""

    ALGO_NAME = "diffusion_ql"

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffusionQL)
        self.eta = 1.0
        self.max_q_backup = 0

    @override(BCConfig)
    def training(
        self,
        *,
        eta: float | None = NotProvided,
        max_q_backup: int | None = NotProvided,
        **kwargs: Any,
    ) -> DiffusionQLConfig:
        """Args:
        eta: weight η of the Q term in the actor loss (default: the per-task paper value).
        max_q_backup: N > 0 backs up the max over N sampled next actions (AntMaze: 10).
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(self, {"eta": eta, "max_q_backup": max_q_backup})
        return self

    @classmethod
    def task_defaults(cls, env_id: str | None) -> dict[str, Any]:
        """η and the grad-norm clip of the paper for ``env_id``'s task (else {})."""
        return dict(TASK_DEFAULTS.get(task_name(env_id), {}))

    @classmethod
    def dataset_defaults(cls, env_id: str | None, dataset: str | None) -> dict[str, Any]:
        """η and the grad-norm clip of the official table for the task and data kind."""
        found = DATASET_DEFAULTS.get((task_name(env_id), dataset_kind(dataset) or ""))
        return dict(found) if found is not None else cls.task_defaults(env_id)

    @classmethod
    def default_model_config(cls, obs_dim: int, action_dim: int, **overrides: Any):
        """Diffusion-QL's networks: T = 5 VP DDPM actor, two 3×256 Mish critics."""
        from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import (
            DiffusionQLModelConfig,
        )

        return DiffusionQLModelConfig(obs_dim=obs_dim, action_dim=action_dim, **overrides)

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import (
            DiffusionQLModule,
        )

        return RLModuleSpec(module_class=DiffusionQLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_learner import (
            DiffusionQLTorchLearner,
        )

        return DiffusionQLTorchLearner

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if self.eta < 0:
            self._value_error(f"eta must be >= 0, got {self.eta}.")
        if self.max_q_backup < 0:
            self._value_error(f"max_q_backup must be >= 0, got {self.max_q_backup}.")


class DiffusionQL(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> DiffusionQLConfig:
        return DiffusionQLConfig()
