"""Mode metrics on ``rllib_diffusion/Avoid-v0``: success rate and routes taken.

:func:`route_stats` summarises episodes (each a mapping with ``success`` and ``route``);
:func:`rollout_module` runs a policy RLModule in the (chunked) Avoid env the way
:func:`rllib_diffusion.evaluation.evaluate_module` does (lock-step episodes, episode ``i``
reset with ``seed + i``, torch RNG seeded) but keeps each episode's final info (route,
success) and its path; ``benchmarks/avoid_modes.py`` uses both on a checkpoint.

Routes are counted over **successful** episodes only (a route that ends in an obstacle is
not a way through). The entropy is in nats over the observed route frequencies; the
normalised entropy divides it by log 24 (the number of route codes), as D3IL does.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rllib_diffusion.envs.avoid import NUM_ROUTE_CODES, ROWS, X_BOUNDS, route_name

#: A position this close to a workspace x bound counts as "at the edge" (the D3IL reward's
#: −0.1 starts at the bound; the row gaps next to the walls are 0.125 wide).
EDGE_MARGIN = 0.02


def route_stats(episodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Success rate and route statistics of ``episodes``.

    Returns ``episodes``, ``successes``, ``success_rate``, ``num_routes`` (distinct routes of
    successful episodes), ``route_counts`` / ``route_frequencies`` (by route name, most
    frequent first), ``route_entropy`` (nats), ``route_entropy_normalized`` (÷ log 24) and
    ``failure_routes`` (the partial routes at which failed episodes ended).
    """
    eps = list(episodes)
    ok = [tuple(int(g) for g in e["route"]) for e in eps if e["success"]]
    failed = [tuple(int(g) for g in e["route"]) for e in eps if not e["success"]]
    counts = Counter(route_name(r) for r in ok)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    n_ok = len(ok)
    freqs = {k: v / n_ok for k, v in ordered.items()} if n_ok else {}
    entropy = -sum(p * math.log(p) for p in freqs.values())
    return {
        "episodes": len(eps),
        "successes": n_ok,
        "success_rate": n_ok / len(eps) if eps else 0.0,
        "num_routes": len(counts),
        "route_counts": ordered,
        "route_frequencies": freqs,
        "route_names": list(ordered),
        "route_entropy": entropy,
        "route_entropy_normalized": entropy / math.log(NUM_ROUTE_CODES),
        "failure_routes": dict(Counter(route_name(r) for r in failed)),
    }


