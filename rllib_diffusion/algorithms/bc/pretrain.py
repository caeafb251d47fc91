"""Diffusion-policy pretraining run: dataset → parquet → DiffusionBC → checkpoint + eval.

This is the library function behind ``rllib-diffusion pretrain`` and
``experiments/pretrain.py``; it prints progress and writes into ``out_dir``:

* ``checkpoint/`` — the final (atomically written) Algorithm checkpoint, with
  ``rllib_diffusion.json`` holding the policy config and normalisation;
* ``progress.jsonl`` — one line per iteration (loss, gradient steps, eval return);
* ``result.json`` — summary incl. the final evaluation.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from rllib_diffusion import metrics as M
from rllib_diffusion.data import load_dataset, validate_dataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.offline import OfflineDataInfo, prepare_offline_data
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

ALGORITHM_NAME = "DiffusionBC"


@dataclass
class PretrainSettings:
    """Settings of a pretraining run (CLI flags map 1:1 onto these).

    Attributes:
        dataset: Minari id or dataset directory, DPPO ``.npz``, or robomimic ``.hdf5``.
        env_id: gymnasium env id (default: the dataset's).
        out_dir: output directory.
        download: let Minari download ``dataset`` (needs network).
        horizon / act_steps / obs_history: Ta / executed actions / To.
        denoising_steps / sampler / ddim_steps / schedule / network / hidden_dims: policy.
        gradient_steps: total gradient steps; batch_size: samples per step.
        lr / lr_end / warmup_steps: AdamW learning rate, cosine-decayed to ``lr_end``.
        steps_per_iteration: gradient steps per RLlib iteration (one ``train()`` call).
        eval_interval: evaluate in the env every this many iterations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: save every this many iterations (0: only at the end).
        seed: RNG seed.
    """

    dataset: str
    env_id: str | None = None
    out_dir: str = "runs/pretrain"
    download: bool = False
    horizon: int = 4
    act_steps: int = 4
    obs_history: int = 1
    denoising_steps: int = 20
    sampler: str = "ddpm"
    ddim_steps: int | None = None
    schedule: str = "cosine"
    network: str = "mlp"
    hidden_dims: tuple[int, ...] = (512, 512, 512)
    gradient_steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3
    lr_end: float = 1e-4
    warmup_steps: int = 100
    steps_per_iteration: int = 500
    eval_interval: int = 0
    eval_episodes: int = 10
    checkpoint_interval: int = 0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def build_pretrain_config(
    settings: PretrainSettings, data: OfflineDataInfo, env_id: str, obs_dim_raw: int
):
    """The ``DiffusionBCConfig`` for ``settings`` on prepared ``data``."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig, cosine_lr_schedule
    from rllib_diffusion.envs.chunking import chunk_spaces, register_chunked_env

    s = settings
    policy = DiffusionPolicyConfig(
        obs_dim=data.obs_dim,
        action_dim=data.action_shape[1],
        horizon=s.horizon,
        act_steps=s.act_steps,
        obs_history=s.obs_history,
        denoising_steps=s.denoising_steps,
        sampler=s.sampler,
        ddim_steps=s.ddim_steps,
        schedule=s.schedule,
        network=s.network,
        hidden_dims=tuple(s.hidden_dims),
        normalization=data.normalization.to_dict(),
        env_id=env_id,
    )
    env_config = policy_env_config(policy)
    obs_space, act_space = chunk_spaces(policy.obs_dim, policy.horizon, policy.action_dim)
    total_samples = s.gradient_steps * s.batch_size
    lr = (
        cosine_lr_schedule(s.lr, s.lr_end, total_samples, s.warmup_steps * s.batch_size)
        if s.lr_end != s.lr
        else s.lr
    )
    config = (
        DiffusionBCConfig()
        .environment(
            register_chunked_env(),
            env_config=env_config,
            observation_space=obs_space,
            action_space=act_space,
        )
        .training(lr=lr, train_batch_size_per_learner=s.batch_size)
        .rl_module(model_config=policy.to_dict())
        .offline_data(
            input_=[data.path],
            dataset_num_iters_per_learner=s.steps_per_iteration,
        )
        .evaluation(
            evaluation_interval=s.eval_interval or None,
            evaluation_duration=s.eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
        .debugging(seed=s.seed)
    )
    return config, policy


def policy_env_config(policy: DiffusionPolicyConfig) -> dict[str, Any]:
    """env_config of the action-chunk env that matches ``policy``."""
    return {
        "env_id": policy.env_id,
        "horizon": policy.horizon,
        "act_steps": policy.act_steps,
        "obs_history": policy.obs_history,
        "normalization": policy.normalization,
    }


def pretrain(settings: PretrainSettings) -> dict[str, Any]:
    """Run diffusion BC pretraining; returns the summary also written to ``result.json``."""
    from rllib_diffusion.checkpoints import load_policy_module, save_algorithm_checkpoint
    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.utils.runtime import init_ray, limit_threads, run_metadata

    s = settings
    limit_threads()
    out = Path(s.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    dataset = load_dataset(s.dataset, download=s.download)
    env_id = s.env_id or dataset.env_id
    if not env_id:
        raise DatasetError(
            f"Dataset '{s.dataset}' does not name its env; pass --env-id (e.g. Hopper-v5)."
        )
    env = gym.make(env_id)
    validate_dataset(
        dataset,
        observation_space=env.observation_space,
        action_space=env.action_space,
        env_id=env_id,
    )
    env.close()
    data = prepare_offline_data(dataset, horizon=s.horizon, obs_history=s.obs_history, seed=s.seed)
    print(
        f"[pretrain] dataset {dataset.name}: {dataset.num_episodes} episodes, "
        f"{dataset.num_transitions} transitions, return {dataset.episode_returns().mean():.1f}; "
        f"{data.num_samples} windows (Ta={s.horizon}, To={s.obs_history}) "
        f"{'(cached)' if data.cached else ''} at {data.path}",
        flush=True,
    )

    init_ray()
    config, policy = build_pretrain_config(s, data, env_id, dataset.obs_dim)
    algo = config.build_algo()
    iterations = -(-s.gradient_steps // s.steps_per_iteration)
    meta = {
        "algorithm": ALGORITHM_NAME,
        "env_id": env_id,
        "policy_config": policy.to_dict(),
        "settings": asdict(s),
        "dataset": dataset.summary(),
        "run": run_metadata(),
    }
    progress_path = out / "progress.jsonl"
    train_start = time.perf_counter()
    try:
        with open(progress_path, "w") as progress:
            for it in range(1, iterations + 1):
                result = algo.train()
                evaluated = bool(s.eval_interval) and it % s.eval_interval == 0
                line = _progress_line(
                    result, it, s, time.perf_counter() - train_start, evaluated=evaluated
                )
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                msg = (
                    f"[pretrain] iter {it}/{iterations}  grad steps {line['gradient_steps']}"
                    f"  loss {line['loss']:.4f}  {line['seconds']:.0f}s"
                )
                if "eval_return_mean" in line:
                    msg += f"  eval return {line['eval_return_mean']:.1f}"
                print(msg, flush=True)
                if s.checkpoint_interval and it % s.checkpoint_interval == 0 and it < iterations:
                    save_algorithm_checkpoint(algo, out / "checkpoint", {**meta, "iteration": it})
            train_seconds = time.perf_counter() - train_start
            ckpt = save_algorithm_checkpoint(
                algo, out / "checkpoint", {**meta, "iteration": iterations}
            )
    finally:
        algo.stop()
    # Evaluate exactly what was saved.
    module, _ = load_policy_module(ckpt)
    print(f"[pretrain] checkpoint: {ckpt}; evaluating {s.eval_episodes} episodes ...", flush=True)
    evaluation = evaluate_module(
        module, policy_env_config(policy), num_episodes=s.eval_episodes, seed=10_000 + s.seed
    )
    summary = {
        **meta,
        "checkpoint": ckpt,
        "gradient_steps": iterations * s.steps_per_iteration,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - t0,
        "dataset_return_mean": float(dataset.episode_returns().mean()),
        "evaluation": evaluation,
    }
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, out / "result.json")
    print(
        f"[pretrain] eval return {evaluation['episode_return_mean']:.1f} ± "
        f"{evaluation['episode_return_std']:.1f} over {s.eval_episodes} episodes "
        f"(dataset mean {summary['dataset_return_mean']:.1f}); train time {train_seconds:.0f}s",
        flush=True,
    )
    return summary


def _progress_line(
    result: dict[str, Any], it: int, s: PretrainSettings, seconds: float, *, evaluated: bool
) -> dict:
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS, LEARNER_RESULTS

    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        "iteration": it,
        "gradient_steps": it * s.steps_per_iteration,
        "loss": float(learner.get(M.BC_LOSS, float("nan"))),
        "seconds": seconds,
    }
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    # RLlib keeps the last evaluation's results around; report them only when fresh.
    if evaluated and "episode_return_mean" in ev:
        line["eval_return_mean"] = float(ev["episode_return_mean"])
    return line
