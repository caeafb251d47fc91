"""Benchmark (issue 14): one policy checkpoint evaluated with and without ``clamp_obs``.

The same weights act on the same start states (episode ``i`` reset with ``seed + i``),
once on the observations as normalised and once clipped to [-1, 1] (the reference's
``RobomimicLowdimWrapper(clamp_obs=True)``), so the difference is the clamp's alone.
Prints both success rates and the paired counts (episodes solved only without / only
with the clamp); writes ``benchmarks/results/<name>.json``.

Example::

    MUJOCO_GL=egl python benchmarks/robot_clamp_obs.py \\
        --checkpoint runs/robot/bc_lift5_100/checkpoint --episodes 50 --seed 30000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def evaluate(checkpoint: str, clamp: bool, episodes: int, seed: int) -> dict[str, Any]:
    """Deterministic evaluation of ``checkpoint`` with ``clamp_obs`` set to ``clamp``."""
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.evaluation import checkpoint_env_config, evaluate_module

    module, meta = load_policy_module(checkpoint)
    env_config = {**checkpoint_env_config(checkpoint, meta), "clamp_obs": clamp}
    return evaluate_module(module, env_config, num_episodes=episodes, seed=seed)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="a robot policy checkpoint")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=30000, help="reset seed of the first episode")
    p.add_argument("--name", default="robot_clamp_obs")
    args = p.parse_args()
    if not (Path(args.checkpoint) / "rllib_diffusion.json").exists():
        p.error(f"{args.checkpoint} is not a checkpoint of this package (no rllib_diffusion.json)")

    from rllib_diffusion.utils.runtime import limit_threads

    limit_threads()
    solved = {}
    for clamp in (False, True):
        r = evaluate(args.checkpoint, clamp, args.episodes, args.seed)
        solved[clamp] = [float(x) > 0 for x in r["episode_returns"]]
        print(f"[clamp_obs={clamp}] success {sum(solved[clamp])}/{args.episodes}", flush=True)
    off, on = solved[False], solved[True]
    figures = {
        "success_rate_without_clamp": sum(off) / len(off),
        "success_rate_with_clamp": sum(on) / len(on),
        "solved_only_without_clamp": sum(a and not b for a, b in zip(off, on)),
        "solved_only_with_clamp": sum(b and not a for a, b in zip(off, on)),
        "episodes": args.episodes,
    }
    print(figures)
    path = write_result(
        args.name,
        figures,
        {"solved_without_clamp": off, "solved_with_clamp": on},
        checkpoint=str(Path(args.checkpoint).resolve()),
        seed=args.seed,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
