"""RLModule of the SynthER generator: an unconditional diffusion model over flattened,
standardised transitions ``x = [s, a, r, s′, d]``.

Glossary: B batch, N transitions generated, D = 2·Do + Da + 2 transition dim, K
denoising steps. The math is the shared core's (:mod:`rllib_diffusion.diffusion`): the
denoiser is a residual ``DiffusionMLP`` with LayerNorm over ``(B, 1, D)`` (horizon 1, no
conditioning), trained by ε-regression; sampling is ``sample_chain``. The module holds
``net`` (trained), ``ema_net`` (sampled from) and ``ema_step`` with the names
:class:`~rllib_diffusion.algorithms.denoiser_training.DiffusionBCTorchLearner`
uses, so that learner trains it unchanged.
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
from torch import Tensor

from rllib_diffusion import columns as C
from rllib_diffusion.data.transitions import StandardNormalizer, TransitionLayout
from rllib_diffusion.diffusion import DiffusionMLP, NoiseSchedule, sample_chain
from rllib_diffusion.modules.apis import TrainPrecisionAPI
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET
from rllib_diffusion.modules.model_config import SCHEDULES, ConfigError

#: Batch column (RLlib's) → transition column, in flattening order.
_BATCH_COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
)


@dataclass
class SynthERModelConfig:
    """The generator's network, schedule and data statistics (its ``model_config``).

    Attributes:
        obs_dim: Do.
        action_dim: Da.
        width: hidden width of the residual MLP denoiser (SynthER: 2048; the default
            here is CPU-sized).
        depth: hidden layers of the denoiser (SynthER: 6).
        time_dim: size of the timestep embedding.
        denoising_steps: K, DDPM steps of training and sampling.
        schedule: noise schedule ("cosine", "vp" or "linear").
        ddim_steps: sample with this many DDIM steps instead of K DDPM steps (None: DDPM).
        normalization: ``StandardNormalizer.to_dict()`` of the flattened training data.
        clip_x0: clamp of the predicted clean sample while sampling, in standardised
            units (set from the data: its largest |z| plus one).
        env_id: the env the data came from.
    """

    obs_dim: int
    action_dim: int
    width: int = 512
    depth: int = 4
    time_dim: int = 16
    denoising_steps: int = 100
    schedule: str = "cosine"
    ddim_steps: int | None = None
    normalization: dict[str, Any] | None = field(default=None, repr=False)
    clip_x0: float | None = None
    env_id: str | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"SynthERModelConfig: {msg}")

        if self.obs_dim < 1 or self.action_dim < 1:
            bad("obs_dim and action_dim must be >= 1.")
        if self.width < 1 or self.depth < 1 or self.time_dim < 2 or self.time_dim % 2:
            bad("width and depth must be >= 1 and time_dim an even number >= 2.")
        if self.denoising_steps < 1:
            bad(f"denoising_steps={self.denoising_steps} must be >= 1.")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}.")
        if self.ddim_steps is not None and not 1 <= self.ddim_steps <= self.denoising_steps:
            bad(f"ddim_steps={self.ddim_steps} must be in [1, {self.denoising_steps}].")

    @property
    def layout(self) -> TransitionLayout:
        return TransitionLayout(self.obs_dim, self.action_dim)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthERModelConfig:
        """Build from a dict, ignoring keys RLlib adds to ``model_config``."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class SynthERModule(TorchRLModule, TrainPrecisionAPI):
    """Unconditional transition generator; ``generate(n)`` is its public sampling API.

    The observation/action spaces are those of the data (they size nothing: the
    layout comes from the model config). It has no policy: ``forward_inference`` and
    ``forward_exploration`` are not meant for EnvRunners.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = SynthERModelConfig.from_dict(dict(self.model_config or {}))
        if cfg.normalization is None:
            raise ConfigError("SynthERModelConfig.normalization is required (fit it on the data).")
        self.generator_config = cfg
        self.layout = cfg.layout
        self.normalizer = StandardNormalizer.from_dict(cfg.normalization)
        self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.denoising_steps)
        net = DiffusionMLP(
            self.layout.dim,
            1,
            0,
            time_dim=cfg.time_dim,
            hidden_dims=(cfg.width,) * cfg.depth,
            layer_norm=True,
            residual=True,
        )
        self.net = net
        self.ema_net = copy.deepcopy(net).requires_grad_(False)
        # Gradient updates seen by the EMA; a buffer so checkpoints restore it.
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))

    # ---------------------------------------------------------------- training
    def flat_normalized(self, batch: dict[str, Any]) -> Tensor:
        """``(B, D)`` standardised transitions of an RLlib batch."""
        cols = dict(zip(self.layout.widths(), (batch[c].float() for c in _BATCH_COLUMNS)))
        return self.normalizer.normalize(self.layout.flatten(cols))

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Noise the standardised transitions, predict the noise: ``PREDICTION`` and
        ``TARGET`` ``(B, 1, D)`` for the learner's MSE."""
        x0 = self.flat_normalized(batch).unsqueeze(1)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        with self.train_autocast(x0.device):
            return {PREDICTION: self.net(x_t, t, None), TARGET: noise}

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        raise NotImplementedError(
            "SynthERModule generates transitions (generate(n)); it does not act."
        )

    _forward_exploration = _forward_inference

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate_normalized(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``(n, D)`` standardised samples from the EMA denoiser."""
        cfg = self.generator_config
        device = self.schedule.betas.device
        x_init = torch.randn((n, 1, self.layout.dim), generator=generator, device=device)
        out = sample_chain(
            lambda x, t: self.ema_net(x, t, None),
            self.schedule,
            (n, 1, self.layout.dim),
            method="ddim" if cfg.ddim_steps else "ddpm",
            ddim_steps=cfg.ddim_steps,
            clip_x0=cfg.clip_x0,
            noise_clip=None,
            final_clip=None,
            x_init=x_init,
            generator=generator,
        )
        return out.actions[:, 0]

    def generate(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """``n`` transitions in data units: ``{obs, actions, rewards, new_obs, terminateds}``
        (float32; terminal flags thresholded at 0.5 to exactly 0.0 or 1.0)."""
        flat = self.normalizer.unnormalize(self.generate_normalized(n, generator=generator))
        cols = self.layout.split(flat.cpu().numpy().astype(np.float32))
        cols[C.TERMINATEDS] = threshold_terminals(cols[C.TERMINATEDS])
        return cols


def threshold_terminals(raw: np.ndarray) -> np.ndarray:
    """Generated terminal flags (continuous) → exactly 0.0 or 1.0 (threshold 0.5)."""
    return (np.asarray(raw) >= 0.5).astype(np.float32)
