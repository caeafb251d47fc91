"""Benchmark (issue #4): offline algorithms side by side at one gradient-step budget.

One algorithm per invocation, each writing ``benchmarks/results/offline_<algo>_<tag>.json``
(normalised score over ``--eval-episodes`` episodes of the final checkpoint, gradient
steps per second measured over iterations without an evaluation, eval curve).

``--algo`` is one of ``diffusion_bc`` (the plain diffusion BC bar: T=5 DDPM, one action
per step, the same 3×256 network), ``diffusion_ql``, ``diffusion_ql_flow``, ``dac``,
``idql``, ``fql``, ``td3bc`` (this project), or ``d3rlpy_iql`` / ``d3rlpy_td3bc`` (d3rlpy's
implementations on the same transitions; needs ``pip install d3rlpy``).

Example (the shipped Hopper-v5 medium subset, 200 episodes, 61,915 transitions)::

    python benchmarks/offline.py --algo diffusion_ql --dataset data/hopper-medium-v5-small.npz \
        --gradient-steps 20000 --eval-every 5000 --eval-episodes 10

Runs longer than a session: add ``--checkpoint-every 1000`` and, after an interruption,
run the same command with ``--resume`` (continues from the last checkpoint). The d3rlpy
runs checkpoint their networks, optimizer states and step counter the same way
(``OUT/d3rlpy_checkpoint``); a resumed one draws different minibatches than an
uninterrupted one would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

OURS = ("diffusion_bc", "diffusion_ql", "diffusion_ql_flow", "dac", "idql", "fql", "td3bc")
D3RLPY = ("d3rlpy_iql", "d3rlpy_td3bc")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--algo", required=True, choices=OURS + D3RLPY)
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--tag", default="hopper_medium_small", help="result name suffix")
    p.add_argument("--gradient-steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps-per-iteration", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=5000, help="gradient steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--out", default=None, help="run directory (default runs/bench_offline/<algo>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoint-every", type=int, default=0, help="gradient steps between checkpoints"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue --out's run from its last checkpoint (runs spanning sessions)",
    )
    p.add_argument("--note", help="remark stored with the result and shown under the table")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="do not train: rebuild the result file from --out's result.json/progress.jsonl",
    )
    args = p.parse_args()
    out = Path(args.out or f"runs/bench_offline/{args.algo}")
    if args.algo in D3RLPY:
        summary, progress = run_d3rlpy(args, out)
    else:
        summary, progress = run_ours(args, out)
    report(args, summary, progress)


def run_ours(args, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    common = dict(
        dataset=args.dataset,
        out_dir=str(out),
        gradient_steps=args.gradient_steps,
        batch_size=args.batch_size,
        steps_per_iteration=args.steps_per_iteration,
        eval_interval=max(args.eval_every // args.steps_per_iteration, 1),
        eval_episodes=args.eval_episodes,
        checkpoint_interval=args.checkpoint_every // args.steps_per_iteration,
        seed=args.seed,
        resume=args.resume,
    )
    if not args.summarize_only:
        if args.algo == "diffusion_bc":
            from rllib_diffusion.algorithms.bc import PretrainSettings, pretrain

            pretrain(
                PretrainSettings(
                    **common,
                    horizon=1,
                    act_steps=1,
                    denoising_steps=5,
                    schedule="vp",
                    hidden_dims=(256, 256, 256),
                    lr=3e-4,
                    lr_end=3e-4,
                    warmup_steps=0,
                )
            )
        else:
            from rllib_diffusion.algorithms.diffusion_ql.train import (
                OfflineSettings,
                train_offline,
            )

            train_offline(OfflineSettings(**common, algo=args.algo))
    summary = json.loads((out / "result.json").read_text())
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    return summary, progress


def run_d3rlpy(args, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """d3rlpy's IQL / TD3+BC on the same transitions, budget and evaluation protocol."""
    if args.summarize_only:
        summary = json.loads((out / "result.json").read_text())
        progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
        return summary, progress
    try:
        import d3rlpy
    except ImportError:
        sys.exit(
            "d3rlpy is not importable. Its pins downgrade gymnasium, so install it beside the "
            "venv (pip install --target DIR --no-deps d3rlpy and its pure-Python deps, see "
            "docs/algorithms.md, TD3+BC) and run with PYTHONPATH=DIR."
        )
    import gymnasium as gym
    import torch

    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.envs.tasks import task_info
    from rllib_diffusion.utils.io import write_json_atomic

    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    data = load_dataset(args.dataset)
    obs = np.concatenate([e.observations[:-1] for e in data.episodes])
    act = np.concatenate([e.actions for e in data.episodes])
    rew = np.concatenate([e.rewards for e in data.episodes])
    term = np.concatenate([e.terminations for e in data.episodes]).astype(np.float32)
    # Every episode ends in a termination or a time-out (d3rlpy splits episodes there).
    ends = np.cumsum([len(e.actions) for e in data.episodes]) - 1
    trunc = np.zeros_like(term)
    trunc[ends] = 1.0 - term[ends]
    dataset = d3rlpy.dataset.MDPDataset(obs, act, rew, term, timeouts=trunc)
    if args.algo == "d3rlpy_iql":
        # Kostrikov et al.'s locomotion settings (d3rlpy reproduction script).
        algo = d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            batch_size=args.batch_size,
            weight_temp=3.0,
            max_weight=100.0,
            expectile=0.7,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        ).create(device="cpu:0")
    else:
        algo = d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            batch_size=args.batch_size,
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            alpha=2.5,
            update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    env_id = data.env_id
    info = task_info(env_id)
    out.mkdir(parents=True, exist_ok=True)
    chunk = args.steps_per_iteration
    progress, steps, train_seconds = d3rlpy_resume_point(args, out, algo)
    if steps:  # a resumed run draws new minibatches, not those of the first steps
        d3rlpy.seed(args.seed + steps)

    def evaluate(n: int, seed: int) -> list[float]:
        env = gym.make(env_id)
        rets = []
        for i in range(n):
            o, _ = env.reset(seed=seed + i)
            done, ret = False, 0.0
            while not done:
                o, r, term_, trunc_, _ = env.step(algo.predict(o[None].astype(np.float32))[0])
                ret += float(r)
                done = term_ or trunc_
            rets.append(ret)
        env.close()
        return rets

    with open(out / "progress.jsonl", "a" if steps else "w") as f:
        while steps < args.gradient_steps:
            t = time.perf_counter()
            for _ in algo.fitter(
                dataset,
                n_steps=chunk,
                n_steps_per_epoch=chunk,
                show_progress=False,
                save_interval=10**9,
                experiment_name=f"bench_{args.algo}",
                with_timestamp=False,
                logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
            ):
                pass
            train_seconds += time.perf_counter() - t
            steps += chunk
            line = {"gradient_steps": steps, "seconds": train_seconds, "train_only": True}
            if steps % args.eval_every == 0 and steps < args.gradient_steps:
                line["eval_return_mean"] = float(np.mean(evaluate(args.eval_episodes, 0)))
            f.write(json.dumps(line) + "\n")
            f.flush()
            progress.append(line)
            if args.checkpoint_every and steps % args.checkpoint_every == 0:
                save_d3rlpy_checkpoint(out, algo, steps)
            print(
                f"[{args.algo}] {steps} steps {train_seconds:.0f}s "
                f"{line.get('eval_return_mean', '')}",
                flush=True,
            )
    rets = evaluate(args.eval_episodes, 10_000 + args.seed)
    evaluation = {
        "episode_return_mean": float(np.mean(rets)),
        "episode_return_std": float(np.std(rets)),
        "episode_returns": rets,
        "num_episodes": len(rets),
        "normalized_score": 100
        * (np.mean(rets) - info.ref_min_score)
        / (info.ref_max_score - info.ref_min_score),
    }
    summary = {
        "algorithm": args.algo,
        "env_id": env_id,
        "d3rlpy_version": d3rlpy.__version__,
        "gradient_steps": steps,
        "train_seconds": train_seconds,
        "dataset_return_mean": float(data.episode_returns().mean()),
        "dataset": data.summary(),
        "evaluation": evaluation,
        "settings": vars(args),
    }
    write_json_atomic(out / "result.json", summary)
    return summary, progress


