"""Diffusion-QL as an RLlib offline algorithm (RLlib's BC/MARWIL offline training step).

Data: transition parquet from :func:`rllib_diffusion.data.offline.prepare_transition_data`
read by ``OfflineData`` and mapped by :class:`TransitionPreLearner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
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

from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC
from rllib_diffusion.algorithms.bc.window_prelearner import (
    LIGHT_PRELEARNER_KWARGS,
    SHUFFLED_ITER_KWARGS,
)
from rllib_diffusion.algorithms.online import TransitionReplayBuffer, episode_transitions
from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

#: Result key: transitions in the online replay buffer (offline data included).
REPLAY_SIZE = "replay_buffer_size"
#: Online iterations whose sampling returned no transitions (lifetime count).
EMPTY_SAMPLES = "num_empty_samples"

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
        self.max_q_backup = 0
        self.reward_scale = 1.0
        self.reward_bias = 0.0
        self.train_batch_size_per_learner = 256
        self.dataset_num_iters_per_learner = 1000
        self.prelearner_class = TransitionPreLearner
        self.map_batches_kwargs = dict(LIGHT_PRELEARNER_KWARGS)
        self.iter_batches_kwargs = dict(SHUFFLED_ITER_KWARGS)
        # Online phase (no offline ``input_``): env steps per iteration, gradient steps
        # per env step, replay capacity (the buffer starts with the offline dataset).
        self.online_env_steps_per_iteration = 1000
        self.updates_per_env_step = 1.0
        self.replay_capacity = 2_000_000

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
        max_q_backup: int | None = NotProvided,
        reward_scale: float | None = NotProvided,
        reward_bias: float | None = NotProvided,
        online_env_steps_per_iteration: int | None = NotProvided,
        updates_per_env_step: float | None = NotProvided,
        replay_capacity: int | None = NotProvided,
        **kwargs: Any,
    ) -> DiffusionQLConfig:
        """Args:
        actor_lr / critic_lr: Adam learning rates.
        eta: weight of the Q term in the actor loss.
        tau: Polyak rate of the target critics (every gradient step).
        ema_decay / ema_update_every / ema_start: EMA actor schedule (gradient steps).
        max_q_backup: N > 0 backs up the max over N sampled next actions (AntMaze).
        reward_scale / reward_bias: every loss sees ``reward_scale · r + reward_bias``.
        online_env_steps_per_iteration / updates_per_env_step / replay_capacity: the
            online phase (config without offline ``input_``, see ``algorithms/online.py``).
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
            ("max_q_backup", max_q_backup),
            ("reward_scale", reward_scale),
            ("reward_bias", reward_bias),
            ("online_env_steps_per_iteration", online_env_steps_per_iteration),
            ("updates_per_env_step", updates_per_env_step),
            ("replay_capacity", replay_capacity),
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
        if self.online_env_steps_per_iteration < 1 or self.updates_per_env_step <= 0:
            self._value_error(
                "online_env_steps_per_iteration must be >= 1 and updates_per_env_step > 0."
            )


class DiffusionQL(BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> DiffusionQLConfig:
        return DiffusionQLConfig()

    # Offline without evaluation has no EnvRunnerGroup (RLlib 2.60 restore bug).
    restore_from_path = DiffusionBC.restore_from_path

    replay_buffer: TransitionReplayBuffer | None = None

    def seed_replay_buffer(self, transitions: dict[str, np.ndarray]) -> None:
        """Start the online phase's buffer with (offline) ``transitions``."""
        obs_dim = transitions[Columns.OBS].shape[1]
        act_dim = transitions[Columns.ACTIONS].shape[1]
        self.replay_buffer = TransitionReplayBuffer(
            self.config.replay_capacity, obs_dim, act_dim, seed=self.config.seed or 0
        )
        self.replay_buffer.add(transitions)

    @override(BC)
    def training_step(self) -> None:
        if self.offline_data is not None:
            return super().training_step()
        self._online_training_step()

    def _online_training_step(self) -> None:
        """Sample env steps into the replay buffer, then update on uniform minibatches."""
        cfg = self.config
        if self.replay_buffer is None:
            raise RuntimeError(
                "Online DiffusionQL-family training needs seed_replay_buffer() first "
                "(use rllib_diffusion.algorithms.online_run.finetune_online)."
            )
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=cfg.online_env_steps_per_iteration,
                sample_timeout_s=cfg.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        new = episode_transitions(episodes)
        if not new:
            # Nothing arrived (e.g. a sample timed out on an overloaded machine, or a
            # runner is restarting): no update this iteration, the next one samples again.
            self.metrics.log_value(REPLAY_SIZE, self.replay_buffer.size, window=1)
            self.metrics.log_value(EMPTY_SAMPLES, 1, reduce="sum")
            return
        self.replay_buffer.add(new)
        n_new = len(new[Columns.REWARDS])
        num_updates = max(1, round(n_new * cfg.updates_per_env_step))
        batch_size = cfg.train_batch_size_per_learner
        data = self.replay_buffer.sample(num_updates * batch_size)
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
        self.metrics.log_value(REPLAY_SIZE, self.replay_buffer.size, window=1)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )
