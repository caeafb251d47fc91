"""Benchmark: RLlib PPO behaviour-policy training (used to collect datasets).

Runs ``train_behavior_policy`` (what ``rllib-diffusion train-behavior`` runs) and writes
``benchmarks/results/<name>.json`` with the return curve against env steps.

Example::

    python benchmarks/behavior_ppo.py --env Hopper-v5 --out runs/behavior/hopper \
        --target-return 1500 --max-minutes 75 --checkpoint-every 3
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
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--out", default="runs/behavior/hopper")
    p.add_argument("--target-return", type=float, default=1500.0)
    p.add_argument("--max-minutes", type=float, default=75.0)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--name", default="behavior_ppo_hopper")
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result from --out")
    args = p.parse_args()
    if not args.summarize_only:
        from rllib_diffusion.collect.behavior import train_behavior_policy

        train_behavior_policy(
            args.env,
            args.out,
            target_return=args.target_return,
            max_minutes=args.max_minutes,
            checkpoint_every=args.checkpoint_every,
        )
    out = Path(args.out)
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    index = json.loads((out / "checkpoints.json").read_text())
    last = progress[-1]
    figures = {
        "env_id": args.env,
        "final_return": last["return"],
        "env_steps": last["env_steps"],
        "iterations": last["iteration"],
        "minutes": last["minutes"],
        "env_steps_per_second": last["env_steps"] / (60 * last["minutes"]),
        "settings": index["settings"],
    }
    series = {
        "env_steps": [x["env_steps"] for x in progress],
        "return": [x["return"] for x in progress],
        "checkpoints": [
            {"name": Path(c["path"]).name, "env_steps": c["env_steps"], "return": c["return"]}
            for c in index["checkpoints"]
        ],
    }
    print(json.dumps(figures, indent=1))
    print(f"wrote {write_result(args.name, figures, series)}")


if __name__ == "__main__":
    main()
