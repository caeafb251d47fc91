"""Train a Gaussian behaviour policy with RLlib PPO, keeping checkpoints along the way.

The checkpoints are used to record "medium" (about a third of expert return) and
stronger datasets with ``rllib-diffusion collect --policy <checkpoint>``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class BehaviorPPOSettings:
    """PPO settings for MuJoCo locomotion behaviour policies (small Gaussian MLP)."""

    num_env_runners: int = 1
    num_envs_per_env_runner: int = 8
    train_batch_size: int = 8192
    minibatch_size: int = 512
    num_epochs: int = 10
    lr: float = 3e-4
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    seed: int = 0


def behavior_ppo_config(env_id: str, settings: BehaviorPPOSettings | None = None):
    """An RLlib ``PPOConfig`` for a Gaussian MLP policy with a MeanStdFilter."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    s = settings or BehaviorPPOSettings()
    return (
        PPOConfig()
        .environment(env_id)
        .env_runners(
            num_env_runners=s.num_env_runners,
            num_envs_per_env_runner=s.num_envs_per_env_runner,
            env_to_module_connector=lambda env, spaces=None, device=None: MeanStdFilter(),
        )
        .training(
            train_batch_size_per_learner=s.train_batch_size,
            minibatch_size=s.minibatch_size,
            num_epochs=s.num_epochs,
            lr=s.lr,
            gamma=s.gamma,
            lambda_=s.lambda_,
            clip_param=s.clip_param,
            vf_clip_param=float("inf"),
            use_kl_loss=False,
            entropy_coeff=0.0,
            grad_clip=0.5,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(s.hidden),
                fcnet_activation=s.activation,
                vf_share_layers=False,
            )
        )
        .debugging(seed=s.seed)
    )


def _resume_point(out: Path, env_id: str, settings: BehaviorPPOSettings) -> list[dict[str, Any]]:
    """The checkpoint index of the run in ``out`` to continue; one-line ``ConfigError``
    when there is none, or it trained another env or other settings."""
    from rllib_diffusion.modules.model_config import ConfigError

    path = out / "checkpoints.json"
    if not path.is_file():
        raise ConfigError(f"--resume: '{out}' has no checkpoints.json; start without --resume.")
    index = json.loads(path.read_text())
    if index.get("env_id") != env_id or not index.get("checkpoints"):
        raise ConfigError(
            f"--resume: '{out}' holds a run of {index.get('env_id')} with "
            f"{len(index.get('checkpoints', []))} checkpoints, not one of --env {env_id}."
        )
    stored = {**index.get("settings", {}), "hidden": tuple(index["settings"]["hidden"])}
    differ = sorted(k for k, v in asdict(settings).items() if stored.get(k) != v)
    if differ:
        raise ConfigError(f"--resume: settings {differ} differ from the run in '{out}'.")
    return index["checkpoints"]


def _write_index(out: Path, env_id: str, settings: BehaviorPPOSettings, index: list) -> None:
    from rllib_diffusion.utils.io import write_json_atomic
    from rllib_diffusion.utils.runtime import run_metadata

    payload = {
        "env_id": env_id,
        "settings": asdict(settings),
        "checkpoints": index,
        "meta": run_metadata(),
    }
    write_json_atomic(out / "checkpoints.json", payload)


def train_behavior_policy(
    env_id: str,
    out_dir: str | os.PathLike,
    *,
    target_return: float | None = None,
    max_env_steps: int = 3_000_000,
    max_minutes: float = 60.0,
    checkpoint_every: int = 5,
    settings: BehaviorPPOSettings | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train PPO on ``env_id`` until ``target_return``, ``max_env_steps`` or ``max_minutes``.

    Writes ``out_dir/checkpoint_<iter>`` every ``checkpoint_every`` iterations plus
    ``out_dir/progress.jsonl`` (one line per iteration) and ``out_dir/checkpoints.json``
    (return at each kept checkpoint), so that a policy of a chosen strength can be
    picked later. ``resume`` continues the run in ``out_dir`` from its last checkpoint
    (iterations, env steps and minutes count on, so the budgets are the run's totals).
    Returns a summary dict.
    """
    from rllib_diffusion.envs.tasks import check_env_id
    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    check_env_id(env_id)  # before Ray starts: an unknown id is one line, not a worker crash
    settings = settings or BehaviorPPOSettings()
    out = Path(out_dir).resolve()
    index = _resume_point(out, env_id, settings) if resume else []
    limit_threads()
    init_ray()
    out.mkdir(parents=True, exist_ok=True)
    algo = behavior_ppo_config(env_id, settings).build_algo()
    try:
        if index:
            algo.restore_from_path(index[-1]["path"])
        iteration, env_steps = _train_loop(
            algo, out, env_id, settings, index,
            target_return=target_return, max_env_steps=max_env_steps,
            max_minutes=max_minutes, checkpoint_every=checkpoint_every,
        )  # fmt: skip
    finally:
        algo.stop()
    return {
        "env_id": env_id,
        "iterations": iteration,
        "env_steps": env_steps,
        "best_checkpoint_return": max((c["return"] for c in index), default=float("nan")),
        "checkpoints": index,
    }


def _rewind_progress(out: Path, iteration: int) -> float:
    """Drop the progress lines after ``iteration`` (a resumed run repeats them; written
    atomically) and return the run's wall minutes up to it."""
    from rllib_diffusion.utils.io import write_jsonl_atomic

    path = out / "progress.jsonl"
    if not path.is_file():
        return 0.0
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    kept = [x for x in lines if x["iteration"] <= iteration]
    write_jsonl_atomic(path, kept)
    return float(kept[-1]["minutes"]) if kept else 0.0


def _train_loop(
    algo: Any,
    out: Path,
    env_id: str,
    settings: BehaviorPPOSettings,
    index: list[dict[str, Any]],
    *,
    target_return: float | None,
    max_env_steps: int,
    max_minutes: float,
    checkpoint_every: int,
) -> tuple[int, int]:
    """Train until a budget or the target is reached; appends kept checkpoints to
    ``index`` (which holds a resumed run's checkpoints). Returns (iteration, env steps)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    iteration = index[-1]["iteration"] if index else 0
    base = index[-1]["env_steps"] if index else 0
    offset: int | None = None  # a restored run may count env steps from 0 again
    start = time.perf_counter() - 60 * (_rewind_progress(out, iteration) if index else 0.0)
    env_steps = base
    with open(out / "progress.jsonl", "a") as progress:
        while True:
            iteration += 1
            result = algo.train()
            lifetime = int(result.get("num_env_steps_sampled_lifetime", 0))
            offset = (base if lifetime < base else 0) if offset is None else offset
            env_steps = lifetime + offset
            ret = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN, float("nan"))
            minutes = (time.perf_counter() - start) / 60
            line = {"iteration": iteration, "env_steps": env_steps, "return": ret}
            progress.write(json.dumps({**line, "minutes": minutes}) + "\n")
            progress.flush()
            print(
                f"[behavior] iter {iteration:4d}  env_steps {env_steps:9d}  return {ret:8.1f}  "
                f"{minutes:6.1f} min",
                flush=True,
            )
            done = (
                (target_return is not None and ret >= target_return)
                or env_steps >= max_env_steps
                or minutes >= max_minutes
            )
            if iteration % checkpoint_every == 0 or done:
                path = out / f"checkpoint_{iteration:05d}"
                algo.save_to_path(str(path))
                index.append({"path": str(path), **line})
                _write_index(out, env_id, settings, index)
            if done:
                return iteration, env_steps
