"""Typed network/sampler configuration of diffusion policy RLModules.

Passed to RLlib as ``model_config`` (a plain dict, ``DiffusionPolicyConfig.to_dict()``),
so it is stored in every checkpoint together with the dataset normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SAMPLERS = ("ddpm", "ddim", "flow")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the allowed values."""


NETWORKS = ("mlp", "unet")
SCHEDULES = ("cosine", "vp", "linear")


@dataclass
class DiffusionPolicyConfig:
    """Everything that defines a diffusion policy network and how it samples.

    Attributes:
        obs_dim: Do * To, size of the (flattened, normalised) conditioning observation.
        action_dim: Da.
        horizon: Ta, length of the predicted action chunk.
        act_steps: actions of each chunk executed in the env (<= horizon).
        obs_history: To, stacked observations.
        denoising_steps: K (DDPM steps, or Euler steps for ``sampler="flow"``).
        sampler: "ddpm", "ddim" or "flow".
        ddim_steps: DDIM sampling steps (only for ``sampler="ddim"``).
        schedule: noise schedule, "cosine" (DPPO), "vp" (Diffusion-QL) or "linear".
        network: "mlp" (DiffusionMLP) or "unet" (1-D temporal UNet).
        hidden_dims: MLP hidden sizes.
        unet_dims: channel sizes of the UNet levels.
        time_dim: time-embedding size.
        activation: MLP activation name.
        clip_x0: clamp of the predicted clean action during sampling (normalised units).
        min_sampling_std: std floor used when sampling stochastically (exploration).
        eval_min_std: std floor of deterministic (inference) sampling.
        normalization: ``DatasetNormalization.to_dict()`` of the training data.
        clamp_obs: clip the min-max normalised observations the policy sees in the env to
            [-1, 1] (DPPO's robomimic ``clamp_obs``; off by default, as there). Guards
            against dimensions with a tiny data range (Lift's ``robot0_eef_quat``: 0.0033)
            reaching hundreds when the state drifts out of it.
        env_id: the env the policy was trained for (checked on load).
        env_kwargs: keyword arguments of that env (``make_env(env_id, **env_kwargs)``), from
            the dataset (e.g. the Franka Kitchen's ``tasks_to_complete``); None: defaults.
    """

    obs_dim: int
    action_dim: int
    horizon: int = 4
    act_steps: int = 4
    obs_history: int = 1
    denoising_steps: int = 20
    sampler: str = "ddpm"
    ddim_steps: int | None = None
    schedule: str = "cosine"
    network: str = "mlp"
    hidden_dims: tuple[int, ...] = (512, 512, 512)
    unet_dims: tuple[int, ...] = (64, 128, 256)
    time_dim: int = 16
    activation: str = "mish"
    clip_x0: float = 1.0
    min_sampling_std: float = 0.1
    eval_min_std: float = 1e-3
    normalization: dict[str, Any] | None = field(default=None, repr=False)
    clamp_obs: bool = False
    env_id: str | None = None
    env_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.unet_dims = tuple(int(h) for h in self.unet_dims)
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"DiffusionPolicyConfig: {msg}")

        if self.sampler not in SAMPLERS:
            bad(f"sampler={self.sampler!r}; allowed: {', '.join(SAMPLERS)}.")
        if self.network not in NETWORKS:
            bad(f"network={self.network!r}; allowed: {', '.join(NETWORKS)}.")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}.")
        if self.obs_dim < 1 or self.action_dim < 1 or self.horizon < 1:
            bad("obs_dim, action_dim and horizon must be >= 1.")
        if not 1 <= self.act_steps <= self.horizon:
            bad(f"act_steps={self.act_steps} must be in [1, horizon={self.horizon}].")
        if self.denoising_steps < 1:
            bad(f"denoising_steps={self.denoising_steps} must be >= 1.")
        if self.sampler == "ddim":
            if self.ddim_steps is None or not 1 <= self.ddim_steps <= self.denoising_steps:
                bad(
                    f"sampler='ddim' needs 1 <= ddim_steps <= denoising_steps "
                    f"({self.denoising_steps}); got ddim_steps={self.ddim_steps}."
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["unet_dims"] = list(self.unet_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> DiffusionPolicyConfig:
        """Build from a dict; ``strict=False`` ignores keys RLlib adds to ``model_config``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if not strict:
            d = {k: v for k, v in d.items() if k in known}
        elif unknown:
            raise ConfigError(
                f"DiffusionPolicyConfig: unknown keys {sorted(unknown)}; allowed: {sorted(known)}."
            )
        return cls(**d)

    def env_config(self) -> dict[str, Any]:
        """``env_config`` of the action-chunk env that matches this policy (its env, chunk
        length, executed actions, stacked observations, data normalisation and its clamp,
        and the env kwargs of the data where there are any)."""
        config = {
            "env_id": self.env_id,
            "horizon": self.horizon,
            "act_steps": self.act_steps,
            "obs_history": self.obs_history,
            "normalization": self.normalization,
            "clamp_obs": self.clamp_obs,
        }
        if self.env_kwargs:
            config["env_kwargs"] = dict(self.env_kwargs)
        return config

    @property
    def sampling_steps(self) -> int:
        """Number of reverse steps a sample takes (the chain length minus one)."""
        return self.ddim_steps if self.sampler == "ddim" else self.denoising_steps
