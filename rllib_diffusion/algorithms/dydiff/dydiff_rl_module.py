"""RLModule of DyDiff: a diffusion model of the state sequence of a trajectory segment,
conditioned on its start state and action sequence, plus a one-step dynamics ensemble.

Glossary: B batch, N rollouts, H segment length, K denoising steps, M ensemble members,
Do / Da observation / action dims. Everything is standardised per dimension with the
data's statistics (``obs``, ``actions``, state changes, rewards), kept in the model config
so a checkpoint works in data units by itself.

Denoiser: the shared core's ``DiffusionMLP`` over ``x = z(s_1 .. s_H)`` (B, H, Do) with
the condition ``c = [z(s_0), z(a_0) .. z(a_{H-1})]`` (Do + H·Da), ε-prediction DDPM on the
core's ``NoiseSchedule`` and ``sample_chain``. DyDiff's official code instead diffuses the
joint (state, action) sequence with an EDM UNet and in-paints s_0 and the actions at every
sampler step; conditioning by input is the MLP equivalent used here.

The learner is diffusion BC's (:class:`DiffusionBCTorchLearner`, MSE of
``PREDICTION`` against ``TARGET``): :func:`joint_prediction_and_target` packs the
denoiser's ε̂ and the ensemble's predictions into one pair, so one optimizer trains both
(``net`` holds both; ``ema_net`` is its EMA copy, used for sampling and rollouts).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.algorithms.dydiff.dynamics_ensemble import (
    DynamicsEnsemble,
    ensemble_disagreement,
    ensemble_targets,
)
from rllib_diffusion.data.transitions import StandardNormalizer
from rllib_diffusion.diffusion import DiffusionMLP, NoiseSchedule, sample_chain
from rllib_diffusion.modules.apis import TrainPrecisionAPI
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET
from rllib_diffusion.modules.model_config import SCHEDULES, ConfigError

#: Per-dimension statistics a model config needs (``StandardNormalizer.to_dict()``s).
NORMALIZERS = ("obs", "actions", "delta", "rewards")
#: What the denoiser can generate (``DyDiffModelConfig.diffuse``).
DIFFUSE = ("states", "deltas")


@dataclass
class DyDiffModelConfig:
    """Networks, schedule and data statistics of a DyDiff model (its ``model_config``).

    Attributes:
        obs_dim: Do.
        action_dim: Da.
        horizon: H, transitions per segment (DyDiff: 100 with a UNet; CPU-sized here).
        width / depth: the residual MLP denoiser's hidden layers.
        time_dim: size of the timestep embedding.
        denoising_steps: K, DDPM steps of training and sampling.
        schedule: noise schedule ("cosine", "vp" or "linear").
        ddim_steps: sample with this many DDIM steps instead of K DDPM steps (None: DDPM).
        ensemble_size / ensemble_width / ensemble_depth: the one-step ensemble (DyDiff's:
            7 nets of 4×200).
        normalization: ``{name: StandardNormalizer.to_dict()}`` for :data:`NORMALIZERS`.
        clip_x0: clamp of the predicted clean states while sampling (standardised units).
        env_id: the env the data came from.
        diffuse: what the denoiser generates: "states" (z(s_1 .. s_H), DyDiff's) or
            "deltas" (z_Δ(s_{i+1} − s_i), states recovered as s_0 + cumulative sums).
    """

    obs_dim: int
    action_dim: int
    horizon: int = 8
    width: int = 512
    depth: int = 4
    time_dim: int = 16
    denoising_steps: int = 100
    schedule: str = "cosine"
    ddim_steps: int | None = None
    ensemble_size: int = 7
    ensemble_width: int = 200
    ensemble_depth: int = 4
    normalization: dict[str, Any] | None = field(default=None, repr=False)
    clip_x0: float | None = None
    env_id: str | None = None
    diffuse: str = "states"

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"DyDiffModelConfig: {msg}")

        if min(self.obs_dim, self.action_dim, self.horizon) < 1:
            bad("obs_dim, action_dim and horizon must be >= 1.")
        if min(self.width, self.depth, self.ensemble_width, self.ensemble_depth) < 1:
            bad("width, depth, ensemble_width and ensemble_depth must be >= 1.")
        if self.ensemble_size < 2:
            bad(f"ensemble_size={self.ensemble_size}: disagreement needs >= 2 members.")
        if self.denoising_steps < 1 or self.time_dim < 2 or self.time_dim % 2:
            bad("denoising_steps must be >= 1 and time_dim an even number >= 2.")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}.")
        if self.ddim_steps is not None and not 1 <= self.ddim_steps <= self.denoising_steps:
            bad(f"ddim_steps={self.ddim_steps} must be in [1, {self.denoising_steps}].")
        if self.diffuse not in DIFFUSE:
            bad(f"diffuse={self.diffuse!r}; allowed: {', '.join(DIFFUSE)}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DyDiffModelConfig:
        """Build from a dict, ignoring keys RLlib adds to ``model_config``."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class DyDiffNets(nn.Module):
    """The trained networks: ``denoiser`` and ``ensemble`` (one parameter set, one EMA)."""

    def __init__(self, cfg: DyDiffModelConfig) -> None:
        super().__init__()
        self.denoiser = DiffusionMLP(
            cfg.obs_dim,
            cfg.horizon,
            cfg.obs_dim + cfg.horizon * cfg.action_dim,
            time_dim=cfg.time_dim,
            hidden_dims=(cfg.width,) * cfg.depth,
            layer_norm=True,
            residual=True,
        )
        self.ensemble = DynamicsEnsemble(
            cfg.obs_dim,
            cfg.action_dim,
            members=cfg.ensemble_size,
            width=cfg.ensemble_width,
            depth=cfg.ensemble_depth,
        )


def joint_prediction_and_target(
    eps_hat: Tensor, eps: Tensor, ens_pred: Tensor, ens_target: Tensor
) -> tuple[Tensor, Tensor]:
    """Pack the denoiser's ``(B, H, Do)`` ε̂/ε and the ensemble's ``(M, B, ..., Do + 2)``
    predictions/targets (one transition per segment in training: ``(M, B, Do + 2)``) into
    ``(B, 1, E)`` pairs, E = H·Do + M·n_e (n_e ensemble outputs per row), so that the
    learner's MSE is

        L = [H·Do · mean (ε̂ − ε)² + M·n_e · mean (f_k − y)²] / E,

    a weighted sum of the two losses over disjoint parameters (Adam's per-parameter
    scaling makes the weights nearly immaterial)."""
    b = eps_hat.shape[0]
    pred = torch.cat([eps_hat.reshape(b, -1), ens_pred.movedim(1, 0).reshape(b, -1)], dim=1)
    target = torch.cat([eps.reshape(b, -1), ens_target.movedim(1, 0).reshape(b, -1)], dim=1)
    return pred.unsqueeze(1), target.unsqueeze(1)


class DyDiffModule(TorchRLModule, TrainPrecisionAPI):
    """Segment dynamics model; public API: :meth:`generate_states` and :meth:`one_step`.
    It has no policy (``forward_inference`` is not meant for EnvRunners)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = DyDiffModelConfig.from_dict(dict(self.model_config or {}))
        missing = [k for k in NORMALIZERS if k not in (cfg.normalization or {})]
        if missing:
            raise ConfigError(f"DyDiffModelConfig.normalization lacks {missing} (fit them).")
        self.dydiff_config = cfg
        self.norms = {k: StandardNormalizer.from_dict(cfg.normalization[k]) for k in NORMALIZERS}
        self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.denoising_steps)
        self.net = DyDiffNets(cfg)
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        # Gradient updates seen by the EMA; a buffer so checkpoints restore it.
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))

    def _z(self, name: str, x: Tensor) -> Tensor:
        return self.norms[name].normalize(x.float())

    def condition(self, s0: Tensor, actions: Tensor) -> Tensor:
        """``c = [z(s_0), z(a_0..a_{H-1})]``: ``(B, Do)``, ``(B, H, Da)`` → ``(B, Do + H·Da)``."""
        return torch.cat([self._z("obs", s0), self._z("actions", actions).flatten(1)], dim=1)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Segments (stacked transitions, see ``data.segments``) → the joint
        ``PREDICTION``/``TARGET`` of :func:`joint_prediction_and_target`."""
        cfg = self.dydiff_config
        b, h = batch[Columns.OBS].shape[0], cfg.horizon
        obs = batch[Columns.OBS].float().reshape(b, h, cfg.obs_dim)
        nxt = batch[Columns.NEXT_OBS].float().reshape(b, h, cfg.obs_dim)
        act = batch[Columns.ACTIONS].float().reshape(b, h, cfg.action_dim)
        x0 = self.diffusion_target(obs[:, 0], nxt)
        eps = torch.randn_like(x0)
        t = torch.randint(0, self.schedule.num_steps, (b,), device=x0.device)
        x_t = self.schedule.q_sample(x0, t, eps)
        with self.train_autocast(x0.device):
            eps_hat = self.net.denoiser(x_t, t, self.condition(obs[:, 0], act))
        # The ensemble fits one random transition of each segment (every transition is
        # some segment's, so all are seen; B rows per step instead of B·H).
        i = torch.randint(0, h, (b,), device=x0.device)
        rows = torch.arange(b, device=x0.device)
        ens_in = torch.cat([self._z("obs", obs[rows, i]), self._z("actions", act[rows, i])], -1)
        ens_target = ensemble_targets(
            self._z("delta", nxt[rows, i] - obs[rows, i]),
            self._z("rewards", batch[Columns.REWARDS].float().reshape(b, h)[rows, i]),
            batch[Columns.TERMINATEDS].float().reshape(b, h)[rows, i],
            cfg.ensemble_size,
        )
        with self.train_autocast(x0.device):
            ens_pred = self.net.ensemble(ens_in)
        pred, target = joint_prediction_and_target(eps_hat, eps, ens_pred, ens_target)
        return {PREDICTION: pred, TARGET: target}

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        raise NotImplementedError(
            "DyDiffModule generates rollouts (generate_states / one_step); it does not act."
        )

    _forward_exploration = _forward_inference

    @torch.no_grad()
    def generate_states(
        self, s0: Tensor, actions: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """States ``s_1 .. s_H`` ``(N, H, Do)`` (data units) sampled from the EMA denoiser
        given the start states ``s0`` (N, Do) and actions ``(N, H, Da)`` (data units)."""
        cfg = self.dydiff_config
        cond = self.condition(s0, actions)
        shape = (s0.shape[0], cfg.horizon, cfg.obs_dim)
        out = sample_chain(
            lambda x, t: self.ema_net.denoiser(x, t, cond),
            self.schedule,
            shape,
            method="ddim" if cfg.ddim_steps else "ddpm",
            ddim_steps=cfg.ddim_steps,
            clip_x0=cfg.clip_x0,
            noise_clip=None,
            final_clip=None,
            generator=generator,
        )
        return self.target_to_states(s0, out.actions)

    def diffusion_target(self, s0: Tensor, nxt: Tensor) -> Tensor:
        """``(B, H, Do)`` standardised x0 of states ``s_1 .. s_H`` (``nxt``) from ``s0``."""
        if self.dydiff_config.diffuse == "states":
            return self._z("obs", nxt)
        prev = torch.cat([s0.unsqueeze(1).float(), nxt[:, :-1].float()], dim=1)
        return self._z("delta", nxt.float() - prev)

    def target_to_states(self, s0: Tensor, x: Tensor) -> Tensor:
        """Inverse of :meth:`diffusion_target`: states ``(N, H, Do)`` in data units."""
        if self.dydiff_config.diffuse == "states":
            return self.norms["obs"].unnormalize(x)
        deltas = self.norms["delta"].unnormalize(x)
        return s0.float().unsqueeze(1) + torch.cumsum(deltas, dim=1)

    @torch.no_grad()
    def one_step(self, obs: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """The ensemble on ``obs`` (..., Do), ``actions`` (..., Da) in data units:
        ``next_obs`` (mean of the members), ``rewards``, ``terminal_prob`` (mean
        regressed terminal flag) and ``disagreement`` (:func:`ensemble_disagreement` of
        the members' standardised state changes), each of shape (...)/(..., Do)."""
        x = torch.cat([self._z("obs", obs), self._z("actions", actions)], dim=-1)
        pred = self.ema_net.ensemble(x)
        z_delta = pred[..., : self.dydiff_config.obs_dim]
        mean = pred.mean(dim=0)
        delta = self.norms["delta"].unnormalize(mean[..., :-2])
        return {
            "next_obs": obs.float() + delta,
            "rewards": self.norms["rewards"].unnormalize(mean[..., -2]),
            "terminal_prob": mean[..., -1],
            "disagreement": ensemble_disagreement(z_delta),
        }


def fit_normalizers(segments: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Per-dimension statistics of :data:`NORMALIZERS` from ``data.segments.make_segments``
    columns (raw units)."""
    from rllib_diffusion import columns as C

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x.reshape(-1, 1)

    obs, nxt = segments[C.OBS], segments[C.NEXT_OBS]
    fitted = {
        "obs": flat(np.concatenate([obs, nxt[:, -1:]], axis=1)),
        "actions": flat(segments[C.ACTIONS]),
        "delta": flat(nxt - obs),
        "rewards": flat(segments[C.REWARDS]),
    }
    return {k: StandardNormalizer.fit(v).to_dict() for k, v in fitted.items()}
