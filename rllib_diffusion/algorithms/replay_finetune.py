"""Online off-policy fine-tuning of a pretrained denoiser from an empty replay, above the
families: the DPPO paper's DQL (``diffusion_ql/finetune.py``), IDQL
(``idql/finetune.py``), DIPO and QSM (``qgrad/``) baselines,
``rllib-diffusion finetune --algo dql|idql|dipo|qsm``.

DiffusionBC checkpoint → its EMA denoiser loaded into the algorithm's actor, fresh
critics → each iteration: exploring rollouts from the EnvRunners (the algorithm's
exploration forward) appended to a FIFO :class:`~rllib_diffusion.algorithms.replay.
TransitionReplay` of single decisions (one executed action chunk each), then
``decisions / minibatch_size × replay_ratio`` gradient steps on uniform minibatches; the
actor moves once ``critic_warmup_decisions`` decisions were sampled before the
iteration (the reference's ``n_critic_warmup_itr``; ``critic_warmup_replay_ratio`` and
``critic_warmup_tau``, off by default, give the warm-up its own replay ratio and target
rate, the issue-15 test of a non-myopic critic). Checkpoints hold the replay and
the counters, so ``--resume`` continues exactly.

The reference's training loops (irom-lab/dppo ``agent/finetune/train_{dql,idql,dipo,
qsm}_diffusion_agent.py``) are the same loop: this module is the loop, the families bring
their config defaults, module, learner and the actor's rows of a gradient step
(:meth:`ReplayFinetuneMixin.actor_rows`: the critic's minibatch; DIPO's improved actions
of a second one) and what their progress lines add (``PROGRESS_OWN``). Run family of
all four: :class:`ReplayFinetuneFamily` (the shared
:class:`~rllib_diffusion.algorithms.denoiser_finetune.DenoiserFinetuneFamily`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import LEARNER_RESULTS

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.denoiser_finetune import (
    OWN_KEYS,
    DenoiserFinetuneConfigMixin,
    DenoiserFinetuneFamily,
)
from rllib_diffusion.algorithms.env_step_budget import EnvStepBudgetMixin, LastIteration
from rllib_diffusion.algorithms.finetune_run import FinetuneSettings
from rllib_diffusion.algorithms.replay import TransitionReplay
from rllib_diffusion.algorithms.synthetic_replay import SynthEROnlineConfigMixin, online_synther
from rllib_diffusion.knobs import set_provided

#: Batch columns of the actor's rows (present only once the critic has warmed up).
ACTOR_OBS, ACTOR_ACTIONS = "finetune_actor_obs", "finetune_actor_actions"
#: Algorithm-state keys (checkpointed): the decision counter and the replay.
COUNTERS_STATE, REPLAY_STATE = "replay_finetune_counters", "replay_finetune_replay"


class ReplayFinetuneConfigMixin(SynthEROnlineConfigMixin, DenoiserFinetuneConfigMixin):
    """Knobs of every algorithm that fine-tunes the pretrained denoiser from a replay of
    its own rollouts (online DQL/IDQL here, DIPO/QSM in ``qgrad/``; the run knobs:
    :class:`DenoiserFinetuneConfigMixin`); the host sets its official defaults
    (``buffer_decisions``, ``replay_ratio``, ...). Host:
    ``<Algo>Config(<Family knobs>, ReplayFinetuneConfigMixin, AlgorithmConfig)``. Online
    SynthER's knobs: :class:`SynthEROnlineConfigMixin` (off by default)."""

    RLLIB_KNOBS = {
        "gamma": "discount per decision (one executed action chunk) of the TD targets.",
        "minibatch_size": "rows per gradient step of critics and actor (reference 1000).",
    }

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.actor_lr = 1e-4
        self.critic_lr = 1e-3
        self.tau = 0.005
        self.reward_scale = 0.01
        self.buffer_decisions = 1_000_000
        self.replay_ratio = 16.0
        self.critic_warmup_decisions = 80_000
        self.critic_warmup_replay_ratio = None
        self.critic_warmup_tau = None

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        actor_lr: float | None = NotProvided,
        critic_lr: float | None = NotProvided,
        tau: float | None = NotProvided,
        reward_scale: float | None = NotProvided,
        buffer_decisions: int | None = NotProvided,
        replay_ratio: float | None = NotProvided,
        critic_warmup_decisions: int | None = NotProvided,
        critic_warmup_replay_ratio: float | None = NotProvided,
        critic_warmup_tau: float | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        actor_lr: Adam learning rate of the denoiser (reference 1e-4, constant).
        critic_lr: Adam learning rate of the critics (reference 1e-3, constant).
        tau: Polyak rate of the target critics (and DIPO's target actor) per gradient
            step (each algorithm's default is its reference value).
        reward_scale: factor on the rewards of the TD targets (reference 0.01).
        buffer_decisions: decisions the FIFO replay holds (each algorithm's default is
            its reference value; IDQL's is 25,000 vector steps × 40 envs).
        replay_ratio: gradient steps per iteration = decisions sampled / minibatch_size ×
            replay_ratio (each algorithm's default is its reference value).
        critic_warmup_decisions: decisions sampled before the actor first moves
            (reference 5 iterations, the first evaluation-only: 4 × 20,000).
        critic_warmup_replay_ratio: replay_ratio of the warm-up's iterations (critic
            steps only); None (default, the reference's): replay_ratio.
        critic_warmup_tau: Polyak rate of the critic targets in the warm-up's gradient
            steps (those without actor rows; DQL, DIPO, QSM); None (default, the
            reference's): tau.
        **kwargs: the run knobs (``pretrained_checkpoint``) and RLlib's ``training()``
            args (``gamma``, ``minibatch_size``, ...).
        """
        given = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        super().training(**kwargs)
        set_provided(self, given)
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        for name in ("actor_lr", "critic_lr", "reward_scale", "replay_ratio"):
            if not getattr(self, name) > 0:
                self._value_error(f"{name} must be > 0, got {getattr(self, name)}.")
        if not (0 < self.tau <= 1 and 0 < self.gamma <= 1):
            self._value_error(f"tau and gamma must be in (0, 1], got {self.tau}, {self.gamma}.")
        if self.buffer_decisions < 1 or self.minibatch_size is None or self.minibatch_size < 1:
            self._value_error(
                f"buffer_decisions and minibatch_size must be >= 1, got "
                f"{self.buffer_decisions} and {self.minibatch_size}."
            )
        if self.critic_warmup_decisions < 0:
            self._value_error(
                f"critic_warmup_decisions must be >= 0, got {self.critic_warmup_decisions}."
            )
        self.validate_warmup_knobs()
        if (
            self.synther_enabled
            and self.algo_class.actor_rows is not ReplayFinetuneMixin.actor_rows
        ):
            self._value_error(
                f"--synther-real-ratio: {self.algo_class.__name__}'s actor trains on replay "
                "rows it rewrites, which synthetic rows cannot be; use dql, idql or qsm, or "
                "drop --synther-real-ratio."
            )

    def validate_warmup_knobs(self) -> None:
        """One-line errors for ``critic_warmup_replay_ratio`` and ``critic_warmup_tau``
        (IDQL's learner has no warm-up tau)."""
        from rllib_diffusion.algorithms.replay_finetune_learner import (
            ReplayFinetuneLearnerMixin,
        )

        ratio, tau = self.critic_warmup_replay_ratio, self.critic_warmup_tau
        if ratio is not None and not ratio > 0:
            self._value_error(f"critic_warmup_replay_ratio must be > 0, got {ratio}.")
        if tau is not None and not 0 < tau <= 1:
            self._value_error(f"critic_warmup_tau must be in (0, 1], got {tau}.")
        learner = self.get_default_learner_class()
        if tau is not None and not issubclass(learner, ReplayFinetuneLearnerMixin):
            self._value_error(
                f"critic_warmup_tau: {self.algo_class.__name__}'s learner has no warm-up "
                "Polyak rate; use dql, dipo or qsm, or drop it."
            )


class ReplayFinetuneMixin(EnvStepBudgetMixin):
    """Replay, warm-up and the per-step loop. Host: ``<Algo>(ReplayFinetuneMixin,
    Algorithm)``; its module has ``load_pretrained_denoiser``.

    ``STATE_ALIASES``: algorithm-state keys a host's older checkpoints used for the
    counters and the replay (old key → :data:`COUNTERS_STATE` / :data:`REPLAY_STATE`).
    """

    STATE_ALIASES: dict[str, str] = {}
    #: ``(label, key, format)`` of the values a host logs by :meth:`log_own` beyond the
    #: loop's (DIPO's action shift): its progress lines carry and print them.
    PROGRESS_OWN: tuple[tuple[str, str, str], ...] = ()

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        from rllib_diffusion.algorithms.denoiser_finetune import load_pretrained_into

        super().setup(config)
        self._decisions_lifetime = 0
        self._budget_ends = False  # the coming iteration is the budget's last
        self.replay = TransitionReplay(self.config.buffer_decisions, seed=self.config.seed)
        self.synther = online_synther(self.config) if self.config.synther_enabled else None
        if self.config.pretrained_checkpoint:
            load_pretrained_into(self, self.config.pretrained_checkpoint)

    @override(Algorithm)
    def training_step(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        actor_on = self._decisions_lifetime >= cfg.critic_warmup_decisions
        last, self._budget_ends = self._budget_ends, False
        added = self.replay.add(self.sample_episodes())
        self._decisions_lifetime += added
        t1 = time.perf_counter()
        synther = self.synther_step(last)  # its retrain counts as learning time
        steps = int(added / cfg.minibatch_size * self.replay_ratio_now(actor_on))
        for _ in range(steps):
            batch = self.minibatch(cfg.minibatch_size)
            if actor_on:
                batch |= self.actor_rows(batch)
            results = self.learner_group.update(
                batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, cfg.minibatch_size)
            )
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        t2 = time.perf_counter()
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True
        )
        values = {
            M.SAMPLE_SECONDS: t1 - t0,
            M.LEARN_SECONDS: t2 - t1,
            M.SYNC_SECONDS: time.perf_counter() - t2,
            M.ENV_STEPS: self._env_steps_lifetime,
            M.BUFFER_DECISIONS: len(self.replay),
            M.TRAINED_DECISIONS: steps * cfg.minibatch_size if actor_on else 0,
            **synther,
        }
        for key, value in values.items():
            self.log_own(key, value)

    def replay_ratio_now(self, actor_on: bool) -> float:
        """This iteration's replay ratio: ``critic_warmup_replay_ratio`` in the warm-up
        (when set), else ``replay_ratio``."""
        warmup = self.config.critic_warmup_replay_ratio
        return self.config.replay_ratio if actor_on or warmup is None else warmup

    def limit_next_iteration(self, cap: LastIteration | None) -> None:
        """As :class:`EnvStepBudgetMixin`'s, and remember whether the coming iteration is
        the budget's last (a cap is set only for it), for :meth:`synther_step`."""
        super().limit_next_iteration(cap)
        self._budget_ends = cap is not None

    def synther_step(self, last_iteration: bool = False) -> dict[str, float]:
        """Online SynthER's retrain on the replay's current rows when due (none when off;
        skipped in the run's ``last_iteration``, whose pool would serve it alone); its
        progress values."""
        if self.synther is None:
            return {}
        held = {k: v[: len(self.replay)] for k, v in self.replay.data.items()}
        return self.synther.maybe_retrain(
            held, self._env_steps_lifetime, last_iteration=last_iteration
        )

    def minibatch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A gradient step's rows: uniform from the replay, mixed with online SynthER's
        pool at its exact ratio when on."""
        if self.synther is None:
            return self.replay.sample(batch_size)
        return self.synther.minibatch(self.replay, batch_size)

    def actor_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The actor's rows of a gradient step (:data:`ACTOR_OBS`,
        :data:`ACTOR_ACTIONS`): the critic's minibatch itself (the reference updates
        both on one minibatch); DIPO overrides it."""
        return {ACTOR_OBS: batch[Columns.OBS], ACTOR_ACTIONS: batch[Columns.ACTIONS]}

    def log_own(self, key: str, value: float) -> None:
        """Log ``value`` in this loop's metrics namespace (what a progress line reads)."""
        self.metrics.log_value((M.REPLAY_FINETUNE_NAMESPACE, key), value, window=1)

    @override(Algorithm)
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[COUNTERS_STATE] = (self._env_steps_lifetime, self._decisions_lifetime)
        state[REPLAY_STATE] = self.replay.get_state()
        return state

    @override(Algorithm)
    def set_state(self, state: dict[str, Any]) -> None:
        state = {self.STATE_ALIASES.get(k, k): v for k, v in state.items()}
        super().set_state(state)
        if COUNTERS_STATE in state:
            self._env_steps_lifetime, self._decisions_lifetime = state[COUNTERS_STATE]
        if REPLAY_STATE in state:
            self.replay.set_state(state[REPLAY_STATE])


#: Online SynthER's values a printed line shows (when on), and those a line only carries.
SYNTHER_SHOWN = (
    ("pool", M.SYNTHER_POOL_ROWS, ".0f"),
    ("gen loss", M.SYNTHER_GENERATOR_LOSS, ".3g"),
)
SYNTHER_CARRIED = (M.SYNTHER_RETRAIN_STEP, M.SYNTHER_SECONDS, M.SYNTHER_SKIPPED_STEP)


class ReplayFinetuneFamily(DenoiserFinetuneFamily):
    """DQL, IDQL, DIPO or QSM (``s.algo``) fine-tuning on the run loop (see the module
    doc). A progress line carries the loop's values, the algorithm's
    ``PROGRESS_OWN`` and those of :attr:`learner_keys` its learner logs; the printed
    line shows the algorithm's ``PROGRESS_OWN`` before the buffer size."""

    namespace = M.REPLAY_FINETUNE_NAMESPACE
    learner_keys = {
        "actor_loss": M.ACTOR_LOSS,
        "critic_loss": M.CRITIC_LOSS,
        "bc_loss": M.BC_LOSS,  # DQL
        "q_loss": M.Q_LOSS,  # DQL
        "value_loss": M.VALUE_LOSS,  # IDQL
        "q_mean": M.Q_MEAN,
        "value_mean": M.VALUE_MEAN,  # IDQL
        "q_grad_norm": M.Q_GRAD_NORM,  # QSM
    }

    def __init__(self, s: FinetuneSettings) -> None:
        super().__init__(s)
        own = self.config.algo_class.PROGRESS_OWN
        if self.config.synther_enabled:
            own = (*own, *SYNTHER_SHOWN)
        self.own_keys = (*OWN_KEYS, *(key for _, key, _ in own), *SYNTHER_CARRIED)
        self.shown = (
            ("actor loss", "actor_loss", ".3g"),
            ("critic loss", "critic_loss", ".3g"),
            ("Q", "q_mean", ".3g"),
            *own,
            ("buffer", M.BUFFER_DECISIONS, ".0f"),
        )

    def save_files(self, algo: Any, directory: Any) -> dict[str, Any]:
        """Online SynthER's generator and pool (nothing when off or before a retrain)."""
        return {} if algo.synther is None else algo.synther.save(directory)

    def restore(self, algo: Any, ckpt_dir: Any) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import read_checkpoint_meta

        resumed = super().restore(algo, ckpt_dir)
        if algo.synther is None:
            return resumed
        record = read_checkpoint_meta(ckpt_dir).synthetic_pool
        return resumed | algo.synther.restore(ckpt_dir, record, algo.env_steps_lifetime)

    def acting(self) -> str:
        """DIPO acts with its Polyak target copy of the denoiser (``act_with_target``)."""
        return "actor_target" if self.config.model_config.get("act_with_target") else "actor"
