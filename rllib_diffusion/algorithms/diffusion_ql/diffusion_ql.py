"""Diffusion-QL as an RLlib offline algorithm (RLlib's BC/MARWIL offline training step).

Data: transition parquet from :func:`rllib_diffusion.data.offline.prepare_transition_data`
read by ``OfflineData`` and mapped by :class:`TransitionPreLearner`.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC
from rllib_diffusion.algorithms.bc.window_prelearner import (
    LIGHT_PRELEARNER_KWARGS,
    SHUFFLED_ITER_KWARGS,
)
from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

#: Per-task hyper-parameters of the paper (OFFLINE.md): η and the grad-norm clip.
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "hopper": {"eta": 1.0, "grad_clip": 9.0},
    "walker2d": {"eta": 1.0, "grad_clip": 1.0},
    "halfcheetah": {"eta": 1.0, "grad_clip": 9.0},
}


def task_defaults(env_id: str | None) -> dict[str, float]:
    """Paper defaults for ``env_id`` (matched by name, e.g. Hopper-v5 → hopper), else {}."""
    name = (env_id or "").split("-")[0].lower()
    return dict(TASK_DEFAULTS.get(name, {}))


class DiffusionQLConfig(BCConfig):
    """Config of :class:`DiffusionQL`. Model knobs: ``DiffusionQLModelConfig`` dict."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffusionQL)
        self.gamma = 0.99
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.eta = 1.0
        self.tau = 0.005
        self.ema_decay = 0.995
        self.ema_update_every = 5
        self.ema_start = 1000
        self.train_batch_size_per_learner = 256
        self.dataset_num_iters_per_learner = 1000
        self.prelearner_class = TransitionPreLearner
        self.map_batches_kwargs = dict(LIGHT_PRELEARNER_KWARGS)
        self.iter_batches_kwargs = dict(SHUFFLED_ITER_KWARGS)

    @override(BCConfig)
    def training(
        self,
        *,
        actor_lr: float | None = NotProvided,
        critic_lr: float | None = NotProvided,
        eta: float | None = NotProvided,
        tau: float | None = NotProvided,
        ema_decay: float | None = NotProvided,
        ema_update_every: int | None = NotProvided,
        ema_start: int | None = NotProvided,
        **kwargs: Any,
    ) -> DiffusionQLConfig:
        """Args:
        actor_lr / critic_lr: Adam learning rates.
        eta: weight of the Q term in the actor loss.
        tau: Polyak rate of the target critics (every gradient step).
        ema_decay / ema_update_every / ema_start: EMA actor schedule (gradient steps).
        **kwargs: RLlib ``training()`` args (``gamma``, ``grad_clip``,
            ``train_batch_size_per_learner`` ...).
        """
        super().training(**kwargs)
        for name, value in (
            ("actor_lr", actor_lr),
            ("critic_lr", critic_lr),
            ("eta", eta),
            ("tau", tau),
            ("ema_decay", ema_decay),
            ("ema_update_every", ema_update_every),
            ("ema_start", ema_start),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

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

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {}

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if not 0 < self.tau <= 1:
            self._value_error(f"tau must be in (0, 1], got {self.tau}.")
        if not 0 <= self.ema_decay < 1:
            self._value_error(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.eta < 0:
            self._value_error(f"eta must be >= 0, got {self.eta}.")


class DiffusionQL(BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> DiffusionQLConfig:
        return DiffusionQLConfig()

    # Offline without evaluation has no EnvRunnerGroup (RLlib 2.60 restore bug).
    restore_from_path = DiffusionBC.restore_from_path
