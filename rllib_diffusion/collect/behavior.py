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


def train_behavior_policy(
    env_id: str,
    out_dir: str | os.PathLike,
    *,
    target_return: float | None = None,
    max_env_steps: int = 3_000_000,
    max_minutes: float = 60.0,
    checkpoint_every: int = 5,
    settings: BehaviorPPOSettings | None = None,
) -> dict[str, Any]:
    """Train PPO on ``env_id`` until ``target_return``, ``max_env_steps`` or ``max_minutes``.

    Writes ``out_dir/checkpoint_<iter>`` every ``checkpoint_every`` iterations plus
    ``out_dir/progress.jsonl`` (one line per iteration) and ``out_dir/checkpoints.json``
    (return at each kept checkpoint), so that a policy of a chosen strength can be
    picked later. Returns a summary dict.
    """
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    from rllib_diffusion.envs.tasks import check_env_id
    from rllib_diffusion.utils.runtime import init_ray, limit_threads, run_metadata

    check_env_id(env_id)  # before Ray starts: an unknown id is one line, not a worker crash
    limit_threads()
    init_ray()
    settings = settings or BehaviorPPOSettings()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    algo = behavior_ppo_config(env_id, settings).build_algo()
    index: list[dict[str, Any]] = []
    start = time.perf_counter()
    env_steps = 0
    best = -float("inf")
    iteration = 0
    try:
        with open(out / "progress.jsonl", "a") as progress:
            while True:
                iteration += 1
                result = algo.train()
                env_steps = int(result.get("num_env_steps_sampled_lifetime", 0))
                ret = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN, float("nan"))
                minutes = (time.perf_counter() - start) / 60
                line = {
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "return": ret,
                    "minutes": minutes,
                }
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                logger.info(
                    "iter %d  env_steps %d  return %.1f  %.1f min",
                    iteration,
                    env_steps,
                    ret,
                    minutes,
                )
                print(
                    f"[behavior] iter {iteration:4d}  env_steps {env_steps:9d}  return {ret:8.1f}  {minutes:6.1f} min",
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
                    index.append(
                        {
                            "path": str(path),
                            "iteration": iteration,
                            "env_steps": env_steps,
                            "return": ret,
                        }
                    )
                    best = max(best, ret)
                    tmp = out / "checkpoints.json.tmp"
                    tmp.write_text(
                        json.dumps(
                            {
                                "env_id": env_id,
                                "settings": asdict(settings),
                                "checkpoints": index,
                                "meta": run_metadata(),
                            },
                            indent=1,
                        )
                    )
                    os.replace(tmp, out / "checkpoints.json")
                if done:
                    break
    finally:
        algo.stop()
    return {
        "env_id": env_id,
        "iterations": iteration,
        "env_steps": env_steps,
        "best_checkpoint_return": best,
        "checkpoints": index,
    }
