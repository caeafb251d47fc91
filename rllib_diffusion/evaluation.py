"""Evaluate a policy RLModule in its real env (outside RLlib's EnvRunners).

Used by ``rllib-diffusion evaluate`` and the benchmarks: runs N episodes in lock-step
(one batched forward per decision for all running episodes; at most ``max_envs`` envs
at once, each starting the next episode when its own ends), reports the mean ± std
return over env steps and the normalised score, and can record a video rendered
offscreen with MuJoCo (``MUJOCO_GL=egl`` or ``osmesa``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion.envs.chunking import make_chunked_env
from rllib_diffusion.envs.tasks import eval_envs_at_once, normalized, reference_scores

logger = logging.getLogger(__name__)


def evaluate_module(
    module: Any,
    env_config: dict[str, Any],
    *,
    num_episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    video_path: str | None = None,
    video_size: tuple[int, int] = (256, 256),
    progress: bool = False,
    dataset: Mapping[str, Any] | None = None,
    max_envs: int | None = None,
    episode_end: Callable[[int, Any, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``module`` in ``make_chunked_env(env_config)``.

    ``dataset``: the training data's summary (a checkpoint meta's ``dataset``), whose
    reference scores, if it has them, normalise the returns
    (:func:`rllib_diffusion.envs.tasks.reference_scores`).

    Episode ``i`` resets its env with ``seed + i``; torch's RNG is seeded with ``seed``
    for the duration of the call, so results are reproducible.

    ``max_envs``: envs alive at once (an env that finishes its episode starts the next
    one); None: the task's :func:`~rllib_diffusion.envs.tasks.eval_envs_at_once` (the
    robomimic tasks hold ~100 MB per env), else one env per episode.

    ``episode_end(i, env, info)``: called when episode ``i`` ends, with its env (before
    the env is reset for another episode) and the last step's info, e.g. to read what
    the env recorded about the episode.

    Returns a dict with ``episode_returns`` (summed env rewards), ``episode_lengths``
    (env steps), ``episode_return_mean/std``, ``normalized_score`` (when the task has
    reference scores), ``env_steps`` and ``seconds``; for envs whose infos carry
    ``"success"`` (the robomimic tasks) also ``success_rate`` and ``episode_successes``
    (an episode succeeds if any of its steps reported success).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    if max_envs is not None and max_envs < 1:
        raise ValueError(f"max_envs must be >= 1 (or None), got {max_envs}.")
    max_envs = max_envs or eval_envs_at_once(env_config.get("env_id")) or num_episodes
    # Diffusion sampling draws from torch's global RNG: seed it (and restore it after) so
    # that an evaluation is reproducible from its seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = _evaluate(
            module,
            env_config,
            num_episodes=num_episodes,
            seed=seed,
            deterministic=deterministic,
            video_path=video_path,
            video_size=video_size,
            progress=progress,
            max_envs=max_envs,
            episode_end=episode_end,
        )
    refs = reference_scores(env_config.get("env_id"), dataset)
    if refs is not None:
        returns = np.asarray(result["episode_returns"], dtype=np.float64)
        result["normalized_score"] = float(normalized(returns, refs).mean())
        result["normalized_score_refs"] = refs
    return result


def _evaluate(
    module: Any,
    env_config: dict[str, Any],
    *,
    num_episodes: int,
    seed: int,
    deterministic: bool,
    video_path: str | None,
    video_size: tuple[int, int],
    progress: bool,
    max_envs: int | None,
    episode_end: Callable[[int, Any, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    envs = _episode_envs(env_config, min(num_episodes, max_envs), video_path, video_size)
    run = _Episodes(num_episodes, started=len(envs))
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    episode_of = list(range(len(envs)))  # the episode each env runs; None: idle
    frames: list[np.ndarray] = [envs[0].render()] if video_path else []
    device = next(iter(module.parameters())).device
    decisions = 0
    while any(e is not None for e in episode_of):
        slots = [k for k, e in enumerate(episode_of) if e is not None]
        batch = torch.as_tensor(np.stack([obs[k] for k in slots]), dtype=torch.float32)
        with torch.no_grad():
            actions = policy_actions(module, batch.to(device), deterministic=deterministic)
        actions = actions.cpu().numpy()
        for j, k in enumerate(slots):
            i = episode_of[k]
            obs[k], reward, terminated, truncated, info = envs[k].step(actions[j])
            run.record(i, reward, info)
            if video_path and i == 0:
                frames.extend(info.get("frames", []))
            if terminated or truncated:
                if episode_end is not None:
                    episode_end(i, envs[k], info)
                if i == 0 and video_path:
                    envs[k].record_frames = False  # the video is episode 0's
                episode_of[k] = run.next_episode()
                if episode_of[k] is not None:
                    obs[k] = envs[k].reset(seed=seed + episode_of[k])[0]
        decisions += 1
        if progress and decisions % 50 == 0:
            print(
                f"[evaluate] decision {decisions}: {run.finished}/{num_episodes} episodes done",
                flush=True,
            )
    for env in envs:
        env.close()
    result = run.result(env_config, deterministic, time.perf_counter() - start)
    if video_path:
        result["video"] = write_video(frames, video_path)
    return result


class _Episodes:
    """Per-episode returns, lengths and successes of one evaluation; hands out the
    episodes still to start when an env comes free."""

    def __init__(self, num_episodes: int, *, started: int) -> None:
        self.num_episodes, self.started, self.finished = num_episodes, started, 0
        self.returns = np.zeros(num_episodes)
        self.lengths = np.zeros(num_episodes, dtype=np.int64)
        self.successes = np.zeros(num_episodes, dtype=bool)
        self.reports_success = False

    def next_episode(self) -> int | None:
        """Called when an episode ends: the index of the next one to start (episodes
        start in order), or None when all have started."""
        self.finished += 1
        if self.started >= self.num_episodes:
            return None
        self.started += 1
        return self.started - 1

    def record(self, i: int, reward: float, info: dict[str, Any]) -> None:
        self.returns[i] += reward
        self.lengths[i] += info.get("env_steps", 1)
        if "success" in info:
            self.reports_success = True
            self.successes[i] |= bool(info["success"])

    def result(self, env_config: dict[str, Any], deterministic: bool, seconds: float) -> dict:
        result: dict[str, Any] = {
            "env_id": env_config.get("env_id"),
            "num_episodes": self.num_episodes,
            "deterministic": deterministic,
            "episode_returns": self.returns.tolist(),
            "episode_lengths": self.lengths.tolist(),
            "episode_return_mean": float(self.returns.mean()),
            "episode_return_std": float(self.returns.std()),
            "env_steps": int(self.lengths.sum()),
            "seconds": seconds,
        }
        if self.reports_success:
            result["success_rate"] = float(self.successes.mean())
            result["episode_successes"] = self.successes.tolist()
        return result


def _episode_envs(
    env_config: dict[str, Any],
    num_episodes: int,
    video_path: str | None,
    video_size: tuple[int, int],
) -> list[Any]:
    """One chunk env per episode; the first renders frames when a video is asked for."""
    envs = []
    for i in range(num_episodes):
        cfg = dict(env_config)
        if video_path and i == 0:
            cfg["env_kwargs"] = {
                **cfg.get("env_kwargs", {}),
                "render_mode": "rgb_array",
                "width": video_size[0],
                "height": video_size[1],
            }
            cfg["record_frames"] = True
        envs.append(make_chunked_env(cfg))
    return envs


def policy_actions(module: Any, obs: torch.Tensor, *, deterministic: bool) -> torch.Tensor:
    """Actions of ``module`` for a batch ``obs`` (B, obs_dim), shaped like its action space.

    Modules that write ``Columns.ACTIONS`` themselves (diffusion) are used as they are.
    RLlib's default modules (Gaussian BC/PPO) only return ``action_dist_inputs``; like
    RLlib's EnvRunners, we build the module's action distribution from them, take
    its deterministic form (the Gaussian mean) or a sample, and clip to the Box bounds.
    """
    if deterministic:
        out = module.forward_inference({Columns.OBS: obs})
    else:
        out = module.forward_exploration({Columns.OBS: obs})
    if Columns.ACTIONS in out:
        return out[Columns.ACTIONS]
    if Columns.ACTION_DIST_INPUTS not in out:
        raise ValueError(
            f"{type(module).__name__} returned neither '{Columns.ACTIONS}' nor "
            f"'{Columns.ACTION_DIST_INPUTS}' (got {sorted(out)}); cannot act with it."
        )
    dist_cls = (
        module.get_inference_action_dist_cls()
        if deterministic
        else module.get_exploration_action_dist_cls()
    )
    dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
    actions = dist.to_deterministic().sample() if deterministic else dist.sample()
    space = getattr(module, "action_space", None)
    if space is not None and hasattr(space, "low"):
        low = torch.as_tensor(space.low, dtype=actions.dtype, device=actions.device)
        high = torch.as_tensor(space.high, dtype=actions.dtype, device=actions.device)
        actions = torch.clamp(actions, low, high)
    return actions


def write_video(frames: list[np.ndarray], path: str, fps: int = 30) -> str:
    """Write frames to ``path`` (mp4 via imageio-ffmpeg, or .gif) atomically."""
    try:
        import imageio.v2 as imageio
    except ImportError as err:  # pragma: no cover - depends on extras
        raise ImportError(
            "Writing videos needs imageio: pip install 'rllib-diffusion[viz]'."
        ) from err
    if any(f is None for f in frames):
        raise RuntimeError(
            "The env returned no frames; set MUJOCO_GL=egl (or osmesa) for offscreen rendering."
        )
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    imageio.mimsave(tmp, frames, fps=fps) if ext == ".gif" else imageio.mimsave(
        tmp, frames, fps=fps, macro_block_size=1
    )
    os.replace(tmp, path)
    return path


def evaluate_checkpoint(
    checkpoint: str,
    *,
    episodes: int = 10,
    seed: int = 0,
    stochastic: bool = False,
    video: str | None = None,
    num_candidates: int | None = None,
    action_selection: str | None = None,
) -> dict[str, Any]:
    """Evaluate any checkpoint of this package in the env it was trained for (``rllib-
    diffusion evaluate``); prints one summary line. ``num_candidates`` /
    ``action_selection`` change how a Q-learner picks its action (default: as trained).
    """
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.utils.runtime import limit_threads

    if video:
        os.environ.setdefault("MUJOCO_GL", "egl")
    limit_threads()
    module, meta = load_policy_module(checkpoint)
    if meta.algorithm == "DSRL":  # a noise policy: it acts through the frozen base policy
        from rllib_diffusion.algorithms.dsrl.finetune import load_steered_policy

        module = load_steered_policy(checkpoint)
    acting = None
    if num_candidates is not None or action_selection is not None:
        from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import set_acting

        acting = set_acting(
            module, num_candidates=num_candidates, action_selection=action_selection
        )
    result = evaluate_module(
        module,
        checkpoint_env_config(checkpoint, meta),
        num_episodes=episodes,
        seed=seed,
        deterministic=not stochastic,
        video_path=video,
        progress=True,
        dataset=meta.dataset,
    )
    result.update(checkpoint=os.path.abspath(checkpoint), algorithm=meta.algorithm)
    if acting is not None:
        result["acting"] = acting
    line = (
        f"{meta.algorithm} on {result['env_id']}: return {result['episode_return_mean']:.1f} "
        f"± {result['episode_return_std']:.1f} over {episodes} episodes"
    )
    if "normalized_score" in result:
        line += f", normalised score {result['normalized_score']:.1f}"
    if "success_rate" in result:
        line += f", success rate {result['success_rate']:.2f}"
    print(line + (f"\nvideo: {result['video']}" if video else ""), flush=True)
    return result


def checkpoint_env_config(checkpoint: str, meta: Any) -> dict[str, Any]:
    """The env a checkpoint's policy acts in: from its policy config (diffusion policies)
    or its stored env config (RLlib default modules: GaussianBC / GaussianPPO)."""
    from rllib_diffusion.checkpoints import CheckpointError
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    if meta.policy_config is not None:
        return DiffusionPolicyConfig.from_dict(meta.policy_config, strict=False).env_config()
    if meta.env_config is not None:
        return meta.env_config
    raise CheckpointError(
        f"Checkpoint '{checkpoint}' ({meta.algorithm!r}) records neither a policy_config nor "
        "an env_config; cannot rebuild its env."
    )
