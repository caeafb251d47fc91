"""Benchmark: DPPO fine-tuning of a pretrained diffusion policy (issue #3).

Starts from a DiffusionBC checkpoint (e.g. the one of benchmarks/bc_pretrain.py),
runs DPPO for ``--env-steps`` true env steps and writes
``benchmarks/results/<name>.json`` (return curve against env steps, timings) and
``<name>.png``. Progress is flushed to ``<out>/progress.jsonl`` every iteration, and the
result file is rewritten every ``--write-every`` iterations, so a run cut short still
leaves its partial curve.

Example::

    python benchmarks/dppo_finetune.py --checkpoint runs/bench_bc/checkpoint \
        --env-steps 1000000 --name dppo_finetune_hopper_medium

DDIM fine-tuning of the same policy (K' follows the DDIM steps unless given)::

    python benchmarks/dppo_finetune.py --checkpoint runs/bench_bc/checkpoint \
        --env-steps 300000 --use-ddim --ddim-steps 5 --name dppo_finetune_hopper_ddim5

``--checkpoint-interval N`` checkpoints every N iterations; ``--resume`` continues a
killed run from ``<out>/checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def main() -> None:
    from rllib_diffusion.algorithms.dppo.finetune import FinetuneSettings, finetune

    d = FinetuneSettings(checkpoint="")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--name", default="dppo_finetune_hopper_medium")
    p.add_argument("--out", default="runs/bench_dppo")
    p.add_argument("--env-steps", type=int, default=1_000_000)
    p.add_argument("--num-env-runners", type=int, default=d.num_env_runners)
    p.add_argument("--num-envs-per-env-runner", type=int, default=d.num_envs_per_env_runner)
    p.add_argument("--decisions-per-iteration", type=int, default=d.decisions_per_iteration)
    p.add_argument("--pair-minibatch-size", type=int, default=d.pair_minibatch_size)
    p.add_argument("--num-epochs", type=int, default=d.num_epochs)
    p.add_argument("--eval-interval", type=int, default=d.eval_interval)
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--use-ddim", action="store_true", help="sample with DDIM")
    p.add_argument("--ddim-steps", type=int, default=d.ddim_steps)
    p.add_argument(
        "--ft-denoising-steps",
        type=int,
        default=d.ft_denoising_steps,
        help="K' (default: sampler's)",
    )
    p.add_argument("--checkpoint-interval", type=int, default=d.checkpoint_interval)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result from --out")
    args = p.parse_args()
    settings = FinetuneSettings(
        checkpoint=args.checkpoint,
        out_dir=args.out,
        env_steps=args.env_steps,
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner,
        decisions_per_iteration=args.decisions_per_iteration,
        pair_minibatch_size=args.pair_minibatch_size,
        num_epochs=args.num_epochs,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        use_ddim=args.use_ddim,
        ddim_steps=args.ddim_steps,
        ft_denoising_steps=args.ft_denoising_steps,
        checkpoint_interval=args.checkpoint_interval,
        resume=args.resume,
        seed=args.seed,
    )
    if not args.summarize_only:
        finetune(settings)
    summarize(args.name, Path(args.out), settings)


def summarize(name: str, out: Path, settings) -> None:
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    result_path = out / "result.json"
    final = json.loads(result_path.read_text()) if result_path.exists() else None
    evals = [x for x in progress if "eval_return_mean" in x]
    iters = [x for x in progress if x["iteration"] > 0]
    figures = {
        "start_return_mean": evals[0]["eval_return_mean"],
        "best_eval_return_mean": max(x["eval_return_mean"] for x in evals),
        "last_eval_return_mean": evals[-1]["eval_return_mean"],
        "env_steps": progress[-1]["env_steps"],
        "iterations": len(iters),
        "complete": final is not None,
        "mean_sample_seconds": _mean(x.get("sample_seconds") for x in iters),
        "mean_learn_seconds": _mean(x.get("learn_seconds") for x in iters),
        "mean_sync_seconds": _mean(x.get("sync_seconds") for x in iters),
    }
    if final is not None:
        fe = final["final_evaluation"]
        figures.update(
            final_return_mean=fe["episode_return_mean"],
            final_return_std=fe["episode_return_std"],
            final_eval_episodes=fe["num_episodes"],
            final_normalized_score=fe.get("normalized_score"),
            start_return_std=final["start_evaluation"]["episode_return_std"],
            train_minutes=final["train_seconds"] / 60,
        )
    series = {
        "eval_env_steps": [x["env_steps"] for x in evals],
        "eval_return_mean": [x["eval_return_mean"] for x in evals],
        "train_env_steps": [x["env_steps"] for x in iters],
        "train_return_mean": [x.get("train_return_mean") for x in iters],
        "approx_kl": [x.get("approx_kl") for x in iters],
        "clip_fraction": [x.get("clip_fraction") for x in iters],
        "explained_variance": [x.get("explained_variance") for x in iters],
        "ratio_first_minibatch_max_dev": [x.get("ratio_first_minibatch_max_dev") for x in iters],
        "actor_grad_norm": [x.get("actor_grad_norm") for x in iters],
        "actor_update_norm": [x.get("actor_update_norm") for x in iters],
    }
    path = write_result(name, figures, series, settings=asdict(settings))
    plot(name, series)
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def plot(name: str, series: dict, others: list[tuple[str, dict]] | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(
        series["eval_env_steps"],
        series["eval_return_mean"],
        "o-",
        label="DPPO (deterministic eval)",
    )
    ax.plot(
        series["train_env_steps"],
        series["train_return_mean"],
        alpha=0.5,
        label="DPPO (train episodes)",
    )
    for label, s in others or []:
        ax.plot(s["eval_env_steps"], s["eval_return_mean"], "s-", label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.legend()
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=100)


if __name__ == "__main__":
    main()
