"""DRWR and DAWR (the DPPO paper's reward- and advantage-weighted diffusion baselines).

Both fine-tune a pretrained diffusion policy (a DiffusionBC checkpoint) by regressing
its denoiser on its own rollouts with the ε-prediction loss, each row weighted:

- **DRWR** (reward-weighted regression): on-policy; the rows of the episodes that ended
  this iteration, each weighted ``min(exp(β·Ĝ), max_weight)``, Ĝ the discounted
  return-to-go normalised over the iteration (``weights.rwr_weights``); ``num_epochs``
  passes of ``minibatch_size`` rows.
- **DAWR** (advantage-weighted regression): a FIFO replay buffer of the last
  ``buffer_decisions`` decisions with rewards times ``reward_scale``; each iteration a
  critic V(s) is regressed on TD(λ) targets of the buffer (``weights.td_lambda_targets``),
  then the denoiser on the buffer with weights ``min(exp(β·Â), max_weight)``, Â the
  advantage ``target − V`` normalised per minibatch (``weights.awr_weights``).

Defaults are the reference's Hopper configs (irom-lab/dppo,
``cfg/gym/finetune/hopper-v2/ft_{rwr,awr}_diffusion_mlp.yaml``; the training loops
``agent/finetune/train_{rwr,awr}_diffusion_agent.py``), per decision = one executed
action chunk. Deviations, each for a reason stated where it is made: episodes that cross
an iteration are joined rather than dropped (DRWR), TD(λ) bootstraps at time limits and
at the buffer's open end instead of running into the next episode (DAWR), minibatches
are drawn by shuffled passes instead of with replacement. Checkpoints hold the rollout
store (DAWR's replay buffer, DRWR's open episodes), so a resumed run goes on with it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
)

from rllib_diffusion import columns as C
from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.awr.segments import EpisodeSegments, FlatRows, flatten
from rllib_diffusion.algorithms.awr.weights import (
    discounted_returns,
    rwr_weights,
    td_lambda_targets,
)
from rllib_diffusion.algorithms.denoiser_finetune import (
    DenoiserFinetuneConfigMixin,
    load_pretrained_into,
)
from rllib_diffusion.algorithms.env_step_budget import EnvStepBudgetMixin
from rllib_diffusion.knobs import set_provided

#: Algorithm names stored in checkpoint metadata.
DRWR_NAME = "DRWR"
DAWR_NAME = "DAWR"

#: Algorithm-state keys (checkpointed): the env-step count and the rollout store
#: (DRWR's open episodes, DAWR's replay buffer).
ENV_STEPS_STATE = "reward_weighted_env_steps_lifetime"
STORE_STATE = "reward_weighted_store"


class RewardWeightedConfigMixin(DenoiserFinetuneConfigMixin):
    """Knobs DRWR and DAWR share (the run knobs: :class:`DenoiserFinetuneConfigMixin`).
    Host: ``<Algo>Config(RewardWeightedConfigMixin, AlgorithmConfig)``."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.actor_lr = 1e-4
        self.weight_decay = 0.0
        self.beta = 10.0
        self.max_weight = 100.0

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        actor_lr: float | None = NotProvided,
        weight_decay: float | None = NotProvided,
        beta: float | None = NotProvided,
        max_weight: float | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        actor_lr: AdamW learning rate of the denoiser (reference 1e-4, constant).
        weight_decay: AdamW weight decay (reference 0).
        beta: inverse temperature β of the weights exp(β·x) (reference 10).
        max_weight: largest weight; larger ones are clipped (reference 100).
        **kwargs: the run knobs (``pretrained_checkpoint``) and RLlib's ``training()``
            args (``gamma``, ``minibatch_size``, ...).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "actor_lr": actor_lr,
                "weight_decay": weight_decay,
                "beta": beta,
                "max_weight": max_weight,
            },
        )
        return self

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.awr.awr_rl_module import RewardWeightedModule

        return RLModuleSpec(module_class=RewardWeightedModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.awr.awr_learner import RewardWeightedTorchLearner

        return RewardWeightedTorchLearner

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        for name in ("actor_lr", "beta", "max_weight"):
            if not getattr(self, name) > 0:
                self._value_error(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.weight_decay < 0 or not 0 < self.gamma <= 1:
            self._value_error(
                f"weight_decay must be >= 0 and gamma in (0, 1], got {self.weight_decay} "
                f"and {self.gamma}."
            )
        if self.minibatch_size is None or self.minibatch_size < 1:
            self._value_error(f"minibatch_size must be >= 1, got {self.minibatch_size}.")


class DRWRConfig(RewardWeightedConfigMixin, AlgorithmConfig):
    """Config of :class:`DRWR` (reference Hopper defaults; see the module doc)."""

    #: RLlib knobs DRWR uses (flags and knob checks come from here).
    RLLIB_KNOBS = {
        "gamma": "discount per decision (one executed action chunk) of the returns.",
        "num_epochs": "passes over each iteration's rows (reference update_epochs 16).",
        "minibatch_size": "rows per gradient step (reference batch_size 1000).",
        "grad_clip": "gradient-norm clip (None: none, as the reference's max_grad_norm).",
    }

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DRWR)
        self.num_epochs = 16

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        if self.num_epochs < 1:
            self._value_error(f"num_epochs must be >= 1, got {self.num_epochs}.")


class DAWRConfig(RewardWeightedConfigMixin, AlgorithmConfig):
    """Config of :class:`DAWR` (reference Hopper defaults; see the module doc)."""

    RLLIB_KNOBS = {
        "gamma": "discount per decision (one executed action chunk) of the TD targets.",
        "minibatch_size": "rows per gradient step of actor and critic (reference 1000).",
        "grad_clip": "gradient-norm clip (None: none, as the reference's max_grad_norm).",
    }

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DAWR)
        self.critic_lr = 1e-3
        self.reward_scale = 0.01
        self.buffer_decisions = 200_000
        self.replay_ratio = 64.0
        self.critic_update_ratio = 4
        self.td_lambda = 0.95
        self.td_alpha = 0.95
        self.critic_warmup_iterations = 0

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        critic_lr: float | None = NotProvided,
        reward_scale: float | None = NotProvided,
        buffer_decisions: int | None = NotProvided,
        replay_ratio: float | None = NotProvided,
        critic_update_ratio: int | None = NotProvided,
        td_lambda: float | None = NotProvided,
        td_alpha: float | None = NotProvided,
        critic_warmup_iterations: int | None = NotProvided,
        **kwargs: Any,
    ) -> DAWRConfig:
        """DAWR's knobs (and the shared ones, see ``RewardWeightedConfigMixin.training``).

        Args:
            critic_lr: AdamW learning rate of the critic V(s) (reference 1e-3).
            reward_scale: factor on the rewards stored in the buffer (reference 0.01).
            buffer_decisions: decisions the FIFO replay buffer holds (reference 5000
                vector steps of 40 envs = 200,000).
            replay_ratio: actor gradient steps per iteration = decisions sampled /
                minibatch_size × replay_ratio (reference 64).
            critic_update_ratio: the critic takes 1/critic_update_ratio as many steps,
                before the actor's (reference 4).
            td_lambda: λ of the TD(λ) value targets (reference 0.95).
            td_alpha: the reference's step α of the TD(λ) targets, target = V + α·Σ
                (γλ)^k·δ (reference 0.95).
            critic_warmup_iterations: first iterations in which only the critic learns
                (reference 0).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "critic_lr": critic_lr,
                "reward_scale": reward_scale,
                "buffer_decisions": buffer_decisions,
                "replay_ratio": replay_ratio,
                "critic_update_ratio": critic_update_ratio,
                "td_lambda": td_lambda,
                "td_alpha": td_alpha,
                "critic_warmup_iterations": critic_warmup_iterations,
            },
        )
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        for name in ("critic_lr", "reward_scale", "replay_ratio"):
            if not getattr(self, name) > 0:
                self._value_error(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.buffer_decisions < 1 or self.critic_update_ratio < 1:
            self._value_error(
                f"buffer_decisions and critic_update_ratio must be >= 1, got "
                f"{self.buffer_decisions} and {self.critic_update_ratio}."
            )
        if not (0 <= self.td_lambda <= 1 and 0 < self.td_alpha <= 1):
            self._value_error(
                f"td_lambda must be in [0, 1] and td_alpha in (0, 1], got {self.td_lambda} "
                f"and {self.td_alpha}."
            )
        if self.critic_warmup_iterations < 0:
            self._value_error(
                f"critic_warmup_iterations must be >= 0, got {self.critic_warmup_iterations}."
            )


class RewardWeightedAlgorithmMixin(EnvStepBudgetMixin):
    """Learner updates and pretrained weights shared by DRWR and DAWR (sampling and
    env-step counting: :class:`EnvStepBudgetMixin`). Host:
    ``<Algo>(RewardWeightedAlgorithmMixin, Algorithm)``."""

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        if self.config.pretrained_checkpoint:
            load_pretrained_into(self, self.config.pretrained_checkpoint)

    def _learn(self, columns: dict[str, np.ndarray], steps: int) -> None:
        """``steps`` gradient steps of ``minibatch_size`` rows (fewer if the data is
        smaller), in shuffled passes over ``columns`` (all ``(N, ...)``)."""
        n = len(next(iter(columns.values())))
        if n == 0 or steps < 1:
            return
        order = np.random.permutation(n)
        batch = SampleBatch({k: v[order] for k, v in columns.items()})
        learners = max(1, self.config.num_learners)
        results = self.learner_group.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=n),
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                ),
                NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                    (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0
                ),
            },
            # num_total_minibatches fixes the step count; num_epochs > 1 only turns on
            # RLlib's reshuffle after each pass.
            num_total_minibatches=steps,
            num_epochs=2,
            minibatch_size=-(-min(self.config.minibatch_size, n) // learners),
            shuffle_batch_per_epoch=True,
        )
        self.metrics.aggregate(results, key=LEARNER_RESULTS)

    def _values(self, obs: np.ndarray) -> np.ndarray:
        """The critic's V(s) ``(N,)`` of observations ``(N, Do)`` (first learner)."""
        results = self.learner_group.foreach_learner(lambda learner: learner.values(obs))
        return np.asarray([r.get() for r in results][0], np.float64)

    def _sync_and_log(self, timings: dict[str, float], **values: float) -> None:
        """Push the learner's weights to the EnvRunners; log this iteration's values."""
        t0 = time.perf_counter()
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True
        )
        values |= timings | {M.SYNC_SECONDS: time.perf_counter() - t0}
        values[M.ENV_STEPS] = self._env_steps_lifetime
        for key, value in values.items():
            self.metrics.log_value((M.AWR_NAMESPACE, key), value, window=1)

    @override(Algorithm)
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[ENV_STEPS_STATE] = self._env_steps_lifetime
        state[STORE_STATE] = self.store.get_state()
        return state

    @override(Algorithm)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._env_steps_lifetime = int(state.get(ENV_STEPS_STATE, self._env_steps_lifetime))
        if STORE_STATE in state:
            self.store.set_state(state[STORE_STATE])


