"""TD3+BC as an RLlib offline algorithm: its own config, module and learner; the data
path, TD target and online phase are the offline Q-learners' (``offline_q``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.offline_q import (
    OfflineQConfigMixin,
    OfflineQMixin,
)
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.model_config import ConfigError


class TD3BCConfig(OfflineQConfigMixin, BCConfig):
    """TD3+BC knobs: ``alpha``, ``policy_noise``, ``noise_clip``, ``policy_freq``,
    ``normalize_states``.

    Defaults are those of the official code (github.com/sfujim/TD3_BC, ``main.py`` and
    ``TD3_BC.py``): α 2.5, target noise 0.2 clipped at 0.5 (both × max_action), actor and
    targets updated every 2nd step, states normalised with the dataset's mean and std
    (+1e-3); the shared γ 0.99, τ 0.005, Adam 3e-4 for both nets, batch 256, no grad clip.
    """

    ALGO_NAME = "td3bc"
    #: Model flags TD3+BC reads (``hidden_dims`` sizes the actor and both critics).
    MODEL_KNOBS = ("hidden_dims",)

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or TD3BC)
        self.alpha = 2.5
        self.policy_noise = 0.2
        self.noise_clip = 0.5
        self.policy_freq = 2
        self.normalize_states = True

    @override(BCConfig)
    def training(
        self,
        *,
        alpha: float | None = NotProvided,
        policy_noise: float | None = NotProvided,
        noise_clip: float | None = NotProvided,
        policy_freq: int | None = NotProvided,
        normalize_states: bool | None = NotProvided,
        **kwargs: Any,
    ) -> TD3BCConfig:
        """Args:
        alpha: α of TD3+BC's Q weight λ = α / mean|Q(s, π(s))| (official 2.5).
        policy_noise: std of the target policy smoothing noise, × max_action (0.2).
        noise_clip: the smoothing noise is clipped to ±noise_clip × max_action (0.5).
        policy_freq: the actor and both target networks update every policy_freq-th
            critic step (2).
        normalize_states: normalise states with the dataset's mean and std + 1e-3, in
            training and acting (official: on).
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "alpha": alpha,
                "policy_noise": policy_noise,
                "noise_clip": noise_clip,
                "policy_freq": policy_freq,
                "normalize_states": normalize_states,
            },
        )
        self._check_td3bc_knobs()
        return self

    def _check_td3bc_knobs(self) -> None:
        """One-line ``ConfigError`` for a TD3+BC knob out of range."""
        for name in ("alpha", "policy_noise", "noise_clip"):
            if not getattr(self, name) >= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= 0, got {getattr(self, name)}.")
        if int(self.policy_freq) != self.policy_freq or self.policy_freq < 1:
            raise ConfigError(
                f"--policy-freq must be a whole number >= 1 (official: 2), got {self.policy_freq}."
            )

    @override(OfflineQConfigMixin)
    def model_config_for_data(self, model: Any, dataset: Any | None) -> Any:
        """``model`` with the state statistics of ``dataset``'s transitions (the states
        ``s`` of every ``(s, a, r, s′)``, official ``normalize_states``) when
        ``normalize_states``; without them (off, or no data): no normalisation."""
        from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import state_statistics

        if not self.normalize_states or dataset is None:
            return replace(model, obs_mean=None, obs_std=None)
        states = np.concatenate([ep.observations[:-1] for ep in dataset.episodes])
        mean, std = state_statistics(states)
        return replace(model, obs_mean=mean, obs_std=std)

    @override(OfflineQConfigMixin)
    def data_warning(self, model: Any) -> str | None:
        """Names the state dims whose data std is near-constant (:func:`near_constant_spread`):
        ``(s − μ) / (σ + 1e-3)`` maps a state off such a dim's value by ``d`` to about
        ``d / (σ + 1e-3)`` (constant: ``1000 d``), far outside the training inputs."""
        from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import STATE_STD_EPS
        from rllib_diffusion.data.normalization import near_constant_names, near_constant_spread

        if model.obs_std is None:
            return None
        std = np.asarray(model.obs_std, dtype=np.float64) - STATE_STD_EPS
        dims = near_constant_spread(std)
        if dims.size == 0:
            return None
        names = near_constant_names(dims, std, np.asarray(model.obs_mean), "std")
        eps = f"{STATE_STD_EPS:g}"
        return (
            f"warning: {dims.size} of {std.size} state dims are near-constant in the dataset: "
            f"{names}; TD3+BC's state normalisation (s - mean) / (std + {eps}) maps a state "
            f"off such a dim's value by d to about d / (std + {eps}) (constant: "
            f"{1 / STATE_STD_EPS:g} d), far outside the training inputs. Drop those dims, or "
            "train with --normalize-states false."
        )

    @classmethod
    def default_model_config(
        cls,
        obs_dim: int,
        action_dim: int,
        *,
        hidden_dims: tuple[int, ...] | None = None,
        env_id: str | None = None,
    ):
        """TD3+BC's networks: 256-256 ReLU actor and twin critics unless ``hidden_dims``
        sizes them all."""
        from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import TD3BCModelConfig

        nets = (
            {}
            if hidden_dims is None
            else dict.fromkeys(("hidden_dims", "critic_hidden_dims"), hidden_dims)
        )
        return TD3BCModelConfig(obs_dim=obs_dim, action_dim=action_dim, env_id=env_id, **nets)

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import TD3BCModule

        return RLModuleSpec(module_class=TD3BCModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.td3bc.td3bc_learner import TD3BCTorchLearner

        return TD3BCTorchLearner

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        try:
            self._check_td3bc_knobs()
        except ConfigError as err:
            self._value_error(str(err))


class TD3BC(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> TD3BCConfig:
        return TD3BCConfig()
