"""Benchmark (issue #13): the in-training evaluation of a DPPO run, RLlib's evaluation in
the driver (one env, one batch-1 forward per decision) against the project's lock-step
``evaluate_module`` (``finetune_run.lockstep_evaluation``: all episodes advance together,
one batched forward per decision), side by side in one process.

Both configs are built from the same pretrained checkpoint; rounds alternate between
them and every ``algo.evaluate()`` is timed in wall seconds and in this process's CPU
seconds (the evaluation runs in the driver in both cases; the CPU figure is what to
compare on a shared, loaded machine). Medians and the ratio of medians are printed and
written to ``benchmarks/results/<name>.json``.

Example::

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --checkpoint runs/bc/checkpoint \
        --episodes 10 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="a DiffusionBC checkpoint")
    p.add_argument("--episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--rounds", type=int, default=3, help="timed evaluations per variant")
    p.add_argument("--name", default="eval_speed", help="result file name")
    return p.parse_args(argv)


def build(checkpoint: str, episodes: int, lockstep: bool) -> Any:
    """A DPPO algorithm from ``checkpoint`` whose evaluation is lock-step or RLlib's."""
    from rllib_diffusion.algorithms.dppo.finetune import dppo_config_from_pretrained
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, lockstep_evaluation

    s = FinetuneSettings.of(checkpoint=checkpoint, eval_interval=1, eval_episodes=episodes)
    config = dppo_config_from_pretrained(checkpoint, s)
    config.evaluation(custom_evaluation_function=lockstep_evaluation if lockstep else None)
    return config.build_algo()


def timed_evaluation(algo: Any) -> dict[str, float]:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

    wall, cpu = time.perf_counter(), time.process_time()
    result = algo.evaluate()[ENV_RUNNER_RESULTS]
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "return_mean": float(result["episode_return_mean"]),
        "episodes": float(result["num_episodes"]),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from rllib_diffusion.utils.runtime import init_ray

    init_ray()
    algos = {name: build(args.checkpoint, args.episodes, name == "lockstep") for name in
             ("rllib", "lockstep")}  # fmt: skip
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in algos}
    for r in range(args.rounds):
        order = list(algos) if r % 2 == 0 else list(reversed(algos))
        for name in order:
            rounds[name].append(timed_evaluation(algos[name]))
            print(f"round {r} {name}: {rounds[name][-1]}", flush=True)
    for algo in algos.values():
        algo.stop()
    figures: dict[str, Any] = {}
    for name, rows in rounds.items():
        for key in ("wall_s", "cpu_s", "return_mean"):
            figures[f"{name}_{key}_median"] = statistics.median(x[key] for x in rows)
    for key in ("wall_s", "cpu_s"):
        figures[f"speedup_{key}"] = (
            figures[f"rllib_{key}_median"] / figures[f"lockstep_{key}_median"]
        )
    figures["load_average"] = os.getloadavg()
    figures["episodes"] = args.episodes
    print({k: v for k, v in figures.items()}, flush=True)
    path = write_result(args.name, figures, series=rounds)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
