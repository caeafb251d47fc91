"""What every scripted demonstrator shares (robomimic tasks, Franka Kitchen): attempts
until enough episodes succeed, with a progress line each, and the summary of the run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def collect_successes(
    run: Callable[[int], tuple[T, bool, int]],
    episodes: int,
    *,
    seed: int,
    max_attempts: int,
    start: float,
    describe: Callable[[int], str] | None = None,
) -> tuple[list[T], list[int], int, int]:
    """Call ``run(seed + j)`` (→ episode, success, env steps) for attempts ``j = 0, 1,
    ...`` until ``episodes`` succeed or ``max_attempts`` are spent; with ``describe``
    (attempt number → line prefix) a progress line per attempt, its rate counted from
    ``start`` (``time.perf_counter()``). Returns the successful episodes, their lengths,
    the attempts and the env steps of all attempts."""
    kept: list[T] = []
    lengths: list[int] = []
    attempts = steps = 0
    while len(kept) < episodes and attempts < max_attempts:
        episode, success, length = run(seed + attempts)
        attempts, steps = attempts + 1, steps + length
        if success:
            kept.append(episode)
            lengths.append(length)
        if describe is not None:
            rate = steps / (time.perf_counter() - start)
            print(
                f"{describe(attempts)} {'success' if success else 'failed'} in {length} "
                f"steps; {len(kept)}/{episodes} kept, {rate:.0f} env steps/s",
                flush=True,
            )
    return kept, lengths, attempts, steps


def success_summary(
    lengths: list[int], attempts: int, steps: int, seconds: float
) -> dict[str, Any]:
    """Demos kept, attempts, success rate, mean demo length, env steps of all attempts,
    seconds and env steps/s (``lengths``: the kept demos' env steps)."""
    return {
        "demos": len(lengths),
        "attempts": attempts,
        "success_rate": len(lengths) / max(attempts, 1),
        "mean_demo_length": float(np.mean(lengths)) if lengths else None,
        "env_steps": steps,
        "seconds": seconds,
        "env_steps_per_s": steps / seconds if seconds > 0 else None,
    }
