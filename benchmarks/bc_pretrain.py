"""Benchmark: diffusion BC pretraining on a locally collected dataset.

Target (issue #2): the pretrained policy's mean return over >= 10 episodes is at least
80% of the dataset's mean episode return. Writes ``benchmarks/results/<name>.json``
and ``<name>.png`` (eval return and loss against gradient steps).

Example (Hopper-v5 medium, collected with ``rllib-diffusion collect``)::

    python benchmarks/bc_pretrain.py --dataset rllib-diffusion/hopper/medium-v0 \
        --gradient-steps 30000 --eval-every 5000 --name bc_pretrain_hopper_medium
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--name", default="bc_pretrain_hopper_medium")
    p.add_argument("--gradient-steps", type=int, default=30_000)
    p.add_argument("--steps-per-iteration", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=5000, help="gradient steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--out", default="runs/bench_bc")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="do not train: rebuild the result file from --out's result.json/progress.jsonl",
    )
    args = p.parse_args()

    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings(
        dataset=args.dataset,
        out_dir=args.out,
        gradient_steps=args.gradient_steps,
        steps_per_iteration=args.steps_per_iteration,
        eval_interval=max(args.eval_every // args.steps_per_iteration, 1),
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    if args.summarize_only:
        summary = json.loads((Path(args.out) / "result.json").read_text())
    else:
        summary = pretrain(settings)
    progress = [json.loads(x) for x in (Path(args.out) / "progress.jsonl").read_text().splitlines()]
    ev = summary["evaluation"]
    dataset_ret = summary["dataset_return_mean"]
    figures = {
        "dataset_return_mean": dataset_ret,
        "dataset_return_std": summary["dataset"].get("return_std"),
        "dataset_episodes": summary["dataset"].get("num_episodes"),
        "dataset_transitions": summary["dataset"].get("num_transitions"),
        "bc_return_mean": ev["episode_return_mean"],
        "bc_return_std": ev["episode_return_std"],
        "bc_eval_episodes": ev["num_episodes"],
        "bc_normalized_score": ev.get("normalized_score"),
        "bc_over_dataset_return": ev["episode_return_mean"] / dataset_ret,
        "target_ratio": 0.8,
        "target_met": ev["episode_return_mean"] >= 0.8 * dataset_ret,
        "gradient_steps": summary["gradient_steps"],
        "batch_size": settings.batch_size,
        "train_seconds": summary["train_seconds"],
        "gradient_steps_per_second": summary["gradient_steps"] / summary["train_seconds"],
        "total_seconds": summary["total_seconds"],
    }
    # Evaluations happen every eval_interval iterations; RLlib repeats the last one in
    # between, so keep only the fresh ones.
    interval = settings.eval_interval * settings.steps_per_iteration
    evals = [
        x
        for x in progress
        if "eval_return_mean" in x
        and x["gradient_steps"] % interval == 0
        and x["eval_return_mean"] == x["eval_return_mean"]
    ]
    series = {
        "gradient_steps": [x["gradient_steps"] for x in progress],
        "loss": [x["loss"] for x in progress],
        "eval_gradient_steps": [x["gradient_steps"] for x in evals],
        "eval_return_mean": [x["eval_return_mean"] for x in evals],
        "final_episode_returns": ev["episode_returns"],
    }
    path = write_result(
        args.name, figures, series, settings=summary["settings"], env_id=summary["env_id"]
    )
    plot(args.name, figures, series)
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


def plot(name: str, figures: dict, series: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(
        series["eval_gradient_steps"], series["eval_return_mean"], "o-", label="diffusion BC (EMA)"
    )
    a.axhline(figures["dataset_return_mean"], color="k", ls="--", label="dataset mean")
    a.axhline(0.8 * figures["dataset_return_mean"], color="gray", ls=":", label="80% of dataset")
    top = max([*series["eval_return_mean"], figures["dataset_return_mean"]])
    a.set_ylim(0, 1.1 * top)
    a.set_xlabel("gradient steps")
    a.set_ylabel("eval return")
    a.legend()
    b.plot(series["gradient_steps"], series["loss"])
    b.set_yscale("log")
    b.set_xlabel("gradient steps")
    b.set_ylabel("denoising loss")
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=100)


if __name__ == "__main__":
    main()
