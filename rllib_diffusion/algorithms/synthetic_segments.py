"""Trajectory segments of recent on-policy experience and a small diffusion generator of
them (DiffPPO's synthetic experience; shared above the families, no ray import).

Glossary: N segments, H segment length (steps), Do observation dim, Da action dim,
D = (H+1)·Do + H·Da + H + 1 the flattened segment dim, K denoising steps.

A segment is ``(s_0..s_H, a_0..a_{H-1}, r_0..r_{H-1}, d)`` cut from one episode (or
episode chunk) of an EnvRunner; ``d`` = 1 only for the window that ends at the last
step of an episode that terminated (so a segment terminates at its last step or not at
all). :class:`SegmentFIFO` keeps the most recent segments (flattened, float32).
:class:`SegmentGenerator` is SynthER's recipe (Lu et al. 2023: an unconditional DDPM
over per-dimension standardised vectors, residual MLP denoiser with LayerNorm, EMA of
the weights sampled from) applied to whole segments instead of single transitions, on
the shared diffusion core. Its standardisation is refitted on the FIFO at every
retraining and its weights are warm-started from the previous retraining.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rllib_diffusion.data.transitions import StandardNormalizer
from rllib_diffusion.diffusion import DiffusionMLP, NoiseSchedule, ema_step_, sample_chain

#: Id prefix of synthetic episodes (learner connectors that keep statistics of real
#: experience, e.g. DPPO's reward scaling, leave them out: :func:`is_synthetic_episode`).
SYNTHETIC_EPISODE_PREFIX = "synthetic-"


def is_synthetic_episode(episode: Any) -> bool:
    """Whether ``episode`` (anything with an ``id_``) was generated, not sampled."""
    return str(getattr(episode, "id_", "")).startswith(SYNTHETIC_EPISODE_PREFIX)


@dataclass(frozen=True)
class SegmentLayout:
    """Flattening of a segment: ``[s_0..s_H | a_0..a_{H-1} | r_0..r_{H-1} | d]``."""

    obs_dim: int
    action_dim: int
    horizon: int

    @property
    def dim(self) -> int:
        h = self.horizon
        return (h + 1) * self.obs_dim + h * self.action_dim + h + 1

    def flatten(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, done
    ) -> np.ndarray:
        """``(N, H+1, Do), (N, H, Da), (N, H), (N,)`` → ``(N, D)`` float32."""
        n = len(obs)
        parts = (obs, actions, rewards, np.asarray(done, dtype=np.float32)[:, None])
        return np.concatenate([np.reshape(p, (n, -1)) for p in parts], axis=1).astype(np.float32)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """``(N, D)`` → ``{obs (N, H+1, Do), actions (N, H, Da), rewards (N, H),
        terminated (N,) bool (thresholded at 0.5)}``."""
        h, do, da = self.horizon, self.obs_dim, self.action_dim
        n = len(flat)
        edges = np.cumsum([(h + 1) * do, h * da, h])
        obs, actions, rewards, done = np.split(np.asarray(flat, dtype=np.float32), edges, axis=1)
        return {
            "obs": obs.reshape(n, h + 1, do),
            "actions": actions.reshape(n, h, da),
            "rewards": rewards.reshape(n, h),
            "terminated": done[:, 0] >= 0.5,
        }


def episode_segments(
    obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: bool, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``horizon`` steps of one episode (chunk) with T steps (``obs`` has
    T+1 rows): starts 0, H, 2H, … plus one window ending at step T (so the episode's
    end is always covered); ``d`` = 1 only for that last window when ``terminated``.
    Returns ``(obs (N, H+1, Do), actions (N, H, Da), rewards (N, H), d (N,))``; N = 0
    when T < H."""
    obs, actions = np.asarray(obs, np.float32), np.asarray(actions, np.float32)
    rewards = np.asarray(rewards, np.float32)
    steps = len(actions)
    if len(obs) != steps + 1 or len(rewards) != steps:
        raise ValueError(
            f"an episode with {steps} actions needs {steps + 1} observations and {steps} "
            f"rewards; got {len(obs)} and {len(rewards)}."
        )
    if steps < horizon:
        do, da = obs.shape[-1], actions.shape[-1]
        z = np.zeros
        return (
            z((0, horizon + 1, do), np.float32),
            z((0, horizon, da), np.float32),
            z((0, horizon), np.float32),
            z((0,), np.float32),
        )
    starts = sorted(set(range(0, steps - horizon + 1, horizon)) | {steps - horizon})
    seg_obs = np.stack([obs[i : i + horizon + 1] for i in starts])
    seg_act = np.stack([actions[i : i + horizon] for i in starts])
    seg_rew = np.stack([rewards[i : i + horizon] for i in starts])
    done = np.zeros(len(starts), np.float32)
    done[-1] = float(bool(terminated))
    return seg_obs, seg_act, seg_rew, done


class SegmentFIFO:
    """The most recent ``capacity`` flattened segments (oldest dropped first)."""

    def __init__(self, capacity: int, dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.dim = int(capacity), int(dim)
        self.data = np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        return len(self.data)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float32).reshape(-1, self.dim)
        self.data = np.concatenate([self.data, rows])[-self.capacity :]

    def get_state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "dim": self.dim, "data": self.data.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        if int(state["dim"]) != self.dim:
            raise ValueError(f"segment FIFO state has dim {state['dim']}, expected {self.dim}")
        self.data = np.asarray(state["data"], np.float32)[-self.capacity :]


