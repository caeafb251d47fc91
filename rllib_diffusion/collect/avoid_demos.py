"""Scripted multimodal demonstrations for ``rllib_diffusion/Avoid-v0``, written as Minari.

The demonstrator's routes branch once per obstacle row: left or right of the row-1
obstacle, then one gap to the left or to the right at each further row (gap ``g`` of row
``r`` leads to gap ``g`` or ``g + 1`` of row ``r + 1``). That makes the 8 routes ``0-0-0,
0-0-1, 0-1-1, 0-1-2, 1-1-1, 1-1-2, 1-2-2, 1-2-3`` (see
:func:`rllib_diffusion.envs.avoid.route_name`). By default the episodes run through the 8
routes in a fresh random order every 8 episodes, so each is used by 1/8 of the episodes
(``--unbalanced``: independent fair coin flips per row instead). The demonstrator steers
towards the centre of the chosen gap of each row in turn (with a per-episode jitter of the
gap centres and of the speed) and adds Gaussian action noise; it turns sharply towards the
next gap right after each row (see :class:`AvoidDemonstrator`).

Only successful episodes are written (a failed attempt is retried with the next seed; with
the default noise there are none). The dataset's metadata holds the route counts and the
reference scores 0 and 1, so that the normalised score of a policy is its success rate in
percent (with shaping off).

Run ``python -m rllib_diffusion.collect.avoid_demos --episodes 200 --dataset-id
rllib-diffusion/avoid/scripted-v0`` (or ``experiments/avoid_demos.py`` with the same flags),
then ``rllib-diffusion pretrain --dataset rllib-diffusion/avoid/scripted-v0``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rllib_diffusion.envs.avoid import ENV_ID, GOAL_Y, M5_ENV_ID, ROWS, START

#: Env ids a demonstration set can be written for.
AVOID_IDS = (ENV_ID, M5_ENV_ID)

#: Centre x of each gap of each row (gap 0 left of the first obstacle).
GAP_CENTRES: tuple[tuple[float, ...], ...] = (
    (0.425, 0.575),
    (0.35, 0.50, 0.65),
    (0.275, 0.425, 0.575, 0.725),
)
#: The routes the demonstrator takes (one gap sideways per row).
DEMO_ROUTES: tuple[tuple[int, int, int], ...] = tuple(
    (g1, g2, g3) for g1 in (0, 1) for g2 in (g1, g1 + 1) for g3 in (g2, g2 + 1)
)


@dataclass
class AvoidDemonstrator:
    """Waypoint follower through the gaps of a route; ``act(pos)`` returns an action.

    The path is a staircase: right after a row (or the start) it moves sideways to the
    next gap's centre while rising ``turn`` (m), then straight up through the gap. Routes
    thus split with a sharp turn right after each branch point, so that a few steps later
    the position alone tells which branch was taken (a gentle diagonal keeps the branches
    close for long, and a policy that re-decides every chunk dithers between them into
    the obstacle straight ahead). ``turn=0``: straight lines from gap to gap.

    ``noise``: std of the Gaussian noise added to each action (in action units);
    ``gap_jitter``: uniform jitter (m) of each gap centre per episode; ``speed``: range of
    the per-episode speed (fraction of the maximal step).
    """

    noise: float = 0.05
    turn: float = 0.09
    gap_jitter: float = 0.015
    speed: tuple[float, float] = (0.6, 0.9)
    route: tuple[int, int, int] = (0, 0, 0)
    _waypoints: list[np.ndarray] = field(default_factory=list)
    _k: int = 0
    _speed: float = 0.75
    _rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def reset(self, rng: np.random.Generator, route: tuple[int, int, int] | None = None) -> None:
        """Start an episode on ``route`` (default: drawn by coin flips, see the module doc)."""
        self._rng = rng
        if route is None:
            g1 = int(rng.integers(2))
            g2 = g1 + int(rng.integers(2))
            route = (g1, g2, g2 + int(rng.integers(2)))
        self.route = tuple(int(g) for g in route)  # type: ignore[assignment]
        xs = [
            GAP_CENTRES[r][g] + rng.uniform(-self.gap_jitter, self.gap_jitter)
            for r, g in enumerate(self.route)
        ]
        self._waypoints = []
        below = START[1]
        for x, (row_y, _) in zip(xs, ROWS, strict=True):
            if self.turn > 0:
                self._waypoints.append(np.array([x, below + self.turn]))
            self._waypoints.append(np.array([x, row_y]))
            below = row_y
        self._waypoints.append(np.array([xs[-1], GOAL_Y + 0.05]))
        self._k = 0
        self._speed = float(rng.uniform(*self.speed))

    def act(self, pos: np.ndarray) -> np.ndarray:
        pos = np.asarray(pos, np.float64)
        # A waypoint is passed once its row is crossed.
        while self._k < len(self._waypoints) - 1 and pos[1] >= self._waypoints[self._k][1]:
            self._k += 1
        d = self._waypoints[self._k] - pos
        direction = d / max(float(np.linalg.norm(d)), 1e-9)
        a = self._speed * direction + self.noise * self._rng.standard_normal(2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def run_demo_episode(
    env: Any, demonstrator: AvoidDemonstrator, seed: int, route: tuple[int, int, int] | None = None
) -> dict[str, Any]:
    """One episode in ``env`` (an ``Avoid-v0`` env); returns its arrays, success and route."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    demonstrator.reset(rng, route)
    observations, actions, rewards = [np.asarray(obs, np.float32)], [], []
    terminated = truncated = False
    info: dict[str, Any] = {}
    while not (terminated or truncated):
        action = demonstrator.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(np.asarray(obs, np.float32))
        actions.append(action)
        rewards.append(float(reward))
    return {
        "observations": np.stack(observations),
        "actions": np.stack(actions),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": bool(terminated),
        "truncated": bool(truncated and not terminated),
        "success": bool(info.get("success")),
        "route": tuple(info.get("route", (-1, -1, -1))),
        "intended_route": demonstrator.route,
    }


