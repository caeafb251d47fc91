"""Config and Algorithm mixins of the offline Q-learning family.

Each algorithm is ``<Algo>Config(<mixins>, BCConfig)`` and ``<Algo>(OfflineQMixin, BC)``:
one class of ours below RLlib's, with the shared knobs and the shared training step
mixed in instead of inherited from a sibling (no ``DACConfig → DiffusionQLConfig``).

Offline: RLlib's BC/MARWIL training step on transition parquet (``OfflineData`` →
:class:`TransitionPreLearner`). Online (``config.online_phase(enabled=True)``): the same
losses on a replay buffer seeded with the offline data and filled by EnvRunners, its
minibatches mixed with online SynthER's pool when ``online_phase(synther=...)`` turns it
on (:class:`~rllib_diffusion.algorithms.synther.online.OnlineSynthER`, found through the
registry: :func:`~rllib_diffusion.algorithms.synthetic_replay.online_synther_of`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rllib_diffusion.algorithms.mixed_precision import PrecisionConfigMixin
from rllib_diffusion.algorithms.offline_restore import OfflineRestoreMixin
from rllib_diffusion.algorithms.online import episode_transitions
from rllib_diffusion.algorithms.replay import TransitionReplay
from rllib_diffusion.algorithms.synthetic_replay import DEFAULTS as SYNTHER_DEFAULTS
from rllib_diffusion.algorithms.synthetic_replay import knob_error, online_synther_of
from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner
from rllib_diffusion.algorithms.window_prelearner import (
    LIGHT_PRELEARNER_KWARGS,
    SHUFFLED_ITER_KWARGS,
)
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.model_config import ConfigError

#: Result key: transitions in the online replay buffer (offline data included).
REPLAY_SIZE = "replay_buffer_size"
#: Online iterations whose sampling returned no transitions (lifetime count).
EMPTY_SAMPLES = "num_empty_samples"
#: Algorithm-state key (checkpointed) of the online phase's replay buffer.
REPLAY_STATE = "online_replay"

#: RLlib ``training()`` knobs every offline Q-learner uses (name → help).
RLLIB_Q_KNOBS = {
    "gamma": "discount factor.",
    "grad_clip": "grad-norm clip of every optimizer (None: no clip; default: the "
    "algorithm's per-task paper value).",
}


def task_name(env_id: str | None) -> str:
    """``Hopper-v5`` → ``hopper``: the key of the papers' per-task tables."""
    return (env_id or "").split("/")[-1].split("-")[0].lower()


#: D4RL-style dataset kinds, most specific first (``medium-replay`` before ``medium``).
DATASET_KINDS = ("medium-replay", "medium-expert", "full-replay", "medium", "expert", "random")


def dataset_kind(source: str | None) -> str | None:
    """The D4RL-style kind a dataset's id or file name states (``mujoco/hopper/medium-v0``
    → ``medium``, ``hopper-medium-replay-v2`` → ``medium-replay``), or None."""
    name = (source or "").lower().replace("_", "-").rsplit("/", 2)
    text = "/".join(name[-2:])
    return next((kind for kind in DATASET_KINDS if kind in text), None)