D3RLPY_CHECKPOINT = "d3rlpy_checkpoint"


def save_d3rlpy_checkpoint(out: Path, algo: Any, steps: int) -> None:
    """Networks and optimizer states (d3rlpy's ``save_model``) and the step count, written
    to a scratch folder and renamed into place, so an interruption never leaves half of
    one."""
    final, tmp = out / D3RLPY_CHECKPOINT, out / f".{D3RLPY_CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    algo.save_model(str(tmp / "model.pt"))
    (tmp / "state.json").write_text(json.dumps({"gradient_steps": steps}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def d3rlpy_resume_point(args, out: Path, algo: Any) -> tuple[list[dict[str, Any]], int, float]:
    """``(progress so far, gradient steps, train seconds)``: zeros for a fresh run; with
    ``--resume`` the last checkpoint's weights, optimizer states and step counter, and the
    progress lines up to it (later lines were not checkpointed and are dropped)."""
    from rllib_diffusion.utils.io import write_jsonl_atomic

    ckpt = out / D3RLPY_CHECKPOINT
    if not args.resume:
        return [], 0, 0.0
    if not (ckpt / "state.json").exists():
        sys.exit(f"--resume: no d3rlpy checkpoint in {out}; run without --resume to start.")
    steps = json.loads((ckpt / "state.json").read_text())["gradient_steps"]
    algo.load_model(str(ckpt / "model.pt"))
    algo.set_grad_step(steps)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    progress = [x for x in lines if x["gradient_steps"] <= steps]
    write_jsonl_atomic(out / "progress.jsonl", progress)
    print(f"[{args.algo}] resumed at {steps} gradient steps from {ckpt}", flush=True)
    return progress, steps, progress[-1]["seconds"] if progress else 0.0


def train_step_rate(progress: list[dict[str, Any]], steps_per_iteration: int) -> float:
    """Gradient steps per second over iterations that ran no evaluation."""
    secs, prev = [], 0.0
    for line in progress:
        dt = line["seconds"] - prev
        prev = line["seconds"]
        if "eval_return_mean" not in line or line.get("train_only"):
            secs.append(dt)
    # The first iteration includes start-up (data pipeline, module build).
    secs = secs[1:] if len(secs) > 2 else secs
    return steps_per_iteration / float(np.median(secs))


def report(args, summary: dict[str, Any], progress: list[dict[str, Any]]) -> None:
    ev = summary["evaluation"]
    figures = {
        "algorithm": args.algo,
        "return_mean": ev["episode_return_mean"],
        "return_std": ev["episode_return_std"],
        "eval_episodes": ev["num_episodes"],
        "normalized_score": ev.get("normalized_score"),
        "dataset_return_mean": summary["dataset_return_mean"],
        "gradient_steps": summary["gradient_steps"],
        "batch_size": args.batch_size,
        "train_seconds": summary["train_seconds"],
        "gradient_steps_per_second": train_step_rate(progress, args.steps_per_iteration),
    }
    evals = [
        x
        for x in progress
        if x.get("eval_return_mean") == x.get("eval_return_mean")
        and "eval_return_mean" in x
        # the final checkpoint's evaluation stands for the last step
        and x["gradient_steps"] < summary["gradient_steps"]
    ]
    series = {
        "eval_gradient_steps": [x["gradient_steps"] for x in evals] + [summary["gradient_steps"]],
        "eval_return_mean": [x["eval_return_mean"] for x in evals] + [ev["episode_return_mean"]],
        "final_episode_returns": ev["episode_returns"],
    }
    name = f"offline_{args.algo}_{args.tag}"
    path = write_result(
        name,
        figures,
        series,
        env_id=summary["env_id"],
        dataset=summary["dataset"],
        settings=summary.get("settings"),
        **({"note": args.note} if args.note else {}),
    )
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