class SegmentGenerator:
    """DDPM over standardised flat vectors ``(N, dim)``, optionally conditioned on
    standardised ``(N, cond_dim)`` vectors (pure torch, CPU).

    ``train(data, steps, cond)`` refits the standardisations on ``data`` (and ``cond``)
    and takes ``steps`` Adam steps of ε-regression on uniformly drawn rows (warm-started
    weights); ``generate(n, cond)`` samples n vectors from the EMA weights (DDPM, x̂0
    clamped to the training data's largest |z| + 1). All randomness comes from
    ``self.rng``. Unconditional over :class:`SegmentLayout` vectors it generates whole
    segments; conditioned on (s, a) over (s′ − s, r, d) it is a one-step dynamics model.
    """

    def __init__(
        self,
        dim: int,
        *,
        cond_dim: int = 0,
        width: int = 256,
        depth: int = 3,
        denoising_steps: int = 20,
        lr: float = 3e-4,
        batch_size: int = 256,
        ema_decay: float = 0.995,
        seed: int = 0,
    ) -> None:
        self.dim, self.cond_dim, self.batch_size = int(dim), int(cond_dim), int(batch_size)
        self.ema_decay = float(ema_decay)
        self.rng = torch.Generator().manual_seed(int(seed))
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))  # the network's initialisation, reproducibly
        self.net = DiffusionMLP(
            self.dim, 1, self.cond_dim, hidden_dims=(width,) * depth, layer_norm=True, residual=True
        )
        torch.random.set_rng_state(torch_state)
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.schedule = NoiseSchedule.from_name("cosine", denoising_steps)
        self.normalizer: StandardNormalizer | None = None
        self.cond_normalizer: StandardNormalizer | None = None
        self.clip_x0: float | None = None
        self.steps_done = 0

    def train(self, data: np.ndarray, steps: int, cond: np.ndarray | None = None) -> float:
        """``steps`` gradient steps on rows of ``data`` (N, dim) [given ``cond`` (N,
        cond_dim)]; the mean loss."""
        self.normalizer = StandardNormalizer.fit(data)
        z = _standardised(self.normalizer, data)
        c = None
        if self.cond_dim:
            self.cond_normalizer = StandardNormalizer.fit(cond)
            c = _standardised(self.cond_normalizer, cond)
        self.clip_x0 = float(z.abs().max()) + 1.0
        losses = []
        for _ in range(int(steps)):
            idx = torch.randint(0, len(z), (self.batch_size,), generator=self.rng)
            x0 = z[idx].unsqueeze(1)
            noise = torch.randn(x0.shape, generator=self.rng)
            t = torch.randint(0, self.schedule.num_steps, (len(idx),), generator=self.rng)
            eps = self.net(self.schedule.q_sample(x0, t, noise), t, None if c is None else c[idx])
            loss = torch.mean((eps - noise) ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.steps_done += 1
            ema_step_(
                self.ema_net, self.net, self.steps_done, decay=self.ema_decay, start=100, every=1
            )
            losses.append(loss.item())
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def generate(self, n: int, cond: np.ndarray | None = None) -> np.ndarray:
        """``(n, dim)`` float32 samples in data units [given ``cond`` (n, cond_dim)]."""
        if self.normalizer is None:
            raise RuntimeError("SegmentGenerator.generate before any train()")
        c = _standardised(self.cond_normalizer, cond) if self.cond_dim else None
        shape = (int(n), 1, self.dim)
        out = sample_chain(
            lambda x, t: self.ema_net(x, t, c),
            self.schedule,
            shape,
            method="ddpm",
            clip_x0=self.clip_x0,
            noise_clip=None,
            final_clip=None,
            x_init=torch.randn(shape, generator=self.rng),
            generator=self.rng,
        )
        return self.normalizer.unnormalize(out.actions[:, 0].double()).float().numpy()

    def get_state(self) -> dict[str, Any]:
        norm = self.normalizer
        return {
            "net": self.net.state_dict(),
            "ema_net": self.ema_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "normalizer": _stats(norm),
            "cond_normalizer": _stats(self.cond_normalizer),
            "clip_x0": self.clip_x0,
            "steps_done": self.steps_done,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.ema_net.load_state_dict(state["ema_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        norm = state["normalizer"]
        self.normalizer = None if norm is None else StandardNormalizer(**norm)
        cond = state.get("cond_normalizer")
        self.cond_normalizer = None if cond is None else StandardNormalizer(**cond)
        self.clip_x0, self.steps_done = state["clip_x0"], int(state["steps_done"])


def _standardised(normalizer: StandardNormalizer, x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(normalizer.normalize(np.asarray(x, np.float64)), dtype=torch.float32)


def _stats(norm: StandardNormalizer | None) -> dict[str, np.ndarray] | None:
    return None if norm is None else {"mean": norm.mean, "std": norm.std}


def segment_transitions(segs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The one-step transitions of :meth:`SegmentLayout.split` segments as a dynamics
    model's data: ``x`` = ``[s_{t+1} − s_t, r_t, d_t]`` and ``cond`` = ``[s_t, a_t]``
    (``d_t`` = the segment's flag at its last step, else 0), ``(N·H, ·)`` each."""
    obs, actions = segs["obs"], segs["actions"]
    n, h = actions.shape[:2]
    done = np.zeros((n, h), np.float32)
    done[:, -1] = segs["terminated"]
    cond = np.concatenate([obs[:, :-1], actions], axis=2).reshape(n * h, -1)
    x = np.concatenate(
        [obs[:, 1:] - obs[:, :-1], segs["rewards"][..., None], done[..., None]], axis=2
    )
    return x.reshape(n * h, -1).astype(np.float32), cond.astype(np.float32)
