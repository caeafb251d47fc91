"""IDQL as an RLlib offline algorithm: its own config, module (with the value net V(s))
and learner; the data path, targets and online phase are the family's (``offline_q``)."""

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
)
from rllib_diffusion.knobs import set_provided


class IDQLConfig(EMAActorConfigMixin, OfflineQConfigMixin, BCConfig):
    """IQL critics (expectile τ = 0.7 for locomotion, 0.9 AntMaze) + diffusion BC actor.

    Defaults follow the official code (github.com/philippe-eecs/IDQL: the exported
    ``jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py`` and
    ``launcher/examples/train_ddpm_iql_offline.py``): EMA actor with decay 0.999
    (``actor_tau`` 0.001) after every gradient step from the start; acting by the argmax
    of min-Q over N = 64 samples; two 2×256 ReLU Q heads and a 2×256 ReLU V(s) with a
    LayerNorm on its input. Batch 512 as the official runs (3M steps):
    ``rllib-diffusion offline --algo idql`` uses it unless ``--batch-size`` is given. The
    actor's optimizer is AdamW (optax's default weight decay 1e-4) with its rate
    cosine-decayed to 0 over the run (``decay_steps``, 3M); the critics' plain Adam at
    a constant rate.
    """

    ALGO_NAME = "idql"
    #: IQL's critic, IQL's reward normalisation on locomotion.
    NORMALIZES_LOCOMOTION_REWARDS = True

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or IDQL)
        self.expectile = 0.7
        # The official EMA: target ← 0.999·target + 0.001·actor after every step.
        self.ema_decay = 0.999
        self.ema_update_every = 1
        self.ema_start = 0
        self.train_batch_size_per_learner = 512  # the official runs'
        self.actor_weight_decay = 1e-4
        self.lr_decay_steps = 3_000_000

    @override(BCConfig)
    def training(
        self,
        *,
        expectile: float | None = NotProvided,
        actor_weight_decay: float | None = NotProvided,
        lr_decay_steps: int | None = NotProvided,
        **kwargs: Any,
    ) -> IDQLConfig:
        """Args:
        expectile: τ of the value function's expectile regression (and of the
            expectile weights when acting with ``action_selection="expectile"``).
        actor_weight_decay: decoupled weight decay of the actor's AdamW (official: 1e-4,
            optax's ``adamw`` default); 0: plain Adam (before).
        lr_decay_steps: gradient steps of a cosine decay of actor_lr (only) to 0 in the
            offline phase (official: ``decay_steps``, its run length, 3M); None: a
            constant rate (before). Not applied to a schedule (--lr-end) nor online.
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "expectile": expectile,
                "actor_weight_decay": actor_weight_decay,
                "lr_decay_steps": lr_decay_steps,
            },
        )
        return self

    @classmethod
    def default_model_config(cls, obs_dim: int, action_dim: int, **overrides: Any):
        """IDQL-A's networks (official values): residual LayerNorm actor with dropout
        0.1; 2×256 ReLU Q heads; V(s) 2×256 ReLU with an input LayerNorm; acting by the
        argmax over N = 64 samples, drawn by the official ``ddpm_sampler`` (steps of
        variance β_t, each step's sample clamped to the action bounds, no x̂0 clamp)."""
        from rllib_diffusion.algorithms.idql.idql_rl_module import IDQLModelConfig

        defaults = dict(
            actor_layer_norm=True,
            actor_dropout=0.1,
            actor_residual=True,
            action_selection="argmax",
            num_candidates=64,
            critic_hidden_dims=(256, 256),
            critic_activation="relu",
            value_layer_norm=True,
            sampler_variance="beta",
            sampler_clip="xt",
        )
        return IDQLModelConfig(obs_dim=obs_dim, action_dim=action_dim, **{**defaults, **overrides})

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # RLlib's hook for algorithm settings the module needs: acting's expectile.
        return {"expectile": self.expectile}

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.idql.idql_rl_module import IDQLModule

        return RLModuleSpec(module_class=IDQLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.idql.idql_learner import IDQLTorchLearner

        return IDQLTorchLearner

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if not 0 < self.expectile < 1:
            self._value_error(f"expectile must be in (0, 1), got {self.expectile}.")
        if self.actor_weight_decay < 0:
            self._value_error(f"actor_weight_decay must be >= 0, got {self.actor_weight_decay}.")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            self._value_error(f"lr_decay_steps must be >= 1 or None, got {self.lr_decay_steps}.")


class IDQL(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> IDQLConfig:
        return IDQLConfig()