def path_stats(episodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Where the successful episodes' paths run (each episode needs ``path``, (T+1, 2)).

    Returns ``edge_step_fraction`` (share of their positions within :data:`EDGE_MARGIN`
    of a workspace x bound) and ``row_crossing_x`` (per obstacle row, the mean x of the
    first position at or above the row's y; None where no path reaches it). Both None
    without a successful episode. They separate a policy that threads the demonstrated
    gaps from one that runs along the wall on the same route.
    """
    paths = [np.asarray(e["path"], np.float64) for e in episodes if e["success"]]
    if not paths:
        return {"edge_step_fraction": None, "row_crossing_x": [None] * len(ROWS)}
    x = np.concatenate([p[:, 0] for p in paths])
    edge = (x <= X_BOUNDS[0] + EDGE_MARGIN) | (x >= X_BOUNDS[1] - EDGE_MARGIN)
    crossing = []
    for row_y, _ in ROWS:
        xs = [p[np.argmax(p[:, 1] >= row_y), 0] for p in paths if (p[:, 1] >= row_y).any()]
        crossing.append(float(np.mean(xs)) if xs else None)
    return {"edge_step_fraction": float(edge.mean()), "row_crossing_x": crossing}


def rollout_module(
    module: Any,
    env_config: dict[str, Any],
    *,
    num_episodes: int = 100,
    seed: int = 0,
    deterministic: bool = True,
) -> list[dict[str, Any]]:
    """Run ``num_episodes`` episodes of ``module`` in ``make_chunked_env(env_config)``.

    Returns one dict per episode: ``success``, ``collision``, ``route`` (tuple),
    ``route_name``, ``return``, ``length`` (env steps) and ``path`` ((T+1, 2) positions).
    """
    from rllib_diffusion.evaluation import evaluate_module

    ends: dict[int, dict[str, Any]] = {}

    def record(i: int, env: Any, info: dict[str, Any]) -> None:
        ends[i] = {
            "success": bool(info.get("success", False)),
            "collision": bool(info.get("collision", False)),
            "route": tuple(int(g) for g in info.get("route", (-1, -1, -1))),
            "route_name": info.get("route_name", "x-x-x"),
            "path": np.asarray(env.unwrapped.trajectory, np.float64),
        }

    result = evaluate_module(
        module,
        env_config,
        num_episodes=num_episodes,
        seed=seed,
        deterministic=deterministic,
        max_envs=num_episodes,
        episode_end=record,
    )
    return [
        {
            **ends[i],
            "return": float(result["episode_returns"][i]),
            "length": int(result["episode_lengths"][i]),
        }
        for i in range(num_episodes)
    ]


def evaluate_modes(
    module: Any,
    env_config: dict[str, Any],
    *,
    num_episodes: int = 100,
    seed: int = 0,
    deterministic: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`rollout_module` then :func:`route_stats`; returns ``(stats, episodes)`` where
    ``stats`` also has :func:`path_stats`, ``return_mean``, ``length_mean``, ``env_steps``
    and ``seconds``."""
    t0 = time.perf_counter()
    episodes = rollout_module(
        module, env_config, num_episodes=num_episodes, seed=seed, deterministic=deterministic
    )
    stats = {**route_stats(episodes), **path_stats(episodes)}
    stats.update(
        deterministic=deterministic,
        seed=seed,
        return_mean=float(np.mean([e["return"] for e in episodes])),
        length_mean=float(np.mean([e["length"] for e in episodes])),
        collisions=int(sum(e["collision"] for e in episodes)),
        env_steps=int(sum(e["length"] for e in episodes)),
        seconds=time.perf_counter() - t0,
    )
    return stats, episodes


def plot_paths(
    groups: Mapping[str, list[dict[str, Any]]], path: str, *, title: str | None = None
) -> str:
    """Save a PNG with one panel per entry of ``groups`` (label -> episodes with ``path``
    and ``success``): obstacles, finish line, successful paths coloured by route (the same
    colour for a route in every panel), failed paths dashed grey. Written atomically; needs
    matplotlib."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from rllib_diffusion.collect.avoid_demos import DEMO_ROUTES
    from rllib_diffusion.envs.avoid import GOAL_Y, OBSTACLES, X_BOUNDS, Y_BOUNDS

    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.4), squeeze=False)
    # One colour per demonstrated route in every panel (tab10 without its grey, which marks
    # failures); any other route is drawn in the last colour.
    palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    colour = {route_name(r): palette[k] for k, r in enumerate(DEMO_ROUTES)}
    for ax, (label, eps) in zip(axes[0], groups.items(), strict=True):
        stats = route_stats(eps)
        for e in eps:
            p = np.asarray(e["path"])
            if e["success"]:
                c = colour.get(route_name(e["route"]), palette[-1])
                ax.plot(p[:, 0], p[:, 1], lw=0.8, alpha=0.6, color=c)
            else:
                ax.plot(p[:, 0], p[:, 1], lw=0.8, alpha=0.6, color="0.6", ls="--")
        for x, y, r in OBSTACLES:
            ax.add_patch(Circle((x, y), r, color="tab:red"))
        ax.axhline(GOAL_Y, color="tab:green", lw=2)
        ax.set_xlim(*X_BOUNDS)
        ax.set_ylim(Y_BOUNDS[0], Y_BOUNDS[1])
        ax.set_aspect("equal")
        ax.set_title(
            f"{label}\nsuccess {100 * stats['success_rate']:.0f}%, "
            f"{stats['num_routes']} routes, H={stats['route_entropy']:.2f}",
            fontsize=9,
        )
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[: -len(".png")] + ".tmp.png" if path.endswith(".png") else path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
