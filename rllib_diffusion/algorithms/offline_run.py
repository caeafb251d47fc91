"""The run driver shared by offline pretraining algorithms (diffusion BC, Gaussian BC).

dataset → validation against the env → train ``iterations`` × ``algo.train()`` with a
progress line each → atomic checkpoint(s) → evaluation of the saved checkpoint in the
env → ``result.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from rllib_diffusion.data import EpisodeDataset, load_dataset, validate_dataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.envs.tasks import make_env
from rllib_diffusion.utils.io import write_json_atomic


@dataclass
class OfflineRunSettings:
    """Fields every offline run has (subclasses add their algorithm's knobs).

    Attributes:
        dataset: Minari id or dataset directory, DPPO ``.npz``, or robomimic ``.hdf5``.
        env_id: gymnasium env id for evaluation (default: the dataset's).
        out_dir: output directory.
        download: let Minari download ``dataset`` (needs network).
        gradient_steps: total gradient steps; batch_size: samples per step.
        steps_per_iteration: gradient steps per RLlib iteration (one ``train()`` call).
        eval_interval: evaluate in the env every this many iterations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: save every this many iterations (0: only at the end).
        seed: RNG seed.
        resume: continue from ``out_dir/checkpoint`` if it exists (learner state with
            optimizers, targets, EMA and step counters; iteration counter; progress
            lines up to it); the other settings must match the checkpoint's.
    """

    dataset: str
    env_id: str | None = None
    out_dir: str = "runs/offline"
    download: bool = False
    gradient_steps: int = 20_000
    batch_size: int = 256
    steps_per_iteration: int = 500
    eval_interval: int = 0
    eval_episodes: int = 10
    checkpoint_interval: int = 0
    seed: int = 0
    resume: bool = False

    @property
    def iterations(self) -> int:
        """RLlib iterations covering ``gradient_steps``."""
        return -(-self.gradient_steps // self.steps_per_iteration)


def start_offline_run(s: OfflineRunSettings) -> tuple[Path, float, EpisodeDataset, str]:
    """Threads, output dir, validated dataset, Ray: ``(out, start_time, dataset, env_id)``."""
    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    limit_threads()
    out = Path(s.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset, env_id = load_validated_dataset(s.dataset, download=s.download, env_id=s.env_id)
    init_ray()
    return out, started, dataset, env_id


def load_validated_dataset(
    source: str, *, download: bool = False, env_id: str | None = None
) -> tuple[EpisodeDataset, str]:
    """Load ``source`` and check it against ``env_id`` (default: the dataset's env)."""
    dataset = load_dataset(source, download=download)
    env_id = env_id or dataset.env_id
    if not env_id:
        raise DatasetError(
            f"Dataset '{source}' does not name its env; pass --env-id (e.g. Hopper-v5)."
        )
    env = make_env(env_id)
    try:
        validate_dataset(
            dataset,
            observation_space=env.observation_space,
            action_space=env.action_space,
            env_id=env_id,
        )
    finally:
        env.close()
    return dataset, env_id


def configure_offline(
    config: Any,
    *,
    env_config: dict[str, Any],
    spaces: tuple[gym.Space, gym.Space],
    data_path: str,
    settings: Any,
) -> Any:
    """Wire an offline ``AlgorithmConfig``: chunk env and spaces, parquet input, batch,
    periodic deterministic evaluation on the local evaluation EnvRunner, seed.

    ``settings`` provides ``batch_size``, ``steps_per_iteration``, ``eval_interval``,
    ``eval_episodes`` and ``seed``.
    """
    from rllib_diffusion.envs.chunking import register_chunked_env

    s = settings
    return (
        config.environment(
            register_chunked_env(),
            env_config=env_config,
            observation_space=spaces[0],
            action_space=spaces[1],
        )
        .training(train_batch_size_per_learner=s.batch_size)
        .offline_data(input_=[data_path], dataset_num_iters_per_learner=s.steps_per_iteration)
        .evaluation(
            evaluation_interval=s.eval_interval or None,
            evaluation_duration=s.eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
        .debugging(seed=s.seed)
    )


def lr_schedule(settings: Any) -> float | list[list[float]]:
    """Constant ``lr``, or a cosine decay to ``lr_end`` with warm-up, in RLlib's form."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import cosine_lr_schedule

    s = settings
    if s.lr_end == s.lr:
        return s.lr
    return cosine_lr_schedule(
        s.lr, s.lr_end, s.gradient_steps * s.batch_size, s.warmup_steps * s.batch_size
    )


#: Settings that may change between a run and its ``--resume``.
RUN_CONTROL_FIELDS = frozenset(
    {"out_dir", "resume", "download", "eval_interval", "eval_episodes", "checkpoint_interval"}
)


def check_same_run_settings(theirs: dict[str, Any], ours: dict[str, Any], where: Path) -> None:
    """A resumed run must train what the checkpoint's run trained (all but run control)."""
    from rllib_diffusion.checkpoints import CheckpointError
    from rllib_diffusion.utils.io import jsonable

    diffs = [
        f"{k}: checkpoint {jsonable(theirs.get(k))!r} vs now {jsonable(v)!r}"
        for k, v in ours.items()
        if k not in RUN_CONTROL_FIELDS and jsonable(theirs.get(k)) != jsonable(v)
    ]
    if diffs:
        raise CheckpointError(
            f"Cannot resume '{where}' with different settings: "
            + "; ".join(diffs)
            + ". Pass the original flags, or use another --out."
        )


def offline_progress_line(
    result: dict[str, Any],
    it: int,
    *,
    steps_per_iteration: int,
    loss_key: str,
    seconds: float,
    evaluated: bool,
) -> dict[str, Any]:
    """One ``progress.jsonl`` line: iteration, gradient steps, loss, fresh eval return."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS, LEARNER_RESULTS

    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        "iteration": it,
        "gradient_steps": it * steps_per_iteration,
        "loss": float(learner.get(loss_key, float("nan"))),
        "seconds": seconds,
    }
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    # RLlib keeps the last evaluation's results around; report them only when fresh.
    if evaluated and "episode_return_mean" in ev:
        line["eval_return_mean"] = float(ev["episode_return_mean"])
    return line


def run_offline_training(
    build_algo: Callable[[], Any],
    settings: OfflineRunSettings,
    *,
    tag: str,
    out: Path,
    meta: dict[str, Any],
    dataset: EpisodeDataset,
    env_config: dict[str, Any],
    loss_key: str,
    started: float,
) -> dict[str, Any]:
    """Train, checkpoint, evaluate what was saved, write ``out/result.json``; return it.

    With ``settings.resume`` and a checkpoint in ``out``, training continues after the
    checkpoint's iteration (see :class:`OfflineRunSettings`).
    """
    from rllib_diffusion.checkpoints import (
        CheckpointError,
        load_policy_module,
        progress_up_to,
        resume_checkpoint_meta,
        save_algorithm_checkpoint,
    )
    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.utils.io import write_jsonl_atomic
    from rllib_diffusion.utils.runtime import run_metadata

    s = settings
    iterations, steps_per_iteration = s.iterations, s.steps_per_iteration
    eval_interval, eval_episodes = s.eval_interval, s.eval_episodes
    ckpt_dir = out / "checkpoint"
    resume_meta = resume_checkpoint_meta(
        ckpt_dir, s.resume, algorithms=(meta["algorithm"],), tag=tag, existing_is_error=False
    )
    if resume_meta is not None:
        check_same_run_settings(resume_meta.get("settings", {}), asdict(s), ckpt_dir)
    meta = {**meta, "settings": asdict(s), "dataset": dataset.summary(), "run": run_metadata()}
    algo = build_algo()
    first, seconds_before, lines = 1, 0.0, []
    try:
        if resume_meta is not None:
            done = int(resume_meta["iteration"])
            algo.restore_from_path(str(ckpt_dir))
            if algo.iteration != done:
                raise CheckpointError(
                    f"Checkpoint '{ckpt_dir}' says iteration {done} but restores iteration "
                    f"{algo.iteration}; it is inconsistent, start a new --out."
                )
            first, seconds_before = done + 1, float(resume_meta.get("train_seconds", 0.0))
            lines = progress_up_to(out / "progress.jsonl", done, first=1)
            print(f"[{tag}] resumed from '{ckpt_dir}' at iteration {done}/{iterations}", flush=True)
        # progress.jsonl: the kept lines (none on a fresh run), rewritten, then appended to.
        write_jsonl_atomic(out / "progress.jsonl", lines)
        train_start = time.perf_counter() - seconds_before
        with open(out / "progress.jsonl", "a") as progress:
            for it in range(first, iterations + 1):
                result = algo.train()
                line = offline_progress_line(
                    result,
                    it,
                    steps_per_iteration=steps_per_iteration,
                    loss_key=loss_key,
                    seconds=time.perf_counter() - train_start,
                    evaluated=bool(eval_interval) and it % eval_interval == 0,
                )
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                msg = (
                    f"[{tag}] iter {it}/{iterations}  grad steps {line['gradient_steps']}"
                    f"  loss {line['loss']:.4f}  {line['seconds']:.0f}s"
                )
                if "eval_return_mean" in line:
                    msg += f"  eval return {line['eval_return_mean']:.1f}"
                print(msg, flush=True)
                if s.checkpoint_interval and it % s.checkpoint_interval == 0 and it < iterations:
                    save_algorithm_checkpoint(
                        algo, ckpt_dir, {**meta, "iteration": it, "train_seconds": line["seconds"]}
                    )
            train_seconds = time.perf_counter() - train_start
            ckpt = save_algorithm_checkpoint(
                algo, ckpt_dir, {**meta, "iteration": iterations, "train_seconds": train_seconds}
            )
    finally:
        algo.stop()
    # Evaluate exactly what was saved.
    module, _ = load_policy_module(ckpt, expect_algorithms=(meta["algorithm"],))
    print(f"[{tag}] checkpoint: {ckpt}; evaluating {eval_episodes} episodes ...", flush=True)
    evaluation = evaluate_module(
        module, env_config, num_episodes=eval_episodes, seed=10_000 + s.seed
    )
    summary = {
        **meta,
        "checkpoint": ckpt,
        "gradient_steps": iterations * steps_per_iteration,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "dataset_return_mean": float(dataset.episode_returns().mean()),
        "evaluation": evaluation,
    }
    write_json_atomic(out / "result.json", summary)
    print(
        f"[{tag}] eval return {evaluation['episode_return_mean']:.1f} ± "
        f"{evaluation['episode_return_std']:.1f} over {eval_episodes} episodes "
        f"(dataset mean {summary['dataset_return_mean']:.1f}); train time {train_seconds:.0f}s",
        flush=True,
    )
    return summary
