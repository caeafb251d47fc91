"""Benchmark: the DPPO paper's Gaussian baseline on the same data and env-step budget.

Gaussian BC (RLlib BC, MLP 256x256) on the dataset, then RLlib PPO fine-tuning from it
for ``--env-steps`` env steps. Writes ``benchmarks/results/<name>.json`` with the return
curve against env steps (``eval_env_steps``/``eval_return_mean``, same keys as
``dppo_finetune.py``), so ``benchmarks/make_docs.py`` can plot both together.

``--num-modes 5`` runs the GMM variant (DPPO's GMM baseline) instead.

Example::

    python benchmarks/dppo_gaussian_baseline.py --dataset rllib-diffusion/hopper/medium-v0 \
        --env-steps 1000000 --name dppo_baseline_gaussian_ppo_hopper_medium
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--name", default="dppo_baseline_gaussian_ppo_hopper_medium")
    p.add_argument("--out", default="runs/bench_gaussian")
    p.add_argument("--bc-gradient-steps", type=int, default=20_000)
    p.add_argument(
        "--num-modes", type=int, default=1, help="mixture modes of the policy (1: Gaussian)"
    )
    p.add_argument("--env-steps", type=int, default=1_000_000)
    p.add_argument("--eval-interval", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result from --out")
    args = p.parse_args()

    from rllib_diffusion.algorithms.gaussian import (
        GaussianBCSettings,
        GaussianPPOSettings,
        finetune_gaussian_ppo,
        pretrain_gaussian,
    )

    out = Path(args.out)
    bc_settings = GaussianBCSettings(
        dataset=args.dataset,
        out_dir=str(out / "bc"),
        gradient_steps=args.bc_gradient_steps,
        num_modes=args.num_modes,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    ppo_settings = GaussianPPOSettings(
        checkpoint=str(out / "bc" / "checkpoint"),
        out_dir=str(out / "ppo"),
        env_steps=args.env_steps,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    if not args.summarize_only:
        pretrain_gaussian(bc_settings)
        finetune_gaussian_ppo(ppo_settings)
    bc = json.loads((out / "bc" / "result.json").read_text())
    ppo_result = out / "ppo" / "result.json"
    ppo = json.loads(ppo_result.read_text()) if ppo_result.exists() else None
    progress = [json.loads(x) for x in (out / "ppo" / "progress.jsonl").read_text().splitlines()]
    evals = [x for x in progress if "eval_return_mean" in x]
    iters = [x for x in progress if x["iteration"] > 0]
    figures = {
        "bc_return_mean": bc["evaluation"]["episode_return_mean"],
        "bc_return_std": bc["evaluation"]["episode_return_std"],
        "start_return_mean": evals[0]["eval_return_mean"],
        "best_eval_return_mean": max(x["eval_return_mean"] for x in evals),
        "last_eval_return_mean": evals[-1]["eval_return_mean"],
        "env_steps": progress[-1]["env_steps"],
        "iterations": len(iters),
        "complete": ppo is not None,
    }
    if ppo is not None:
        figures.update(
            final_return_mean=ppo["evaluation"]["episode_return_mean"],
            final_return_std=ppo["evaluation"]["episode_return_std"],
            final_eval_episodes=ppo["evaluation"]["num_episodes"],
            final_normalized_score=ppo["evaluation"].get("normalized_score"),
            train_minutes=ppo["train_seconds"] / 60,
        )
    series = {
        "eval_env_steps": [x["env_steps"] for x in evals],
        "eval_return_mean": [x["eval_return_mean"] for x in evals],
        "train_env_steps": [x["env_steps"] for x in iters],
        "train_return_mean": [x.get("train_return_mean") for x in iters],
    }
    path = write_result(
        args.name,
        figures,
        series,
        settings={"bc": asdict(bc_settings), "ppo": asdict(ppo_settings)},
    )
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
