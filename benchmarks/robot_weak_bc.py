"""Benchmark (issue #14): how weak a diffusion BC policy is on a robomimic task after few
scripted demonstrations and few gradient steps: the screen that picks the starting
policies of ``benchmarks/robot_finetune.py``.

For every ``TASK:DEMOS:STEPS`` of ``--grid``: the scripted demonstrations and the BC run
exactly as ``robot_finetune.py`` makes them (each skipped when present; Ta = 4, horizon
4), then its deterministic success rate over ``--eval-episodes`` episodes (pretrain's own
evaluation). Writes ``benchmarks/results/<name>.json``.

Example::

    python benchmarks/robot_weak_bc.py --grid lift:20:100 lift:20:500 lift:5:100 can:50:500
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from robot_finetune import bc_dir, make_weak_bc  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--grid", nargs="+", required=True, metavar="TASK:DEMOS:STEPS")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="robot_weak_bc")
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result only")
    return p.parse_args(argv)


def run_args(item: str, args: argparse.Namespace) -> argparse.Namespace:
    """``robot_finetune``'s arguments for one ``TASK:DEMOS:STEPS``."""
    try:
        task, demos, steps = item.split(":")
        return argparse.Namespace(
            task=task,
            demos=int(demos),
            bc_gradient_steps=int(steps),
            bc_eval_episodes=args.eval_episodes,
            seed=args.seed,
        )
    except ValueError:
        raise SystemExit(f"--grid expects TASK:DEMOS:STEPS (lift:5:100), got {item!r}") from None


def figures_of(run: argparse.Namespace) -> dict | None:
    path = bc_dir(run) / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    ev = result["evaluation"]
    return {
        "task": run.task,
        "demos": run.demos,
        "gradient_steps": run.bc_gradient_steps,
        "success_rate": ev.get("success_rate"),
        "eval_episodes": ev["num_episodes"],
        "mean_episode_length": ev["env_steps"] / ev["num_episodes"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": ev["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    figures = {}
    for item in args.grid:
        run = run_args(item, args)
        if not args.summarize_only:
            make_weak_bc(run)
        found = figures_of(run)
        if found is not None:
            figures[bc_dir(run).name] = found
    path = write_result(args.name, figures)
    print(json.dumps(figures, indent=1), f"\nwrote {path}", flush=True)


if __name__ == "__main__":
    main()