class OfflineQConfigMixin(PrecisionConfigMixin):
    """Knobs, data path and online phase shared by the offline Q-learners.

    Host: ``<Algo>Config(..., OfflineQConfigMixin, BCConfig)``. Subclasses set
    ``ALGO_NAME`` (for messages) and may override :meth:`task_defaults`.
    """

    ALGO_NAME = "offline_q"
    RLLIB_KNOBS = RLLIB_Q_KNOBS
    #: Network flags of ``rllib-diffusion offline`` this algorithm reads (its
    #: ``default_model_config`` keywords); others are refused.
    MODEL_KNOBS: tuple[str, ...] = ("denoising_steps", "num_candidates", "hidden_dims")
    #: Scale rewards by 1000 / (return range) on MuJoCo locomotion unless told otherwise.
    NORMALIZES_LOCOMOTION_REWARDS = False

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.gamma = 0.99
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.tau = 0.005
        self.reward_scale = 1.0
        self.reward_bias = 0.0
        self.train_batch_size_per_learner = 256
        # NaN/inf gradients skip the optimizer's step, checked with one sync per optimizer
        # (SkipNonFiniteStepsMixin) instead of RLlib's two per parameter.
        self.torch_skip_nan_gradients = True
        self.dataset_num_iters_per_learner = 1000
        self.prelearner_class = TransitionPreLearner
        self.map_batches_kwargs = dict(LIGHT_PRELEARNER_KWARGS)
        self.iter_batches_kwargs = dict(SHUFFLED_ITER_KWARGS)
        # Online phase (see ``online_phase``).
        self.online = False
        self.online_env_steps_per_iteration = 1000
        self.updates_per_env_step = 1.0
        self.replay_capacity = 2_000_000
        self.online_synther: dict[str, Any] = {}

    @override(BCConfig)
    def training(
        self,
        *,
        actor_lr: float | None = NotProvided,
        critic_lr: float | None = NotProvided,
        tau: float | None = NotProvided,
        reward_scale: float | None = NotProvided,
        reward_bias: float | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        actor_lr / critic_lr: Adam learning rates (a float or an RLlib schedule).
        tau: Polyak rate of the target critics (every gradient step).
        reward_scale / reward_bias: every loss sees ``reward_scale · r + reward_bias``.
        **kwargs: RLlib ``training()`` args (``gamma``, ``grad_clip``,
            ``train_batch_size_per_learner`` ...).
        """
        try:
            super().training(**kwargs)
        except TypeError as err:  # a keyword RLlib does not know: another algorithm's knob?
            from rllib_diffusion.knobs import check_knobs, declared_knobs

            unknown = re.findall(r"unexpected keyword argument '(\w+)'", str(err))
            check_knobs(self.ALGO_NAME, declared_knobs(type(self)), dict.fromkeys(unknown))
            raise
        set_provided(
            self,
            {
                "actor_lr": actor_lr,
                "critic_lr": critic_lr,
                "tau": tau,
                "reward_scale": reward_scale,
                "reward_bias": reward_bias,
            },
        )
        return self

    def online_phase(
        self,
        *,
        enabled: bool | None = NotProvided,
        env_steps_per_iteration: int | None = NotProvided,
        updates_per_env_step: float | None = NotProvided,
        replay_capacity: int | None = NotProvided,
        synther: dict[str, Any] | None = NotProvided,
    ):
        """The online phase: EnvRunners instead of offline input (``is_online``).

        Args:
            enabled: train online (needs ``offline_data(input_=None)`` and
                ``Algorithm.seed_replay_buffer`` before the first ``train()``).
            env_steps_per_iteration: env steps sampled per iteration (all EnvRunners).
            updates_per_env_step: gradient steps per new env step.
            replay_capacity: transitions kept (the buffer starts with the offline data).
            synther: online SynthER's knobs given (names and defaults:
                ``SynthEROnlineConfigMixin.training()``; ``synther_real_ratio`` < 1 turns
                it on); empty or None: off.
        """
        set_provided(
            self,
            {
                "online": enabled,
                "online_env_steps_per_iteration": env_steps_per_iteration,
                "updates_per_env_step": updates_per_env_step,
                "replay_capacity": replay_capacity,
                "online_synther": synther,
            },
        )
        self.online_synther = dict(self.online_synther or {})
        return self

    @property
    @override(AlgorithmConfig)
    def is_online(self) -> bool:
        # RLlib reads ``is_online`` to decide whether to build EnvRunners; it has no
        # public setter (MARWIL/BC set the private ``_is_online = False``), so the
        # online phase is this config's own ``online`` option.
        return bool(self.online)

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # Our model configs are complete dataclasses (RLlib's override hook).
        return {}

    def model_config_for_data(self, model: Any, dataset: Any | None) -> Any:
        """``model`` with what the networks take from the training data (e.g. TD3+BC's
        state statistics); ``dataset``: the real dataset (an ``EpisodeDataset``), or
        None where none is at hand. Nothing by default."""
        return model

    def data_warning(self, model: Any) -> str | None:
        """One line about what :meth:`model_config_for_data` took from the data that
        may hurt (e.g. TD3+BC's near-constant state dims), or None. None by default."""
        return None

    @classmethod
    def task_defaults(cls, env_id: str | None) -> dict[str, Any]:
        """The paper's per-task knob values for ``env_id`` (none by default)."""
        return {}

    @classmethod
    def dataset_defaults(cls, env_id: str | None, dataset: str | None) -> dict[str, Any]:
        """The paper's knob values for ``env_id`` with the kind of data ``dataset`` names
        (:func:`dataset_kind`); by default the per-task values."""
        return cls.task_defaults(env_id)

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        self._validate_knobs_are_ours()
        if not 0 < self.tau <= 1:
            self._value_error(f"tau must be in (0, 1], got {self.tau}.")
        if self.online_env_steps_per_iteration < 1 or self.updates_per_env_step <= 0:
            self._value_error(
                "online_env_steps_per_iteration must be >= 1 and updates_per_env_step > 0."
            )
        self._validate_online_synther()

    def _validate_online_synther(self) -> None:
        """The online phase's SynthER knobs: known names, valid values, and a whole real
        share of every ``train_batch_size_per_learner`` minibatch."""
        from rllib_diffusion.knobs import check_knobs

        if not self.online_synther:
            return
        try:
            check_knobs("online SynthER", set(SYNTHER_DEFAULTS), self.online_synther)
        except ConfigError as err:
            self._value_error(str(err))
        values = {**SYNTHER_DEFAULTS, **self.online_synther}
        error = knob_error(values, self.train_batch_size_per_learner)
        if error:
            self._value_error(error)

    def _validate_knobs_are_ours(self) -> None:
        """A knob of another algorithm set on this config (``update_from_dict``, a
        sweep, ``setattr``) would be silently ignored: refuse it."""
        from rllib_diffusion.algorithms.registry import all_knob_names
        from rllib_diffusion.knobs import check_knobs, declared_knobs

        own = {k.name for k in declared_knobs(type(self))}
        foreign = {n: getattr(self, n) for n in sorted(all_knob_names() - own) if n in vars(self)}
        if foreign:
            check_knobs(self.ALGO_NAME, own, foreign)


class EMAActorConfigMixin:
    """The EMA actor's schedule knobs (algorithms that act with an EMA of their actor)."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.ema_decay = 0.995
        self.ema_update_every = 5
        self.ema_start = 1000

    @override(BCConfig)
    def training(
        self,
        *,
        ema_decay: float | None = NotProvided,
        ema_update_every: int | None = NotProvided,
        ema_start: int | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        ema_decay: decay of the EMA actor (acting and target actions).
        ema_update_every: gradient steps between EMA updates.
        ema_start: gradient steps during which the EMA actor is a plain copy.
        **kwargs: the other ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(
            self,
            {"ema_decay": ema_decay, "ema_update_every": ema_update_every, "ema_start": ema_start},
        )
        return self

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if not 0 <= self.ema_decay < 1:
            self._value_error(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.ema_update_every < 1 or self.ema_start < 0:
            self._value_error("ema_update_every must be >= 1 and ema_start >= 0.")


class OfflineQMixin(OfflineRestoreMixin):
    """Training step of the offline Q-learners: RLlib's offline (BC) step, or the online
    phase on a replay buffer. Host: ``<Algo>(OfflineQMixin, BC)``."""

    replay_buffer: TransitionReplay | None = None
    #: Online SynthER's generator and pool (``online_phase(synther=...)``; None: off).
    synther: Any = None
    #: The coming iteration is the run's last (:meth:`mark_last_iteration`).
    last_iteration: bool = False

    @override(BC)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        if self.config.online:
            self.synther = online_synther_of(self.config.online_synther, self.config.seed)

    def mark_last_iteration(self, last: bool) -> None:
        """Whether the coming iteration is the run's last (its host's budget ends there):
        online SynthER skips a retrain due in it, as the replay fine-tuners do."""
        self.last_iteration = bool(last)

    def seed_replay_buffer(self, transitions: dict[str, np.ndarray]) -> None:
        """Start the online phase's FIFO buffer (``replay_capacity`` transitions) with
        (offline) ``transitions``."""
        self.replay_buffer = self._new_replay()
        self.replay_buffer.add_columns(transitions)

    def _new_replay(self) -> TransitionReplay:
        return TransitionReplay(self.config.replay_capacity, seed=self.config.seed or 0)

    @override(BC)
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        """RLlib's state plus the online replay (its transitions, write slot and RNG)."""
        state = super().get_state(*args, **kwargs)
        if self.replay_buffer is not None:
            state[REPLAY_STATE] = self.replay_buffer.get_state()
        return state

    @override(BC)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if REPLAY_STATE in state:
            self.replay_buffer = self._new_replay()
            self.replay_buffer.set_state(state[REPLAY_STATE])

    @override(BC)
    def training_step(self) -> None:
        if self.offline_data is not None:
            return super().training_step()
        self._online_training_step()

    def _online_training_step(self) -> None:
        """Sample env steps into the replay buffer, then update on uniform minibatches."""
        if self.replay_buffer is None:
            raise ConfigError(
                "Online training of an offline Q-learner needs seed_replay_buffer() first "
                "(use rllib_diffusion.algorithms.online_run.finetune_online)."
            )
        new = self._sample_transitions()
        if not new:
            # Nothing arrived (e.g. a sample timed out on an overloaded machine, or a
            # runner is restarting): no update this iteration, the next one samples again.
            self.metrics.log_value(REPLAY_SIZE, self.replay_buffer.size, window=1)
            self.metrics.log_value(EMPTY_SAMPLES, 1, reduce="sum")
            return
        self.replay_buffer.add_columns(new)
        for key, value in self._synther_step().items():
            self.metrics.log_value(key, value, window=1)
        self._update_from_replay(len(new[Columns.REWARDS]))
        self.metrics.log_value(REPLAY_SIZE, self.replay_buffer.size, window=1)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )

    def _sample_transitions(self) -> dict[str, np.ndarray]:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.online_env_steps_per_iteration,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        return episode_transitions(episodes)

    def _synther_step(self) -> dict[str, Any]:
        """Online SynthER's retrain on the replay's current rows when due at the env
        steps sampled so far (none when off; skipped in the run's last iteration, whose
        pool would serve it alone); its progress values."""
        last, self.last_iteration = self.last_iteration, False
        if self.synther is None:
            return {}
        replay = self.replay_buffer
        held = {k: v[: len(replay)] for k, v in replay.data.items()}
        env_steps = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME))
        return self.synther.maybe_retrain(held, int(env_steps), last_iteration=last)

    def _update_from_replay(self, n_new: int) -> None:
        """``updates_per_env_step × n_new`` gradient steps on uniform replay minibatches
        (each mixed with online SynthER's pool at its exact ratio when on)."""
        cfg = self.config
        num_updates = max(1, round(n_new * cfg.updates_per_env_step))
        batch_size = cfg.train_batch_size_per_learner
        if self.synther is None:
            data = self.replay_buffer.sample(num_updates * batch_size)
        else:
            data = self.synther.minibatches(self.replay_buffer, batch_size, num_updates)
        batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(data)}, env_steps=n_new)
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                batch=batch,
                minibatch_size=batch_size,
                num_epochs=1,
                shuffle_batch_per_epoch=False,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    )
                },
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
