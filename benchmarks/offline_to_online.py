"""Benchmark (issue #4): offline → online fine-tuning from an offline benchmark checkpoint.

Continues ``benchmarks/offline.py``'s final checkpoint (IDQL, FQL, ...) online: EnvRunners
fill a replay buffer seeded with the offline data, ``--updates-per-env-step`` gradient
steps per new env step. Writes ``benchmarks/results/offline_to_online_<algo>_<tag>.json``
with the deterministic return before (the offline policy) and after (``--eval-episodes``
episodes each), the eval curve and the env-step rate.

Example (after ``python benchmarks/offline.py --algo idql``)::

    python benchmarks/offline_to_online.py --checkpoint runs/bench_offline/idql/checkpoint \
        --env-steps 20000 --eval-every 5000 --eval-episodes 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="offline checkpoint (benchmarks/offline.py)")
    p.add_argument("--tag", default="hopper_medium_small", help="result name suffix")
    p.add_argument("--env-steps", type=int, default=20_000)
    p.add_argument("--env-steps-per-iteration", type=int, default=1000)
    p.add_argument("--updates-per-env-step", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=5000, help="env steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--out", default=None, help="run directory (default runs/bench_online/<algo>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="do not train: rebuild the result file from --out's result.json",
    )
    args = p.parse_args()

    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    meta = read_checkpoint_meta(args.checkpoint)
    algo = meta.algorithm
    out = Path(args.out or f"runs/bench_online/{algo}")
    if args.summarize_only:
        summary = json.loads((out / "result.json").read_text())
    else:
        summary = finetune_online(
            OnlineSettings(
                checkpoint=args.checkpoint,
                out_dir=str(out),
                env_steps=args.env_steps,
                env_steps_per_iteration=args.env_steps_per_iteration,
                updates_per_env_step=args.updates_per_env_step,
                num_env_runners=1,
                num_envs_per_env_runner=1,
                eval_interval=max(args.eval_every // args.env_steps_per_iteration, 1),
                eval_episodes=args.eval_episodes,
                checkpoint_interval=0,
                seed=args.seed,
            )
        )
    start, final = summary["start_evaluation"], summary["final_evaluation"]
    evals = [x for x in summary["progress"] if "eval_return_mean" in x]
    figures = {
        "algorithm": algo,
        "offline_gradient_steps": (meta.settings or {}).get("gradient_steps"),
        "env_steps": summary["env_steps"],
        "updates_per_env_step": args.updates_per_env_step,
        "return_before": start["episode_return_mean"],
        "return_before_std": start["episode_return_std"],
        "normalized_before": start.get("normalized_score"),
        "return_after": final["episode_return_mean"],
        "return_after_std": final["episode_return_std"],
        "normalized_after": final.get("normalized_score"),
        "eval_episodes": final["num_episodes"],
        "train_seconds": summary["train_seconds"],
        "env_steps_per_second": summary["env_steps"] / summary["train_seconds"],
    }
    path = write_result(
        f"offline_to_online_{algo}_{args.tag}",
        figures,
        {
            "eval_env_steps": [0] + [x["env_steps"] for x in evals] + [summary["env_steps"]],
            "eval_return_mean": [start["episode_return_mean"]]
            + [x["eval_return_mean"] for x in evals]
            + [final["episode_return_mean"]],
            "final_episode_returns": final["episode_returns"],
        },
        env_id=summary.get("env_id", meta.env_id),
    )
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
