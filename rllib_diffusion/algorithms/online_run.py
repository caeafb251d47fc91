"""Offline → online run (``rllib-diffusion online``): an offline checkpoint of IDQL, FQL,
Diffusion-QL or DAC keeps training on EnvRunner data.

checkpoint of ``rllib-diffusion offline`` → same algorithm, losses, optimizer states,
targets and EMA, now fed from a replay buffer seeded with the offline dataset and filled
by EnvRunners (``algorithms/online.py``) → checkpoints, ``progress.jsonl``,
``result.json`` with the return before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion.utils.io import write_json_atomic


@dataclass
class OnlineSettings:
    """Settings of an offline → online run (CLI flags map 1:1 onto these).

    Attributes:
        checkpoint: checkpoint directory of ``rllib-diffusion offline`` (any ``--algo``).
        out_dir: output directory.
        dataset: offline data seeding the replay buffer (default: the checkpoint's).
        env_steps: online env-step budget.
        env_steps_per_iteration: env steps sampled per iteration (all EnvRunners).
        updates_per_env_step: gradient steps per new env step (update-to-data ratio).
        num_env_runners / num_envs_per_env_runner: rollout layout.
        eval_interval: deterministic evaluation every this many iterations (0: end only).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: checkpoint every this many iterations (0: end only).
        seed: RNG seed.
    """

    checkpoint: str
    out_dir: str = "runs/online"
    dataset: str | None = None
    env_steps: int = 100_000
    env_steps_per_iteration: int = 1000
    updates_per_env_step: float = 1.0
    num_env_runners: int = 1
    num_envs_per_env_runner: int = 1
    eval_interval: int = 10
    eval_episodes: int = 10
    checkpoint_interval: int = 10
    seed: int = 0


def online_config(s: OnlineSettings, meta: Any):
    """The offline run's config, switched to its online phase (EnvRunners, no input)."""
    from rllib_diffusion.algorithms.offline_q.train import build_offline_config, settings_from_meta

    offline = settings_from_meta(meta["settings"])
    offline.eval_interval, offline.eval_episodes, offline.seed = (
        s.eval_interval,
        s.eval_episodes,
        s.seed,
    )
    if offline.lr_end is not None:
        # Schedules are indexed by sampled steps, which restart online: keep the end value.
        offline.lr, offline.lr_end = offline.lr_end, None
    model = meta["model_config"]
    config, _ = build_offline_config(
        offline, "", meta["env_id"], model["obs_dim"], model["action_dim"]
    )
    config.rl_module(model_config=model)
    config.offline_data(input_=None)
    config.online_phase(
        enabled=True,
        env_steps_per_iteration=s.env_steps_per_iteration,
        updates_per_env_step=s.updates_per_env_step,
    )
    config.env_runners(
        num_env_runners=s.num_env_runners,
        num_envs_per_env_runner=s.num_envs_per_env_runner,
        num_cpus_per_env_runner=1,
        # Diffusion acting (N candidates × T steps) on a busy CPU can take minutes per
        # 1,000 steps; RLlib's 60 s default would drop the sample.
        sample_timeout_s=600.0,
        # One sample() per runner and iteration yields ``env_steps_per_iteration`` steps.
        rollout_fragment_length=max(
            1,
            -(
                -s.env_steps_per_iteration
                // (max(s.num_env_runners, 1) * s.num_envs_per_env_runner)
            ),
        ),
    )
    return config


def finetune_online(settings: OnlineSettings) -> dict[str, Any]:
    """Run online fine-tuning; returns the summary also written to ``result.json``."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EVALUATION_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.offline_q.offline_q import REPLAY_SIZE
    from rllib_diffusion.algorithms.offline_run import load_validated_dataset
    from rllib_diffusion.algorithms.online import dataset_transitions
    from rllib_diffusion.checkpoints import (
        CheckpointError,
        load_policy_module,
        read_checkpoint_meta,
        save_algorithm_checkpoint,
    )
    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.metrics import float_or_none
    from rllib_diffusion.utils.runtime import init_ray, limit_threads, run_metadata

    s = settings
    limit_threads()
    started = time.perf_counter()
    meta = read_checkpoint_meta(s.checkpoint)
    algo_name = meta.get("algorithm")
    spec = registry.by_checkpoint_algorithm(algo_name)
    if spec is None or spec.kind != registry.OFFLINE_Q:
        raise CheckpointError(
            f"Online fine-tuning continues an `rllib-diffusion offline` run "
            f"({', '.join(registry.names(registry.OFFLINE_Q))}); '{s.checkpoint}' is a "
            f"{algo_name!r} checkpoint."
        )
    source = s.dataset or meta["settings"]["dataset"]
    dataset, env_id = load_validated_dataset(source, env_id=meta["env_id"])
    out = Path(s.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    env_config = meta["env_config"]
    # Where online training starts: the offline policy, deterministic, in the env.
    module, _ = load_policy_module(s.checkpoint, expect_algorithms=(algo_name,))
    start_eval = evaluate_module(
        module, env_config, num_episodes=s.eval_episodes, seed=20_000 + s.seed
    )
    print(
        f"[online] {algo_name} from {s.checkpoint}: offline policy return "
        f"{start_eval['episode_return_mean']:.1f} ± {start_eval['episode_return_std']:.1f}",
        flush=True,
    )
    init_ray()
    config = online_config(s, meta)
    algo = config.build_algo()
    run_meta = {
        **{k: meta[k] for k in ("algorithm", "env_id", "env_config", "model_config")},
        "phase": "online",
        "offline_checkpoint": str(Path(s.checkpoint).resolve()),
        "settings": {**meta["settings"], "online": asdict(s)},
        "run": run_metadata(),
    }
    lines: list[dict[str, Any]] = []
    try:
        # Networks, targets, EMA, step counters and optimizer states of the offline run.
        # Absolute: pyarrow (under restore_from_path) rejects relative paths.
        algo.learner_group.restore_from_path(str(Path(s.checkpoint).resolve() / "learner_group"))
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group, inference_only=True
        )
        if algo.eval_env_runner_group is not None:
            algo.eval_env_runner_group.sync_weights(
                from_worker_or_learner_group=algo.learner_group, inference_only=True
            )
        algo.seed_replay_buffer(dataset_transitions(dataset))
        print(
            f"[online] replay buffer seeded with {algo.replay_buffer.size} offline transitions",
            flush=True,
        )
        it, env_steps = 0, 0
        with open(out / "progress.jsonl", "w") as progress:
            while env_steps < s.env_steps:
                it += 1
                result = algo.train()
                runners = result.get(ENV_RUNNER_RESULTS, {})
                lifetime = float_or_none(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME))
                env_steps = env_steps if lifetime is None else int(lifetime)
                line: dict[str, Any] = {
                    "iteration": it,
                    "env_steps": env_steps,
                    "train_return_mean": float_or_none(runners.get("episode_return_mean")),
                    "replay_size": int(float_or_none(result.get(REPLAY_SIZE)) or 0),
                    "seconds": time.perf_counter() - started,
                }
                ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
                if s.eval_interval and it % s.eval_interval == 0 and "episode_return_mean" in ev:
                    line["eval_return_mean"] = float(ev["episode_return_mean"])
                lines.append(line)
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                ret = line["train_return_mean"]
                msg = (
                    f"[online] iter {it}  env steps {env_steps}/{s.env_steps}  train return "
                    f"{'n/a' if ret is None else format(ret, '.1f')}  buffer {line['replay_size']}"
                )
                if "eval_return_mean" in line:
                    msg += f"  EVAL return {line['eval_return_mean']:.1f}"
                print(msg, flush=True)
                if s.checkpoint_interval and it % s.checkpoint_interval == 0:
                    save_algorithm_checkpoint(
                        algo, out / "checkpoint", {**run_meta, "iteration": it}
                    )
        ckpt = save_algorithm_checkpoint(algo, out / "checkpoint", {**run_meta, "iteration": it})
        train_seconds = time.perf_counter() - started
    finally:
        algo.stop()
    module, _ = load_policy_module(ckpt, expect_algorithms=(algo_name,))
    final_eval = evaluate_module(
        module, env_config, num_episodes=s.eval_episodes, seed=30_000 + s.seed
    )
    summary = {
        **run_meta,
        "checkpoint": ckpt,
        "iterations": it,
        "env_steps": env_steps,
        "train_seconds": train_seconds,
        "start_evaluation": start_eval,
        "final_evaluation": final_eval,
        "progress": lines,
    }
    write_json_atomic(out / "result.json", summary)
    print(
        f"[online] return before {start_eval['episode_return_mean']:.1f} -> after "
        f"{final_eval['episode_return_mean']:.1f} ± {final_eval['episode_return_std']:.1f} "
        f"({s.eval_episodes} episodes, {env_steps} env steps, {train_seconds / 60:.1f} min)",
        flush=True,
    )
    return summary
