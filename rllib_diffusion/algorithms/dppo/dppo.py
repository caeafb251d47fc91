"""DPPO (Ren et al. 2024): fine-tune a pretrained diffusion policy with denoising-chain PPO.

Rollouts run on CPU EnvRunners in the action-chunk env; the LearnerGroup (GPU when
available) updates the fine-tuned denoiser and the critic on (env step, denoising
step) pairs. Start from a DiffusionBC checkpoint with :func:`dppo_config_from_pretrained`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms import pretrained_weights
from rllib_diffusion.algorithms.env_step_budget import (
    EnvStepBudgetMixin,
    episode_env_steps,
    sample_last_iteration,
)
from rllib_diffusion.algorithms.mixed_precision import PrecisionConfigMixin
from rllib_diffusion.algorithms.synthetic_ppo import (
    SyntheticSegmentsConfigMixin,
    SyntheticSegmentsMixin,
    check_synthetic_knobs,
)
from rllib_diffusion.knobs import set_provided

#: Algorithm name stored in checkpoint metadata.
ALGORITHM_NAME = "DPPO"

#: Fields of the policy config that must match between the pretrained checkpoint and
#: the DPPO module, or the weights do not mean the same thing.
MATCHING_POLICY_FIELDS = (
    "obs_dim",
    "action_dim",
    "horizon",
    "act_steps",
    "obs_history",
    "denoising_steps",
    "sampler",
    "ddim_steps",
    "schedule",
    "network",
    "hidden_dims",
    "unet_dims",
    "time_dim",
    "activation",
    "env_id",
)


#: Actor learning rate when none is given, by denoiser network: the reference's gym MLP
#: configs use 1e-4, every one of its UNet configs (robomimic, furniture) 1e-5. Measured
#: here (benchmarks/dppo_update_size.py, Hopper BC policies, first AdamW step on the same
#: batch): the UNet moves the policy ≈ 330× further (approx-KL) than the MLP at 1e-4,
#: ≈ 5× at 1e-5.
DEFAULT_ACTOR_LR = {"mlp": 1e-4, "unet": 1e-5}


class DPPOConfig(SyntheticSegmentsConfigMixin, PrecisionConfigMixin, PPOConfig):
    """Config of :class:`DPPO` (gym defaults of DPPO.md, scaled for small machines).

    Model knobs (K_ft, std floors, critic size) live in ``model_config`` as a
    ``DPPOModelConfig`` dict; :func:`dppo_config_from_pretrained` fills them in. The
    synthetic-segment knobs (``synthetic_ratio`` 0 = off) come from
    :class:`~rllib_diffusion.algorithms.synthetic_ppo.SyntheticSegmentsConfigMixin`.
    """

    #: RLlib PPO knobs DPPO uses (flags and knob checks come from here).
    RLLIB_KNOBS = {
        "clip_param": "PPO ratio clip of the last denoising step (clip_param_base: the first).",
        "num_epochs": "passes over each iteration's (env step, denoising step) pairs.",
        "gamma": "discount per decision (one executed action chunk), as in DPPO.",
        "lambda_": "GAE λ.",
    }
    #: Knobs of ``training()`` the fine-tuning run sets itself (not user knobs).
    RUN_SET_KNOBS = ("pretrained_checkpoint",)

    #: Whether the algorithm has an entropy bonus (``entropy_coeff``); DPPO has none.
    ENTROPY_BONUS = False
    #: Measured on Hopper rollouts of a fine-tuned DPPO policy (docs/performance.md,
    #: "Mixed precision"; benchmarks/precision_logp.py).
    BF16_REFUSAL = (
        "bf16 log-probs move the PPO ratio exp(logp_new - logp_old) by up to ~0.01 "
        "(p99 0.004) before any update, the size of the 0.01 clip; use fp32."
    )

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DPPO)
        self.gamma = 0.99
        self.lambda_ = 0.95
        self.num_epochs = 5
        self.clip_param = 0.01
        self.clip_param_base = 0.01
        self.gamma_denoising = 0.99
        self.actor_lr: float | None = None  # None: DEFAULT_ACTOR_LR of the network
        self.critic_lr = 1e-3
        self.weight_decay = 0.0
        self.vf_loss_coeff = 0.5
        self.target_kl: float | None = 1.0
        self.critic_warmup_iterations = 0
        self.reward_scaling = True
        self.pair_minibatch_size = 10_000
        self.bc_loss_coeff = 0.0
        self.pretrained_checkpoint: str | None = None
        # Copies of each env step's PPO units per epoch (ReinFlow's repeat_samples); DPPO's
        # units are its (env step, denoising step) pairs, taken once.
        self.repeat_samples = 1
        self.use_kl_loss = False
        self.entropy_coeff = 0.0
        self.grad_clip = None
        self.train_batch_size_per_learner = 2000
        self.minibatch_size = 500  # unused by DPPO (see pair_minibatch_size)
        # Diffusion sampling is slower than a Gaussian MLP: give runners time.
        self.sample_timeout_s = 600.0

    @override(PPOConfig)
    def training(
        self,
        *,
        actor_lr: float | None = NotProvided,
        critic_lr: float | None = NotProvided,
        weight_decay: float | None = NotProvided,
        clip_param_base: float | None = NotProvided,
        gamma_denoising: float | None = NotProvided,
        target_kl: float | None = NotProvided,
        critic_warmup_iterations: int | None = NotProvided,
        reward_scaling: bool | None = NotProvided,
        pair_minibatch_size: int | None = NotProvided,
        bc_loss_coeff: float | None = NotProvided,
        pretrained_checkpoint: str | None = NotProvided,
        **kwargs: Any,
    ) -> DPPOConfig:
        """DPPO knobs (plus RLlib's PPO ``training()`` args such as ``clip_param``,
        ``num_epochs``, ``gamma``, ``lambda_``, ``vf_loss_coeff``, ``grad_clip``,
        ``train_batch_size_per_learner`` (decisions = action chunks per iteration)).

        Args:
            actor_lr: AdamW learning rate of the fine-tuned denoiser; None follows the
                network (``DEFAULT_ACTOR_LR``: 1e-4 MLP, 1e-5 UNet, the reference's).
            critic_lr: AdamW learning rate of the critic V(s).
            weight_decay: AdamW weight decay of both.
            clip_param_base: clip coefficient of the first fine-tuned step; ``clip_param``
                is the last step's (exponential schedule in between, DPPO.md).
            gamma_denoising: denoising discount γ_den applied to advantages.
            target_kl: stop the remaining minibatch updates of an iteration once the
                approx-KL (k3) of a minibatch exceeds this (None: never). Default 1, the
                value of all 71 configs of the DPPO reference; with clip 0.01 a
                minibatch's approx-KL is about 1e-5 to 1e-3, so it guards against
                blow-ups only and does not fire in normal training.
            critic_warmup_iterations: iterations during which only the critic learns.
            reward_scaling: divide rewards by the running std of the discounted return.
            pair_minibatch_size: (env step, denoising step) pairs per minibatch.
            bc_loss_coeff: weight of the optional BC regulariser (0: off): the negative
                log-likelihood under the fine-tuned actor of chains sampled from the
                frozen pretrained actor at the minibatch's observations.
            pretrained_checkpoint: DiffusionBC checkpoint whose EMA weights initialise
                both the frozen and the fine-tuned denoiser.
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "actor_lr": actor_lr,
                "critic_lr": critic_lr,
                "weight_decay": weight_decay,
                "clip_param_base": clip_param_base,
                "gamma_denoising": gamma_denoising,
                "target_kl": target_kl,
                "critic_warmup_iterations": critic_warmup_iterations,
                "reward_scaling": reward_scaling,
                "pair_minibatch_size": pair_minibatch_size,
                "bc_loss_coeff": bc_loss_coeff,
                "pretrained_checkpoint": pretrained_checkpoint,
            },
        )
        return self

    def resolved_weight_decay(self, optimizer: str) -> float:
        """AdamW weight decay of the ``"actor"`` or ``"critic"`` optimizer (both
        ``weight_decay`` in DPPO)."""
        return self.weight_decay

    def iteration_lr(self, optimizer: str, iteration: int) -> float | None:
        """The lr of the ``"actor"``/``"critic"`` optimizer during update ``iteration``
        (0-based) where the algorithm schedules it per iteration; None: constant (DPPO)."""
        return None

    def resolved_actor_lr(self, network: str) -> float:
        """``actor_lr``, or the default of the denoiser ``network`` when it is None."""
        return self.actor_lr if self.actor_lr is not None else DEFAULT_ACTOR_LR[network]

    @override(PPOConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModule

        return RLModuleSpec(module_class=DPPOModule)

    @override(PPOConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.dppo.dppo_learner import DPPOTorchLearner

        return DPPOTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {}

    @override(PPOConfig)
    def validate(self) -> None:
        # PPO's env-step minibatch is unused (DPPO minibatches are pairs); keep PPO's own
        # check that it fits the batch from firing on it.
        self.minibatch_size = min(self.minibatch_size, self.train_batch_size_per_learner)
        super().validate()
        if self.use_kl_loss or (self.entropy_coeff != 0.0 and not self.ENTROPY_BONUS):
            self._value_error(
                f"{self.algo_class.__name__} uses neither a KL loss nor an entropy bonus."
            )
        for name in ("actor_lr", "critic_lr", "clip_param", "clip_param_base"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                self._value_error(f"{name} must be > 0, got {getattr(self, name)}.")
        if not 0 < self.gamma_denoising <= 1:
            self._value_error(f"gamma_denoising must be in (0, 1], got {self.gamma_denoising}.")
        if self.num_epochs < 1 or self.critic_warmup_iterations < 0:
            self._value_error(
                f"num_epochs must be >= 1 and critic_warmup_iterations >= 0, got "
                f"{self.num_epochs} and {self.critic_warmup_iterations}."
            )
        if not (0 < self.gamma <= 1 and 0 <= self.lambda_ <= 1 and self.weight_decay >= 0):
            self._value_error(
                f"gamma must be in (0, 1], lambda_ in [0, 1] and weight_decay >= 0, got "
                f"{self.gamma}, {self.lambda_} and {self.weight_decay}."
            )
        if self.bc_loss_coeff < 0:
            self._value_error(f"bc_loss_coeff must be >= 0, got {self.bc_loss_coeff}.")
        if self.pair_minibatch_size < 1:
            self._value_error(f"pair_minibatch_size must be >= 1, got {self.pair_minibatch_size}.")
        if self.target_kl is not None and self.target_kl <= 0:
            self._value_error(f"target_kl must be > 0 or None, got {self.target_kl}.")
        check_synthetic_knobs(self)


class DPPO(SyntheticSegmentsMixin, EnvStepBudgetMixin, PPO):
    """PPO's sample → update → sync loop with DPPO's learner, pretrained-weight loading,
    true env-step counting and directly timed sample/learn/sync phases; with
    ``synthetic_ratio`` > 0 each update also gets synthetic decisions
    (:mod:`rllib_diffusion.algorithms.synthetic_ppo`; they count as no env steps):
    rolled out in a learned dynamics model with chains sampled by the pre-update policy
    (``synthetic_actions`` "policy"), or whole generated segments whose chunks get
    chains drawn from the forward posterior (:func:`posterior_sample`, "generated")."""

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> DPPOConfig:
        return DPPOConfig()

    @override(PPO)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        if self.config.pretrained_checkpoint:
            load_pretrained_into(self, self.config.pretrained_checkpoint)
        self.setup_synthetic()

    @override(PPO)
    def training_step(self) -> None:
        t0 = time.perf_counter()
        episodes, runner_results = self._sample_tolerating_failures()
        if not episodes:
            return
        self._count_env_steps(episodes, runner_results)
        t1 = time.perf_counter()
        learner_results = self.update_learners(
            episodes, minibatch_size=self.config.pair_minibatch_size, shuffle=True
        )
        t2 = time.perf_counter()
        self.sync_runner_weights(learner_results)
        t3 = time.perf_counter()
        for key, value in (
            (M.ENV_STEPS, self._env_steps_lifetime),
            (M.SAMPLE_SECONDS, t1 - t0),
            (M.LEARN_SECONDS, t2 - t1),
            (M.SYNC_SECONDS, t3 - t2),
        ):
            self.metrics.log_value((M.DPPO_NAMESPACE, key), value, window=1)

    @override(SyntheticSegmentsMixin)
    def synthetic_prefixes(self, episodes: list, wanted: int) -> tuple[list[dict], int]:
        if self.uses_policy_actions():
            return super().synthetic_prefixes(episodes, wanted)
        return self.generated_segments(wanted, posterior_sample)

    def _count_env_steps(self, episodes: list, runner_results: list) -> None:
        """Aggregate the EnvRunners' metrics and make RLlib's standard env-step counters
        count true env steps.

        EnvRunners count one env step per decision (one step of the action-chunk env);
        the real steps of each decision are in its ``env_steps`` info. After the
        aggregation ``env_runners/num_env_steps_sampled[_lifetime]`` (hence the
        top-level ``num_env_steps_sampled_lifetime`` that Tune stoppers read) are
        corrected to the true count, and the EnvRunners' decision count is kept as
        ``num_decisions_sampled_lifetime`` (module/agent step counters stay decisions:
        one forward pass each).
        """
        lifetime = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
        before = self.metrics.peek(lifetime, default=0)
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        decisions = int(self.metrics.peek(lifetime, default=0) - before)
        env_steps = episode_env_steps(episodes)
        self._env_steps_lifetime += env_steps
        self.metrics.log_value(M.DECISIONS_LIFETIME, decisions, reduce="lifetime_sum")
        self._anchor_env_step_counters(env_steps - decisions)

    def _anchor_env_step_counters(self, iteration_extra: int = 0) -> None:
        """Set ``env_runners/num_env_steps_sampled_lifetime`` to ``_env_steps_lifetime``
        (and add ``iteration_extra`` to this iteration's ``num_env_steps_sampled``).

        RLlib 2.60 has no public setter for an aggregated counter (``set_value`` is
        deprecated; ``log_value`` refuses aggregated keys): the difference is merged in
        through ``aggregate`` as if one more EnvRunner had reported it, the way the
        EnvRunners' own counts arrive.
        """
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED
        from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

        lifetime = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
        missing = self._env_steps_lifetime - int(self.metrics.peek(lifetime, default=0))
        if not missing and not iteration_extra:
            return
        correction = MetricsLogger()
        correction.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, missing, reduce="lifetime_sum")
        if iteration_extra:
            correction.log_value(NUM_ENV_STEPS_SAMPLED, iteration_extra, reduce="sum")
        self.metrics.aggregate([correction.reduce()], key=ENV_RUNNER_RESULTS)

    def _sample_tolerating_failures(self) -> tuple[list, list]:
        """``synchronous_parallel_sample`` as in PPO, plus: when no EnvRunner returned
        anything because they died, wait for Ray to restart them (fault tolerance on),
        resync them and sample again instead of skipping the update.

        RLlib's PPO returns an empty iteration in that case; with one EnvRunner a
        single crash would then yield an iteration without samples or metrics.
        """
        cap, self._last_iteration = self._last_iteration, None
        if cap is not None:  # the budget's last iteration (EnvStepBudgetMixin)
            return sample_last_iteration(self.env_runner_group, cap, self.config.sample_timeout_s)
        deadline = time.monotonic() + (self.config.sample_timeout_s or 600.0)
        while True:
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
            group = self.env_runner_group
            if (
                episodes
                or group.num_remote_env_runners() == 0
                or group.num_healthy_remote_env_runners() > 0
                or not self.config.restart_failed_env_runners
                or time.monotonic() > deadline
            ):
                return episodes, runner_results
            # Every remote EnvRunner is down: Ray Core restarts them (max_restarts);
            # ping until they answer, sync their state/weights, then sample again.
            restored = self.restore_env_runners(group)
            if restored:
                self._make_on_env_runners_recreated_callbacks(
                    config=self.config,
                    env_runner_group=group,
                    restored_env_runner_indices=restored,
                )
            else:
                time.sleep(1.0)

    @override(PPO)
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state["dppo_env_steps_lifetime"] = self._env_steps_lifetime
        return state

    @override(PPO)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._env_steps_lifetime = int(state.get("dppo_env_steps_lifetime", 0))
        if "dppo_env_steps_lifetime" not in state:
            return
        if M.DECISIONS_LIFETIME not in self.metrics:
            # A checkpoint from before the standard counters counted true env steps: its
            # env-step counter is the decision count.
            decisions = self.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
            )
            if decisions:
                self.metrics.log_value(M.DECISIONS_LIFETIME, decisions, reduce="lifetime_sum")
        self._anchor_env_step_counters()


def posterior_sample(
    module: Any, obs: np.ndarray, actions: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """What an EnvRunner would store had ``module`` sampled the generated chunks
    ``actions`` (N, Ta·Da) at ``obs`` (N, Do): each chunk clamped to the action space
    [-1, 1], a chain of the fine-tuned steps ending at it drawn from the forward
    posterior and its per-step log-probs under the module
    (``DPPOModule.posterior_chains``), in ``synthetic_ppo.exploration_sample``'s format:
    ``actions`` (N, Ta·Da), ``chains``, ``chain_logp``, ``action_logp``. ``seed`` seeds
    the chains."""
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    device = next(iter(module.parameters())).device
    n = len(obs)
    obs_t = torch.as_tensor(np.asarray(obs, np.float32), device=device)
    chunks = torch.as_tensor(np.asarray(actions, np.float32), device=device)
    chunks = chunks.reshape(n, *module.action_space.shape).clamp(-1.0, 1.0)
    with torch.no_grad():
        out = module.posterior_chains(
            obs_t.reshape(n, *module.observation_space.shape),
            chunks,
            generator=torch.Generator(device=device).manual_seed(seed),
        )
    result = {"actions": out.pop(Columns.ACTIONS).reshape(n, -1).cpu().numpy()}
    result.update({k: v.cpu().numpy().astype(np.float32) for k, v in out.items()})
    return result


def load_pretrained_into(algo: DPPO, checkpoint: str | Path) -> None:
    """Copy the EMA denoiser of a DiffusionBC checkpoint into every learner's DPPO module
    (frozen and fine-tuned copy) and every EnvRunner. Validates compatibility."""
    pretrained_weights.load_pretrained_into(algo, checkpoint, check_policy_match)


def check_policy_match(pretrained: dict[str, Any], ours: dict[str, Any], where: str) -> None:
    """Raise a CheckpointError listing every field that differs."""
    fields = MATCHING_POLICY_FIELDS
    if pretrained.get("sampler") == "ddpm" and ours.get("sampler") == "ddim":
        # A DDPM ε-network may be fine-tuned with DDIM sampling (use_ddim).
        fields = tuple(f for f in fields if f not in ("sampler", "ddim_steps"))
    pretrained_weights.check_fields(
        pretrained,
        ours,
        where,
        fields=fields,
        owner="DPPO",
        fix="Build the DPPO config from the checkpoint (dppo_config_from_pretrained) "
        "or pretrain with the same settings.",
    )