def routes_through(row3_gaps: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """The demonstrated routes that cross row 3 in one of ``row3_gaps`` (the DPPO
    reference's avoid data ``d56``/``d57``/``d58``: D3IL modes 5 and 6/7/8, i.e. row-3
    gaps 0 and 1/2/3)."""
    chosen = tuple(r for r in DEMO_ROUTES if r[2] in row3_gaps)
    if not chosen:
        raise ValueError(f"no demonstrated route crosses row 3 in gaps {row3_gaps}.")
    return chosen


def demo_episodes(
    num_episodes: int,
    *,
    seed: int = 0,
    noise: float = 0.05,
    turn: float = 0.09,
    balanced: bool = True,
    keep_failures: bool = False,
    max_attempts: int | None = None,
    progress: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    routes: tuple[tuple[int, int, int], ...] = DEMO_ROUTES,
) -> tuple[list[dict[str, Any]], int]:
    """``num_episodes`` scripted episodes (successful ones only unless ``keep_failures``);
    attempt ``i`` uses seed ``seed + i``. Returns ``(episodes, attempts)``.

    ``balanced``: the routes of successive episodes run through :data:`DEMO_ROUTES` in a
    fresh random order every 8 episodes (a failed attempt's route is tried again), so the
    route counts differ by at most one; otherwise each episode flips its own coins.
    ``routes``: the balanced cycle's routes (a subset of :data:`DEMO_ROUTES`, e.g. those
    of :func:`routes_through`).
    """
    from rllib_diffusion.envs.tasks import make_env

    env = make_env(ENV_ID, **(env_kwargs or {}))
    demonstrator = AvoidDemonstrator(noise=noise, turn=turn)
    max_attempts = max_attempts if max_attempts is not None else 2 * num_episodes + 10
    episodes: list[dict[str, Any]] = []
    attempts = 0
    order_rng = np.random.default_rng([seed, 8])
    queue: list[tuple[int, int, int]] = []
    t0 = last = time.perf_counter()
    while len(episodes) < num_episodes:
        if attempts >= max_attempts:
            raise RuntimeError(
                f"Only {len(episodes)} of {num_episodes} scripted Avoid episodes succeeded in "
                f"{attempts} attempts; lower --noise."
            )
        route = None
        if balanced:
            if not queue:
                queue = [routes[i] for i in order_rng.permutation(len(routes))]
            route = queue.pop()
        ep = run_demo_episode(env, demonstrator, seed + attempts, route)
        attempts += 1
        if ep["success"] or keep_failures:
            episodes.append(ep)
        elif route is not None:
            queue.append(route)
        now = time.perf_counter()
        if progress and (now - last > 5 or len(episodes) == num_episodes):
            last = now
            print(
                f"[avoid-demos] {len(episodes)}/{num_episodes} episodes kept, {attempts} attempts, "
                f"{now - t0:.1f}s",
                flush=True,
            )
    env.close()
    return episodes, attempts


def write_avoid_dataset(
    dataset_id: str,
    num_episodes: int = 200,
    *,
    seed: int = 0,
    noise: float = 0.05,
    turn: float = 0.09,
    balanced: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    env_id: str = ENV_ID,
    routes: tuple[tuple[int, int, int], ...] = DEMO_ROUTES,
) -> dict[str, Any]:
    """Collect ``num_episodes`` successful demos and write Minari dataset ``dataset_id``
    (atomically: :func:`rllib_diffusion.data.write_minari`) for ``env_id`` (an Avoid id:
    the demonstrations run in ``Avoid-v0``, which ends them at the finish line, and are
    stored for ``env_id``, whose policies they pretrain; ``AvoidM5-v0`` pays per step).
    Returns a summary dict."""
    from rllib_diffusion.avoid_modes import route_stats

    t0 = time.perf_counter()
    if env_id not in AVOID_IDS:
        raise ValueError(f"env_id must be one of {AVOID_IDS}, got {env_id!r}.")
    raw, attempts = demo_episodes(
        num_episodes,
        seed=seed,
        noise=noise,
        turn=turn,
        balanced=balanced,
        progress=progress,
        routes=routes,
    )
    episodes = _as_episodes(raw)
    stats = route_stats([{"success": e["success"], "route": e["route"]} for e in raw])
    stats["attempts"] = attempts
    path = _write_demos(episodes, dataset_id, env_id, noise, stats, overwrite=overwrite)
    summary = {
        "dataset_id": dataset_id,
        "path": path,
        "env_id": env_id,
        "episodes": len(episodes),
        "transitions": int(sum(len(e.actions) for e in episodes)),
        **dict(seed=seed, noise=noise, turn=turn, balanced=balanced),
        "seconds": time.perf_counter() - t0,
        **stats,
    }
    if progress:
        _print_written(summary)
    return summary


def _as_episodes(raw: list[dict[str, Any]]) -> list[Any]:
    """The ``Episode`` of each episode dict of :func:`run_demo_episode`."""
    from rllib_diffusion.data import Episode

    episodes = []
    for ep in raw:
        T = len(ep["actions"])
        term, trunc = np.zeros(T, bool), np.zeros(T, bool)
        term[-1], trunc[-1] = ep["terminated"], ep["truncated"]
        episodes.append(
            Episode(
                observations=ep["observations"],
                actions=ep["actions"],
                rewards=ep["rewards"],
                terminations=term,
                truncations=trunc,
            )
        )
    return episodes


def _write_demos(
    episodes: list[Any],
    dataset_id: str,
    env_id: str,
    noise: float,
    stats: dict[str, Any],
    *,
    overwrite: bool,
) -> str:
    """Write the demonstrations as Minari ``dataset_id`` (route stats in its metadata)."""
    from rllib_diffusion.data import write_minari

    return write_minari(
        episodes,
        dataset_id,
        env_id=env_id,
        ref_min_score=0.0,
        ref_max_score=1.0,
        algorithm_name="scripted-avoid-demonstrator",
        author="rllib-diffusion avoid_demos",
        description=(
            f"{len(episodes)} scripted multimodal demonstrations of {env_id} "
            f"({stats['num_routes']} routes, action noise {noise})."
        ),
        overwrite=overwrite,
        extra_metadata={"avoid_routes": stats},
    )


def _print_written(summary: dict[str, Any]) -> None:
    """One line saying what :func:`write_avoid_dataset` wrote, and where."""
    print(
        f"[avoid-demos] wrote {summary['dataset_id']}: {summary['episodes']} episodes, "
        f"{summary['transitions']} transitions, {summary['num_routes']} routes "
        f"{summary['route_counts']} -> {summary['path']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    from rllib_diffusion.data.errors import DatasetError

    try:
        summary = write_avoid_dataset(
            args.dataset_id,
            args.episodes,
            seed=args.seed,
            noise=args.noise,
            turn=args.turn,
            balanced=not args.unbalanced,
            overwrite=args.overwrite,
            env_id=args.env_id,
            routes=DEMO_ROUTES if args.row3_gaps is None else routes_through(tuple(args.row3_gaps)),
        )
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m rllib_diffusion.collect.avoid_demos",
        description=f"Scripted multimodal demonstrations of {ENV_ID}, written as a Minari dataset.",
    )
    parser.add_argument("--episodes", type=int, default=200, help="successful demos to keep")
    parser.add_argument(
        "--dataset-id", default="rllib-diffusion/avoid/scripted-v0", help="Minari id to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode")
    parser.add_argument("--noise", type=float, default=0.05, help="std of the action noise")
    parser.add_argument(
        "--turn",
        type=float,
        default=0.09,
        help="rise (m) over which the demonstrator turns to the next gap after a row "
        "(0: straight diagonals from gap to gap)",
    )
    parser.add_argument(
        "--unbalanced",
        action="store_true",
        help="draw each episode's route by coin flips instead of cycling through the 8 routes",
    )
    parser.add_argument(
        "--env-id", default=ENV_ID, choices=AVOID_IDS, help="env the dataset is written for"
    )
    parser.add_argument(
        "--row3-gaps",
        type=int,
        nargs="+",
        choices=range(4),
        default=None,
        help="only the routes crossing row 3 in these gaps (e.g. 0 1: the reference's "
        "avoid_m1 data d56); default: all 8 routes",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag values that do not go together or are out of range (``parser.error``)."""
    if args.row3_gaps is not None and args.unbalanced:
        parser.error("--row3-gaps needs the balanced route cycle; drop --unbalanced")
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.noise < 0:
        parser.error("--noise must be >= 0")
    if not 0 <= args.turn <= 0.17:
        parser.error("--turn must be in [0, 0.17] (the distance between rows is 0.18)")


if __name__ == "__main__":
    sys.exit(main())
