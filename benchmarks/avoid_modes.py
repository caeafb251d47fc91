"""Benchmark: success rate and routes (modes) of policies on ``rllib_diffusion/Avoid-v0``.

Rolls out each ``--checkpoint [LABEL=]PATH`` (any policy checkpoint of this package, e.g.
DiffusionBC, DPPO, GaussianBC/PPO) for ``--episodes`` episodes (episode ``i`` reset with
``seed + i``) and counts the routes of the successful ones
(:func:`rllib_diffusion.avoid_modes.route_stats`); ``--demos`` adds the scripted
demonstrator as a reference. Writes ``benchmarks/results/avoid_modes_<name>.json`` and
``avoid_modes_<name>.png`` (one panel of trajectories per policy, coloured by route, failed
episodes dashed grey).

Diffusion policies draw each chunk from fresh noise whether or not ``--stochastic`` is
given (the default evaluation mode only lowers the std floor of the denoising steps and
drops the last step's noise, so the modes are still sampled); ``--stochastic`` acts with
``forward_exploration``. For Gaussian policies the default is the mean action, which cannot
split between routes at one state.

Example::

    python benchmarks/avoid_modes.py --checkpoint bc=runs/avoid/bc_scripted/checkpoint \
        --demos --episodes 100 --name bc_scripted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def _demo_episodes(episodes: int, seed: int) -> list[dict[str, Any]]:
    """The scripted demonstrator's episodes (routes by coin flips, as a policy would)."""
    import numpy as np

    from rllib_diffusion.collect.avoid_demos import demo_episodes

    raw, _ = demo_episodes(episodes, seed=seed, balanced=False, keep_failures=True)
    return [
        {
            "success": e["success"],
            "collision": not e["success"] and e["terminated"],
            "route": e["route"],
            "return": float(np.sum(e["rewards"])),
            "length": len(e["actions"]),
            "path": e["observations"].astype(np.float64),
        }
        for e in raw
    ]


def _label_and_path(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    return (label, path) if sep and label else (Path(spec).parent.name or spec, spec)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="policy checkpoint to roll out (repeatable)",
    )
    p.add_argument("--demos", action="store_true", help="also roll out the scripted demonstrator")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stochastic", action="store_true", help="act with forward_exploration (sampled actions)"
    )
    p.add_argument(
        "--act-steps",
        type=int,
        default=None,
        help="execute this many actions of each chunk (default: as trained; <= horizon)",
    )
    p.add_argument("--name", default=None, help="result name (default: the first label)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--note", default=None, help="free text stored with the result")
    args = p.parse_args()
    if not args.checkpoint and not args.demos:
        p.error("give at least one --checkpoint or --demos")
    if args.episodes < 1:
        p.error("--episodes must be >= 1")

    from rllib_diffusion.avoid_modes import evaluate_modes, path_stats, plot_paths, route_stats
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.collect.avoid_demos import AVOID_IDS
    from rllib_diffusion.envs.avoid import ENV_ID
    from rllib_diffusion.evaluation import checkpoint_env_config
    from rllib_diffusion.utils.runtime import limit_threads

    limit_threads()
    figures: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    envs: set[str] = set()
    if args.demos:
        eps = _demo_episodes(args.episodes, args.seed)
        figures["scripted demos"] = {
            **route_stats(eps),
            **path_stats(eps),
            "source": "scripted demonstrator",
        }
        envs.add(ENV_ID)
        groups["scripted demos"] = eps
    for spec in args.checkpoint:
        label, path = _label_and_path(spec)
        module, meta = load_policy_module(path)
        env_config = dict(checkpoint_env_config(path, meta))
        if args.act_steps is not None:
            env_config["act_steps"] = args.act_steps
        envs.add(env_config.get("env_id"))
        if env_config.get("env_id") not in AVOID_IDS:
            p.error(f"{path} acts in {env_config.get('env_id')!r}, not in one of {AVOID_IDS}")
        stats, eps = evaluate_modes(
            module,
            env_config,
            num_episodes=args.episodes,
            seed=args.seed,
            deterministic=not args.stochastic,
        )
        figures[label] = {
            **stats,
            "checkpoint": str(Path(path).resolve()),
            "algorithm": meta.algorithm,
        }
        groups[label] = eps
        print(
            f"[avoid_modes] {label} ({meta.algorithm}): success {100 * stats['success_rate']:.0f}%, "
            f"{stats['num_routes']} routes {stats['route_counts']}, entropy "
            f"{stats['route_entropy']:.2f} nats, at the edge {stats['edge_step_fraction']}, "
            f"row crossings x {stats['row_crossing_x']}, {stats['seconds']:.0f}s",
            flush=True,
        )
    name = f"avoid_modes_{args.name or next(iter(figures)).replace(' ', '_')}"
    extra: dict[str, Any] = {"episodes": args.episodes, "seed": args.seed}
    extra["stochastic"] = args.stochastic
    extra["env_ids"] = sorted(envs)
    if args.act_steps is not None:
        extra["act_steps"] = args.act_steps
    if args.note:
        extra["note"] = args.note
    if not args.no_plot:
        png = plot_paths(groups, str(RESULTS_DIR / f"{name}.png"), title=" / ".join(sorted(envs)))
        extra["plot"] = str(Path(png).relative_to(RESULTS_DIR.parent.parent))
    series = {
        label: {"routes": [list(e["route"]) for e in eps], "success": [e["success"] for e in eps]}
        for label, eps in groups.items()
    }
    print(f"wrote {write_result(name, figures, series, **extra)}", flush=True)


if __name__ == "__main__":
    main()
