"""Benchmark: DPPO fine-tuning of a pretrained diffusion policy (issue #3).

Starts from a DiffusionBC checkpoint (e.g. the one of benchmarks/bc_pretrain.py),
runs DPPO for ``--env-steps`` true env steps and writes
``benchmarks/results/<name>.json`` (return curve against env steps, timings) and
``<name>.png``. Progress is flushed to ``<out>/progress.jsonl`` every iteration, so a
run cut short still leaves its partial curve (``--summarize-only`` writes the result
from it). Takes every flag of ``rllib-diffusion finetune``.

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
    from rllib_diffusion.algorithms.finetune_run import finetune
    from rllib_diffusion.cli import add_finetune_args, finetune_settings_from_args

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_finetune_args(p)  # the finetune command's flags, defaults and help
    p.set_defaults(out_dir="runs/bench_dppo")
    p.add_argument("--name", default="dppo_finetune_hopper_medium")
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result from --out")
    args = p.parse_args()
    name, summarize_only = args.name, args.summarize_only
    del args.name, args.summarize_only
    settings = finetune_settings_from_args(args)
    if not summarize_only:
        finetune(settings)
    summarize(name, Path(settings.out_dir), settings)


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
    path = write_result(name, figures, series, settings=flat_settings(settings))
    plot(name, series)
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


def flat_settings(settings) -> dict:
    """The run's settings with every DPPO knob's value (declared default or given)."""
    from rllib_diffusion.algorithms.finetune_run import finetune_knobs

    flat = {k: v for k, v in asdict(settings).items() if k != "knobs"}
    return {
        **flat,
        **{k.name: settings.knobs.get(k.name, k.default) for k in finetune_knobs(settings.algo)},
    }


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