class DRWR(RewardWeightedAlgorithmMixin, Algorithm):
    """Reward-weighted regression of a diffusion policy on its complete episodes."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DRWRConfig:
        return DRWRConfig()

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        # Open episodes wait here until they end (their rows need the return-to-go).
        self.store = EpisodeSegments()

    @override(Algorithm)
    def training_step(self) -> None:
        t0 = time.perf_counter()
        episodes = self.sample_episodes()
        self.store.add_episodes(episodes)
        self.store.drop_open({ep.id_ for ep in episodes})
        done = self.store.pop_done()
        t1 = time.perf_counter()
        trained = 0
        if done:
            cfg, rows = self.config, flatten(done)
            returns = discounted_returns(rows.rewards, rows.last, cfg.gamma)
            columns = {
                Columns.OBS: rows.obs[rows.row_obs],
                Columns.ACTIONS: rows.actions,
                C.SAMPLE_WEIGHTS: rwr_weights(returns, cfg.beta, cfg.max_weight).astype(np.float32),
            }
            trained = len(rows)
            # The reference: num_epochs passes of trained // minibatch_size steps (≥ 1).
            self._learn(columns, cfg.num_epochs * max(1, trained // cfg.minibatch_size))
        timings = {M.SAMPLE_SECONDS: t1 - t0, M.LEARN_SECONDS: time.perf_counter() - t1}
        self._sync_and_log(timings, **{M.TRAINED_DECISIONS: trained})


class DAWR(RewardWeightedAlgorithmMixin, Algorithm):
    """Advantage-weighted regression of a diffusion policy on a replay buffer."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DAWRConfig:
        return DAWRConfig()

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        self.store = EpisodeSegments(capacity=self.config.buffer_decisions)

    def td_targets(self, rows: FlatRows) -> tuple[np.ndarray, np.ndarray]:
        """``(V(s), TD(λ) target)`` ``(N,)`` of every buffer row under the current critic."""
        cfg = self.config
        v_all = self._values(rows.obs)
        values, next_values = v_all[rows.row_obs], v_all[rows.row_obs + 1]
        targets = td_lambda_targets(
            rows.rewards,
            values,
            next_values,
            rows.last,
            rows.terminated,
            gamma=cfg.gamma,
            lam=cfg.td_lambda,
            alpha=cfg.td_alpha,
        )
        return values, targets

    @override(Algorithm)
    def training_step(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        episodes = self.sample_episodes()
        self.store.add_episodes(episodes, reward_scale=cfg.reward_scale)
        t1 = time.perf_counter()
        # The reference: (decisions sampled / minibatch) × replay_ratio actor steps.
        steps = int(sum(len(ep) for ep in episodes) / cfg.minibatch_size * cfg.replay_ratio)
        rows = flatten(self.store.segments())
        obs = rows.obs[rows.row_obs]
        _, targets = self.td_targets(rows)
        critic_steps = steps // cfg.critic_update_ratio
        self._learn(
            {Columns.OBS: obs, Columns.VALUE_TARGETS: targets.astype(np.float32)}, critic_steps
        )
        trained = 0
        if self.iteration >= cfg.critic_warmup_iterations:
            values, targets = self.td_targets(rows)
            advantages = (targets - values).astype(np.float32)
            actor = {
                Columns.OBS: obs,
                Columns.ACTIONS: rows.actions,
                Columns.ADVANTAGES: advantages,
            }
            self._learn(actor, steps)
            trained = len(rows)
        timings = {M.SAMPLE_SECONDS: t1 - t0, M.LEARN_SECONDS: time.perf_counter() - t1}
        self._sync_and_log(
            timings, **{M.TRAINED_DECISIONS: trained, M.BUFFER_DECISIONS: len(self.store)}
        )
