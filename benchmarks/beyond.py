"""Benchmark (issue #17): DPPO vs ReinFlow vs DSRL from BC policies pretrained on the
same data, at a matched env-step budget; return against env steps and wall time.

Runs ``rllib-diffusion finetune --algo A`` for every (algorithm, seed) in turn, each into
``<out>/<algo>_s<seed>``, and after every run rewrites
``benchmarks/results/<name>.json`` and ``<name>.png`` from all runs' progress files, so a
session cut short still leaves the curves so far. Run it again with the same flags to go
on: finished runs are kept, a killed run continues from its checkpoint (``--resume``).
``--stages`` raises every algorithm's budget in rounds (e.g. 100k, 250k, 500k), so that
all algorithms have comparable curves early and a session cut short still compares them.

Example (checkpoints from ``rllib-diffusion pretrain`` on the same dataset: DDPM-20 for
DPPO and DSRL, flow-4 for ReinFlow)::

    python benchmarks/beyond.py --checkpoint dppo=runs/bc_ddpm/checkpoint \
        --checkpoint dsrl=runs/bc_ddpm/checkpoint --checkpoint reinflow=runs/bc_flow/checkpoint \
        --env-steps 500000 --seeds 0 1 --name beyond_hopper_medium
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="ALGO=PATH",
        help="pretrained BC checkpoint of one algorithm (repeat per algorithm; the "
        "algorithms compared are the ones given)",
    )
    p.add_argument("--env-steps", type=int, default=500_000, help="budget of every run")
    p.add_argument(
        "--stages",
        type=int,
        nargs="*",
        default=[],
        help="intermediate budgets, each reached by every run before the next",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="runs/beyond", help="parent directory of the runs")
    p.add_argument("--name", default="beyond_hopper_medium", help="result file name")
    p.add_argument("--eval-interval", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--num-env-runners", type=int, default=1)
    p.add_argument(
        "--num-envs-per-env-runner",
        type=int,
        default=None,
        help="vectorised envs per EnvRunner of every run (default: the finetune default, "
        "10; the official DSRL gym runs use 4)",
    )
    p.add_argument(
        "--decisions-per-iteration",
        type=int,
        default=None,
        help="action chunks per iteration (default: the finetune default, 2000)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ALGO:KNOB=VALUE",
        help="a knob of one algorithm, e.g. dsrl:actor_lr=3e-4 (JSON value)",
    )
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result only")
    return p.parse_args(argv)


def _pairs(items: list[str], sep: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found:
            raise SystemExit(f"expected KEY{sep}VALUE, got {item!r}")
        out[key] = value
    return out


def run_dir(out: str, algo: str, seed: int) -> Path:
    return Path(out) / f"{algo}_s{seed}"


def run_one(args: argparse.Namespace, algo: str, checkpoint: str, seed: int, budget: int) -> None:
    """One fine-tuning run up to ``budget`` env steps; kept when it got there, resumed
    from its checkpoint otherwise."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    out = run_dir(args.out, algo, seed)
    done = curves(out)
    if done and done["complete"] and done["env_steps"] >= budget:
        print(f"[beyond] {algo} seed {seed}: {done['env_steps']} env steps, kept", flush=True)
        return
    knobs = {}
    for key, value in _pairs(args.set, "=").items():
        owner, _, knob = key.partition(":")
        if owner == algo:
            knobs[knob] = json.loads(value)
    run_control = {
        name: getattr(args, name)
        for name in ("num_envs_per_env_runner", "decisions_per_iteration")
        if getattr(args, name) is not None
    }
    settings = FinetuneSettings.of(
        checkpoint=checkpoint,
        algo=algo,
        out_dir=str(out),
        env_steps=budget,
        num_env_runners=args.num_env_runners,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        resume=(out / "checkpoint").exists(),
        seed=seed,
        **run_control,
        **knobs,
    )
    print(f"[beyond] {algo} seed {seed} -> {out} ({budget} env steps)", flush=True)
    finetune(settings)


def curves(out: Path) -> dict[str, Any] | None:
    """Evaluation points (env steps, training seconds, deterministic return) of a run."""
    path = out / "progress.jsonl"
    if not path.exists():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    evals = [x for x in lines if "eval_return_mean" in x]
    result = out / "result.json"
    final = json.loads(result.read_text()) if result.exists() else None
    if final is not None and (final.get("interrupted") or "final_evaluation" not in final):
        final = None  # stopped by a signal: no final evaluation (continue with --resume)
    run = {
        "eval_env_steps": [x["env_steps"] for x in evals],
        "eval_minutes": [x.get("seconds", 0.0) / 60 for x in evals],
        "eval_return_mean": [x["eval_return_mean"] for x in evals],
        "env_steps": lines[-1]["env_steps"] if lines else 0,
        "complete": final is not None,
    }
    if final is not None:
        fe = final["final_evaluation"]
        run.update(
            final_return_mean=fe["episode_return_mean"],
            final_return_std=fe["episode_return_std"],
            final_eval_episodes=fe["num_episodes"],
            train_minutes=final["train_seconds"] / 60,
        )
    return run


def summarize(args: argparse.Namespace, algos: list[str]) -> None:
    runs = {}
    for algo in algos:
        for seed in args.seeds:
            run = curves(run_dir(args.out, algo, seed))
            if run is not None:
                runs[f"{algo}_s{seed}"] = run
    figures = {
        key: {k: v for k, v in run.items() if not isinstance(v, list)} for key, run in runs.items()
    }
    for key, run in runs.items():
        if run["eval_return_mean"]:
            figures[key]["start_return_mean"] = run["eval_return_mean"][0]
            figures[key]["best_eval_return_mean"] = max(run["eval_return_mean"])
    write_result(args.name, figures, runs, budget_env_steps=args.env_steps, seeds=args.seeds)
    plot(args.name, runs)
    print(json.dumps(figures, indent=1), flush=True)


def plot(name: str, runs: dict[str, dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, run in runs.items():
        left.plot(run["eval_env_steps"], run["eval_return_mean"], "o-", label=key)
        right.plot(run["eval_minutes"], run["eval_return_mean"], "o-", label=key)
    left.set_xlabel("env steps")
    right.set_xlabel("training wall time (min)")
    for ax in (left, right):
        ax.set_ylabel("deterministic eval return")
        ax.legend(fontsize=8)
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    checkpoints = _pairs(args.checkpoint, "=")
    algos = list(checkpoints)
    budgets = sorted({b for b in args.stages if b < args.env_steps} | {args.env_steps})
    if not args.summarize_only:
        for budget in budgets:
            for seed in args.seeds:
                for algo in algos:
                    run_one(args, algo, checkpoints[algo], seed, budget)
                    summarize(args, algos)
    summarize(args, algos)


if __name__ == "__main__":
    main()
