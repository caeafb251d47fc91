"""DIPO and QSM (the DPPO paper's action-gradient diffusion baselines).

Both fine-tune a pretrained diffusion policy (a DiffusionBC checkpoint) off-policy from
a FIFO replay of single decisions (one executed action chunk each, rewards times
``reward_scale``), with twin critics Q(s, a) trained on
``y = r + γ(1 − d)·min_i Q'_i(s', a')``, ``a'`` sampled (exploring) from the acting
denoiser, Polyak targets (``tau``). Each iteration samples decisions, then takes
``decisions / minibatch_size × replay_ratio`` gradient steps; the actor moves only once
``critic_warmup_decisions`` decisions were sampled before the iteration.

- **DIPO**: per step, a second minibatch's actions are improved by ``action_gradient_steps``
  Adam steps on ``min(Q1, Q2)`` (``qgrad_learner.improve_actions``), **written back into
  exactly those replay rows**, and the denoiser is trained by plain denoising BC on them.
  It acts with a Polyak target copy of the denoiser.
- **QSM**: per step, the denoiser's ε̂ at the replay actions noised to ``t`` is regressed
  onto ``−M·∇_a Q`` there (``qgrad_learner.qsm_loss``).

Defaults are the reference's Hopper configs (irom-lab/dppo,
``cfg/gym/finetune/hopper-v2/ft_{dipo,qsm}_diffusion_mlp.yaml``; the training loops
``agent/finetune/train_{dipo,qsm}_diffusion_agent.py``). Deviations: DIPO improves the
actions with the critic before this step's critic update (the reference: after it);
the replay stores and the critic sees the whole action chunk (the reference: the
``act_steps`` executed actions, the same with its Hopper horizon = act_steps = 4); the
warm-up counts decisions (reference 5 iterations, the first one evaluation-only: 4 × 20,000).
Checkpoints hold the replay, so ``--resume`` goes on with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.replay_finetune import (
    ACTOR_ACTIONS,
    ACTOR_OBS,
    COUNTERS_STATE,
    REPLAY_STATE,
    ReplayFinetuneConfigMixin,
    ReplayFinetuneMixin,
)
from rllib_diffusion.knobs import set_provided

#: Algorithm names stored in checkpoint metadata.
DIPO_NAME, QSM_NAME = "DIPO", "QSM"

#: Algorithm-state keys of the counters and the replay in checkpoints written before
#: DIPO/QSM ran on the shared loop (``ReplayFinetuneMixin``): still restored.
LEGACY_STATE_KEYS = {"qgrad_counters": COUNTERS_STATE, "qgrad_replay": REPLAY_STATE}


class QGradConfigMixin(ReplayFinetuneConfigMixin):
    """Knobs DIPO and QSM share: the replay fine-tuning ones
    (:class:`~rllib_diffusion.algorithms.replay_finetune.ReplayFinetuneConfigMixin`) and
    their module. Host: ``<Algo>Config(QGradConfigMixin, AlgorithmConfig)``."""

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.qgrad.qgrad_rl_module import QGradModule

        return RLModuleSpec(module_class=QGradModule)


class DIPOConfig(QGradConfigMixin, AlgorithmConfig):
    """Config of :class:`DIPO` (reference Hopper defaults; see the module doc)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DIPO)
        self.buffer_decisions = 1_000_000
        self.replay_ratio = 64.0
        self.action_lr = 1e-4
        self.action_gradient_steps = 10
        self.action_grad_norm_per_dim = 0.1

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        action_lr: float | None = NotProvided,
        action_gradient_steps: int | None = NotProvided,
        action_grad_norm_per_dim: float | None = NotProvided,
        **kwargs: Any,
    ) -> DIPOConfig:
        """DIPO's knobs (and the shared ones, see ``ReplayFinetuneConfigMixin.training``).

        Args:
            action_lr: Adam step size of the action improvement (reference 1e-4).
            action_gradient_steps: Adam steps per improvement (reference 10).
            action_grad_norm_per_dim: the improvement's gradient (whole minibatch) is
                clipped to norm this × N, N the action chunk's size (reference 0.1).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "action_lr": action_lr,
                "action_gradient_steps": action_gradient_steps,
                "action_grad_norm_per_dim": action_grad_norm_per_dim,
            },
        )
        return self

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.qgrad.qgrad_learner import DIPOTorchLearner

        return DIPOTorchLearner

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        if not (self.action_lr > 0 and self.action_grad_norm_per_dim > 0):
            self._value_error(
                f"action_lr and action_grad_norm_per_dim must be > 0, got "
                f"{self.action_lr} and {self.action_grad_norm_per_dim}."
            )
        if self.action_gradient_steps < 1:
            self._value_error(
                f"action_gradient_steps must be >= 1, got {self.action_gradient_steps}."
            )


class QSMConfig(QGradConfigMixin, AlgorithmConfig):
    """Config of :class:`QSM` (reference Hopper defaults; see the module doc)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or QSM)
        self.buffer_decisions = 25_000
        self.replay_ratio = 16.0
        self.q_grad_coeff = 10.0

    @override(AlgorithmConfig)
    def training(self, *, q_grad_coeff: float | None = NotProvided, **kwargs: Any) -> QSMConfig:
        """QSM's knobs (and the shared ones, see ``ReplayFinetuneConfigMixin.training``).

        Args:
            q_grad_coeff: M of the score target −M·∇_a Q (reference 10).
        """
        super().training(**kwargs)
        set_provided(self, {"q_grad_coeff": q_grad_coeff})
        return self

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.qgrad.qgrad_learner import QSMTorchLearner

        return QSMTorchLearner

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        if not self.q_grad_coeff > 0:
            self._value_error(f"q_grad_coeff must be > 0, got {self.q_grad_coeff}.")


class DIPO(ReplayFinetuneMixin, Algorithm):
    """DIPO: denoising BC on replay actions improved along ∇_a min(Q1, Q2), written back."""

    STATE_ALIASES = LEGACY_STATE_KEYS
    PROGRESS_OWN = (("action shift", M.ACTION_SHIFT, ".3g"),)

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DIPOConfig:
        return DIPOConfig()

    @override(ReplayFinetuneMixin)
    def actor_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A second uniform minibatch, its actions improved by the critic (first learner)
        and written back into exactly those replay rows."""
        from ray.rllib.core.columns import Columns

        idx = self.replay.sample_indices(self.config.minibatch_size)
        rows = self.replay.rows(idx)
        obs, actions = rows[Columns.OBS], rows[Columns.ACTIONS]
        results = self.learner_group.foreach_learner(
            lambda learner: learner.improve_actions(obs, actions)
        )
        improved = np.asarray([r.get() for r in results][0], np.float32)
        self.replay.set_actions(idx, improved)
        shift = float(np.abs(improved - actions.reshape(improved.shape)).mean())
        self.log_own(M.ACTION_SHIFT, shift)
        return {ACTOR_OBS: obs, ACTOR_ACTIONS: improved}


class QSM(ReplayFinetuneMixin, Algorithm):
    """QSM: the denoiser's score matched to the critic's action gradient (actor rows:
    the critic's minibatch, the shared loop's default)."""

    STATE_ALIASES = LEGACY_STATE_KEYS
    # DIPO's progress columns (QSM writes no actions back: its action shift stays n/a).
    PROGRESS_OWN = DIPO.PROGRESS_OWN

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> QSMConfig:
        return QSMConfig()
