"""DSRL: diffusion steering by latent-noise RL (Wagenmaker et al., CoRL 2025) on RLlib's SAC.

Glossary: Ta action horizon, Da action dim, N = Ta*Da flattened noise, To*Do observation.

A pretrained diffusion/flow policy (a DiffusionBC checkpoint) stays frozen. RLlib's SAC
learns a policy over the sampler's initial noise ``w ∈ [-noise_bound, noise_bound]^N``;
the env sees ``base_policy(obs, w)``, the decoded action chunk. SAC's module acts on the
noise Box (set here, not derived from the env) and the EnvRunners decode
(``dsrl_connectors.NoiseToActionChunk``). Two variants, as in the official code:

- DSRL-NA (``noise_aliased``, the official default ``dsrl_na``): episodes and replay hold
  the decoded env actions; SAC's critics learn ``Q^A(s, a)`` on them, a noise critic
  ``Q^W(s, w)`` is distilled from ``Q^A`` on decoded ``N(0, I)`` noise and the actor
  maximises ``Q^W`` (``dsrl_rl_module``, ``dsrl_learner``).
- DSRL-SAC: plain SAC over the noise; episodes and replay hold the noise.

Defaults are the official gym ones (``ajwagen/dsrl``, ``cfg/gym/dsrl_hopper.yaml`` and
``train_dsrl.py``): SAC lr 3e-4 for actor, critic and temperature, batch 256, τ 0.005,
γ 0.99, twin critics (min backup), temperature learned from 1.0 towards target entropy
0.0, 20 gradient steps after every 2 vector steps of the envs (with the official 4
envs: 2.5 per decision), 10 noise-critic distillation steps per 20 (NA), 2001 vector
steps of the base policy before learning, noise bound 1.0 (NA; 1.5 SAC), DDIM 5 steps
(η = 0) for diffusion bases, critics 3 × 128 MLPs on ``concat(obs, action)`` with
LayerNorm and tanh, critic loss ``0.5 · mse`` (``dsrl_rl_module``, ``dsrl_learner``).
The number of envs is the run's (``--num-envs-per-env-runner``; official 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.connectors.module_to_env import GetActions
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.from_config import NotProvided

from rllib_diffusion import metrics as M
from rllib_diffusion.knobs import Positive, set_provided

ALGORITHM_NAME = "DSRL"


@dataclass
class DSRLModelConfig:
    """SAC's networks (actor and twin critics) over the noise (RLlib's SAC module).

    Attributes:
        sac_hidden_dims: hidden sizes of the actor and critic MLPs (official gym hopper
            3 × 128; walker 3 × 2048, halfcheetah 3 × 1024, robomimic 3 × 2048).
        sac_activation: hidden activation (official: tanh).
        sac_layer_norm: LayerNorm after each hidden layer (official: true).
    """

    sac_hidden_dims: tuple[Positive, ...] = (128, 128, 128)
    sac_activation: str = "tanh"
    sac_layer_norm: bool = True

    def rllib_model_config(self) -> dict[str, Any]:
        """RLlib ``DefaultModelConfig`` keys of SAC's catalog (encoder + linear heads)."""
        return {
            "fcnet_hiddens": [int(h) for h in self.sac_hidden_dims],
            "fcnet_activation": self.sac_activation,
            "fcnet_use_layernorm": bool(self.sac_layer_norm),
            "head_fcnet_hiddens": [],
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sac_hidden_dims"] = list(self.sac_hidden_dims)
        return d


class DSRLConfig(SACConfig):
    """Config of :class:`DSRL` (official gym defaults; see the module doc)."""

    #: RLlib SAC knobs DSRL sets to the official values (flags come from here).
    RLLIB_KNOBS = {
        "actor_lr": "learning rate of the noise actor (official 3e-4 for all three).",
        "critic_lr": "learning rate of the twin critics.",
        "alpha_lr": "learning rate of the SAC temperature.",
        "tau": "Polyak coefficient of the target critics.",
        "gamma": "discount per decision (one executed action chunk).",
        "initial_alpha": "initial SAC temperature.",
        "target_entropy": "target entropy of the temperature update (official 0.0).",
        "train_batch_size_per_learner": "minibatch size of each gradient step.",
        "rollout_fragment_length": "vector steps each sub-env samples between update rounds "
        "(the official train_freq).",
    }
    #: Knobs of ``training()`` the fine-tuning run sets itself (not user knobs).
    RUN_SET_KNOBS = ("base_checkpoint",)

    def __init__(self, algo_class: type | None = None) -> None:
        self._derived_ready = False
        super().__init__(algo_class=algo_class or DSRL)
        self.noise_aliased = True
        self.noise_bound: float | None = None
        self.decoder_ddim_steps: int | None = 5
        self.init_rollout_steps = 2001
        self.utd = 20
        self.noise_critic_grad_steps = 10
        self.base_checkpoint: str | None = None
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.alpha_lr = 3e-4
        self.target_entropy = 0.0
        self.train_batch_size_per_learner = 256
        self.rollout_fragment_length = 2
        # SB3's uniform replay (official buffer 20M decisions; grows with the data):
        # DSRL.transitions (replay.py) reads the capacity; RLlib's own buffer stays empty.
        self.replay_buffer_config = {"type": "EpisodeReplayBuffer", "capacity": 20_000_000}
        # The EnvRunner's decoder writes the env's actions; RLlib must not rescale them.
        self.normalize_actions = False
        self.clip_actions = False
        self.sample_timeout_s = 600.0
        self.rl_module(model_config=DSRLModelConfig().rllib_model_config())
        self.callbacks(on_episode_step=_count_env_steps())
        self._derived_ready = True

    @override(SACConfig)
    def training(
        self,
        *,
        noise_aliased: bool | None = NotProvided,
        noise_bound: float | None = NotProvided,
        decoder_ddim_steps: int | None = NotProvided,
        init_rollout_steps: int | None = NotProvided,
        utd: int | None = NotProvided,
        noise_critic_grad_steps: int | None = NotProvided,
        base_checkpoint: str | None = NotProvided,
        **kwargs: Any,
    ) -> DSRLConfig:
        """DSRL's knobs (the rest are SAC's).

        Args:
            noise_aliased: DSRL-NA, the official default (algorithm dsrl_na): critics on
                env actions, distilled into a noise critic that the actor maximises;
                false: DSRL-SAC, plain SAC over the noise.
            noise_bound: largest |w| of the noise SAC picks, per element. None: the
                official value of the variant, 1.0 for DSRL-NA (its noise lives in the
                env's [-1, 1] action bounds) and 1.5 for DSRL-SAC (the official
                action_magnitude, 1.5 for gym hopper/halfcheetah and robomimic, 2.5 for
                walker).
            decoder_ddim_steps: DDIM steps (η = 0) that decode the noise of a diffusion
                base policy (official 5 gym, 8 robomimic); None: the policy's own DDIM
                steps, or all K steps of a DDPM policy. Flow policies use their Euler
                steps.
            init_rollout_steps: vector steps of each EnvRunner acting with the base policy
                (w ~ N(0, I) clipped to the bound) before SAC acts and learns (official
                2001 with 4 envs).
            utd: gradient steps per update round (official 20); a round samples
                rollout_fragment_length vector steps on every EnvRunner.
            noise_critic_grad_steps: DSRL-NA: distillation steps of the noise critic
                per ``utd`` gradient steps (official 10), spread evenly over them; at
                most one per gradient step (from ``utd`` on: every step).
            base_checkpoint: the DiffusionBC checkpoint steered (set by the run).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "noise_aliased": noise_aliased,
                "noise_bound": noise_bound,
                "decoder_ddim_steps": decoder_ddim_steps,
                "init_rollout_steps": init_rollout_steps,
                "utd": utd,
                "noise_critic_grad_steps": noise_critic_grad_steps,
                "base_checkpoint": base_checkpoint,
            },
        )
        return self

    # ------------------------------------------------------------ derived values
    @property
    def training_intensity(self) -> float:
        """RLlib's replay ratio that makes each sampling round take ``utd`` updates
        (the inverse of ``dqn.calculate_rr_weights``' native ratio)."""
        sampled = (
            self.get_rollout_fragment_length()
            * self.num_envs_per_env_runner
            * max(self.num_env_runners + 1, 1)
        )
        return self.utd * self.total_train_batch_size / sampled

    @training_intensity.setter
    def training_intensity(self, value: float | None) -> None:
        _refuse_derived(self, "training_intensity", value, "utd")

    @property
    def num_steps_sampled_before_learning_starts(self) -> int:
        """Decisions of the base-policy warm-up (all EnvRunners): SAC learns after it."""
        runners = max(self.num_env_runners, 1)
        return self.init_rollout_steps * self.num_envs_per_env_runner * runners

    @num_steps_sampled_before_learning_starts.setter
    def num_steps_sampled_before_learning_starts(self, value: int | None) -> None:
        _refuse_derived(
            self, "num_steps_sampled_before_learning_starts", value, "init_rollout_steps"
        )

    @property
    def resolved_noise_bound(self) -> float:
        """``noise_bound``, or the official value of the variant (1.0 NA, 1.5 SAC)."""
        if self.noise_bound is not None:
            return float(self.noise_bound)
        return 1.0 if self.noise_aliased else 1.5

    def base_policy_config(self) -> dict[str, Any]:
        """The base checkpoint's ``DiffusionPolicyConfig`` dict."""
        from rllib_diffusion.checkpoints import read_checkpoint_meta

        return dict(read_checkpoint_meta(self.base_checkpoint).policy_config or {})

    @property
    def noise_space(self) -> gym.spaces.Box | None:
        """SAC's action space: ``[-noise_bound, noise_bound]^(Ta*Da)`` of the base policy
        (None before ``base_checkpoint`` is set)."""
        if self.base_checkpoint is None:
            return None
        policy = self.base_policy_config()
        n = int(policy["horizon"]) * int(policy["action_dim"])
        bound = self.resolved_noise_bound
        return gym.spaces.Box(-bound, bound, (n,), np.float32)

    # ------------------------------------------------------------ RLlib hooks
    @override(SACConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.dsrl.dsrl_rl_module import DSRLTorchRLModule

        return RLModuleSpec(module_class=DSRLTorchRLModule, action_space=self.noise_space)

    @property
    @override(SACConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        from rllib_diffusion.algorithms.dsrl import dsrl_rl_module as m

        extra: dict[str, Any] = {
            m.NOISE_ALIASED: self.noise_aliased,
            m.NOISE_BOUND: self.resolved_noise_bound,
        }
        if self.noise_aliased and self.base_checkpoint is not None:
            from rllib_diffusion.algorithms.dsrl.decoder import decoder_policy_config
            from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

            policy = DiffusionPolicyConfig.from_dict(self.base_policy_config(), strict=False)
            decoding = decoder_policy_config(policy, self.decoder_ddim_steps)
            extra[m.DECODER_POLICY] = decoding.to_dict()
        return super()._model_config_auto_includes | extra

    @override(SACConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.dsrl.dsrl_learner import DSRLTorchLearner

        return DSRLTorchLearner

    @override(SACConfig)
    def build_module_to_env_connector(self, env=None, spaces=None):
        from rllib_diffusion.algorithms.dsrl.dsrl_connectors import NoiseToActionChunk

        pipeline = super().build_module_to_env_connector(env, spaces)
        pipeline.insert_after(
            GetActions,
            NoiseToActionChunk(
                base_checkpoint=self.base_checkpoint,
                noise_bound=self.resolved_noise_bound,
                ddim_steps=self.decoder_ddim_steps,
                init_rollout_steps=self.init_rollout_steps,
                store_env_actions=self.noise_aliased,
            ),
        )
        return pipeline

    @override(SACConfig)
    def validate(self) -> None:
        super().validate()
        errors = []
        if self.base_checkpoint is None:
            errors.append("base_checkpoint (the DiffusionBC checkpoint) must be set")
        if self.noise_bound is not None and not self.noise_bound > 0:
            errors.append(f"noise_bound must be > 0, got {self.noise_bound}")
        if self.decoder_ddim_steps is not None and self.decoder_ddim_steps < 1:
            errors.append(f"decoder_ddim_steps must be >= 1 or None, got {self.decoder_ddim_steps}")
        if self.init_rollout_steps < 0:
            errors.append(f"init_rollout_steps must be >= 0, got {self.init_rollout_steps}")
        if self.utd < 1:
            errors.append(f"utd must be >= 1, got {self.utd}")
        if self.noise_critic_grad_steps < 1:
            errors.append(
                f"noise_critic_grad_steps must be >= 1, got {self.noise_critic_grad_steps}"
            )
        if self.n_step != 1:
            errors.append(f"n_step must be 1 (DSRL replays single transitions), got {self.n_step}")
        if self.normalize_actions or self.clip_actions:
            errors.append(
                "normalize_actions and clip_actions must stay False (the decoder "
                "writes the env's actions)"
            )
        if errors:
            raise ValueError("DSRL: " + "; ".join(errors) + ".")


def _refuse_derived(config: DSRLConfig, name: str, value: Any, knob: str) -> None:
    """Setter of a derived SAC setting: RLlib's constructor may set it, a user may not."""
    if getattr(config, "_derived_ready", False) and value is not None:
        raise ValueError(f"DSRL derives {name} from {knob}; set {knob} instead.")


def _count_env_steps():
    from rllib_diffusion.algorithms.dsrl.dsrl_connectors import count_env_steps

    return count_env_steps


#: Algorithm-state key (checkpointed) of DSRL's replay (:class:`TransitionReplay`).
REPLAY_STATE = "dsrl_transition_replay"


class DSRL(SAC):
    """RLlib's SAC over the initial noise of a frozen diffusion/flow policy."""

    @classmethod
    @override(SAC)
    def get_default_config(cls) -> DSRLConfig:
        return DSRLConfig()

    @override(SAC)
    def setup(self, config: Any) -> None:
        from rllib_diffusion.algorithms.replay import TransitionReplay

        super().setup(config)
        self.transitions = TransitionReplay(
            self.config.replay_buffer_config["capacity"], seed=self.config.seed
        )
        if self.config.noise_aliased:
            load_decoder_into(self)

    @override(SAC)
    def training_step(self) -> None:
        """One update round, as RLlib's SAC/DQN round on the new stack: every EnvRunner
        samples ``rollout_fragment_length`` vector steps into :attr:`transitions`; after
        the warm-up, ``utd`` gradient steps on uniform minibatches (given to the learner
        as batches, no episode connector); then the EnvRunners get the new weights."""
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
        from ray.rllib.utils import metrics as rm

        with self.metrics.log_time((rm.TIMERS, rm.ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                concat=True,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        self.metrics.aggregate(runner_results, key=rm.ENV_RUNNER_RESULTS)
        self.transitions.add(episodes)
        self.metrics.log_value(M.REPLAY_TRANSITIONS, len(self.transitions), window=1)
        sampled = self.metrics.peek(
            (rm.ENV_RUNNER_RESULTS, rm.NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
        )
        if sampled < self.config.num_steps_sampled_before_learning_starts:
            return
        for _ in range(self.config.utd):
            with self.metrics.log_time((rm.TIMERS, rm.REPLAY_BUFFER_SAMPLE_TIMER)):
                batch = learner_batch(self.transitions, self.config.total_train_batch_size)
            with self.metrics.log_time((rm.TIMERS, rm.LEARNER_UPDATE_TIMER)):
                results = self.learner_group.update(
                    batch=batch, timesteps={rm.NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled}
                )
            self.metrics.aggregate(results, key=rm.LEARNER_RESULTS)
        with self.metrics.log_time((rm.TIMERS, rm.SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=[DEFAULT_MODULE_ID],
                inference_only=True,
            )

    @override(SAC)
    def get_state(
        self, components: Any = None, *, not_components: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        """SAC's state plus, in a whole state (as a checkpoint saves it), the replay of
        transitions, so that ``--resume`` continues with it instead of an empty buffer."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        if components is None:
            state[REPLAY_STATE] = self.transitions.get_state()
        return state

    @override(SAC)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if REPLAY_STATE in state:  # checkpoints before 2026-12-06 have none: refill
            self.transitions.set_state(state[REPLAY_STATE])


def learner_batch(transitions: Any, batch_size: int) -> Any:
    """A uniform minibatch of ``transitions`` as the learner's ``MultiAgentBatch``."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    rows = transitions.sample(batch_size)
    return MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(rows)}, env_steps=batch_size)


def load_decoder_into(algo: DSRL) -> None:
    """Copy the base policy's decoder into every learner's module (DSRL-NA: its critics
    and TD targets act through it); a restore overwrites it with the same weights."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_diffusion.algorithms.dsrl.decoder import load_decoder

    config = algo.config
    state = load_decoder(config.base_checkpoint, config.decoder_ddim_steps).state_dict()

    def _load(learner: Any) -> None:
        learner.module[DEFAULT_MODULE_ID].unwrapped().decoder.load_state_dict(state)

    algo.learner_group.foreach_learner(_load)


__all__ = ["ALGORITHM_NAME", "DSRL", "DSRLConfig", "DSRLModelConfig"]
