"""Benchmark: TD3+BC gradient steps per CPU-second, ours (RLlib learner) vs d3rlpy's, in
one process on the same transitions, batch 256, one torch thread.

Alternates blocks of ``--block`` gradient steps (ours, then d3rlpy's) for ``--rounds``
rounds, so both see the same machine load; reports the median over rounds of steps per
CPU-second (``time.process_time``, this process only) and per wall second. Both include
drawing their minibatches (ours: uniform rows of the transition arrays, handed to
``learner.update`` as RLlib's online phase does; d3rlpy: ``sample_transition_batch``).
Neither includes RLlib's ``ray.data`` offline pipeline (see ``benchmarks/offline.py`` for
the end-to-end rate). Needs d3rlpy importable (e.g. ``PYTHONPATH`` to a separate
``pip install --target`` directory: its pins would downgrade gymnasium in the venv).

    PYTHONPATH=/tmp/d3rlpy_site OMP_NUM_THREADS=1 python benchmarks/td3bc_speed.py

Writes ``benchmarks/results/td3bc_speed_hopper_medium_small.json`` after every round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

MID = "default_policy"


def transitions(data) -> dict[str, np.ndarray]:
    """The dataset's transitions as arrays (raw units, as both learners read them)."""
    from ray.rllib.core.columns import Columns as C

    eps = data.episodes
    return {
        C.OBS: np.concatenate([e.observations[:-1] for e in eps]).astype(np.float32),
        C.ACTIONS: np.concatenate([e.actions for e in eps]).astype(np.float32),
        C.REWARDS: np.concatenate([e.rewards for e in eps]).astype(np.float32),
        C.NEXT_OBS: np.concatenate([e.observations[1:] for e in eps]).astype(np.float32),
        C.TERMINATEDS: np.concatenate([e.terminations for e in eps]).astype(np.float32),
    }


def our_stepper(data, cols: dict[str, np.ndarray], batch_size: int, seed: int):
    """``step(n)``: n gradient steps of our TD3+BC learner on uniform minibatches."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, build_offline_config

    s = OfflineSettings(dataset="unused", algo="td3bc", batch_size=batch_size, seed=seed)
    config, _ = build_offline_config(
        s, "/unused", data.env_id, data.obs_dim, data.action_dim, dataset=data
    )
    learner = config.build_learner()
    rng = np.random.default_rng(seed)
    n_rows = len(cols["rewards"])

    def step(n: int) -> None:
        idx = rng.integers(0, n_rows, size=n * batch_size)
        rows = {k: v[idx] for k, v in cols.items()}
        batch = MultiAgentBatch({MID: SampleBatch(rows)}, env_steps=len(idx))
        learner.update(batch=batch, minibatch_size=batch_size, num_epochs=1)

    return step


def d3rlpy_stepper(data, cols: dict[str, np.ndarray], batch_size: int, seed: int):
    """``step(n)``: n gradient steps of d3rlpy's TD3+BC (the settings of offline.py)."""
    import d3rlpy

    d3rlpy.seed(seed)
    term = cols["terminateds"]
    ends = np.cumsum([len(e.actions) for e in data.episodes]) - 1
    trunc = np.zeros_like(term)
    trunc[ends] = 1.0 - term[ends]
    dataset = d3rlpy.dataset.MDPDataset(
        cols["obs"], cols["actions"], cols["rewards"], term, timeouts=trunc
    )
    algo = d3rlpy.algos.TD3PlusBCConfig(
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        batch_size=batch_size,
        target_smoothing_sigma=0.2,
        target_smoothing_clip=0.5,
        alpha=2.5,
        update_actor_interval=2,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
    ).create(device="cpu:0")
    # As d3rlpy's fitter does before training: fit the scalers, then build the nets.
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)

    def step(n: int) -> None:
        for _ in range(n):
            algo.update(dataset.sample_transition_batch(batch_size))

    return step


def timed(step, n: int) -> tuple[float, float]:
    """``(steps per CPU-second, steps per wall second)`` of ``step(n)``."""
    c0, w0 = time.process_time(), time.perf_counter()
    step(n)
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--block", type=int, default=500, help="gradient steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    from rllib_diffusion.data import load_dataset

    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    cols = transitions(data)
    steppers = {
        "ours": our_stepper(data, cols, args.batch_size, args.seed),
        "d3rlpy": d3rlpy_stepper(data, cols, args.batch_size, args.seed),
    }
    for step in steppers.values():
        step(20)  # warm-up: first-call allocations, lazy imports
    series: dict[str, Any] = {f"{k}_{u}": [] for k in steppers for u in ("cpu", "wall")}
    for r in range(args.rounds):
        for name, step in steppers.items():
            cpu, wall = timed(step, args.block)
            series[f"{name}_cpu"].append(cpu)
            series[f"{name}_wall"].append(wall)
            print(f"round {r + 1} {name}: {cpu:.1f} steps/CPU-s, {wall:.1f} steps/s", flush=True)
        write_result("td3bc_speed_hopper_medium_small", figures(series, args), series)


def figures(series: dict[str, list[float]], args) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in series.items()}
    return {
        "ours_steps_per_cpu_second": med["ours_cpu"],
        "d3rlpy_steps_per_cpu_second": med["d3rlpy_cpu"],
        "ratio_ours_over_d3rlpy_cpu": med["ours_cpu"] / med["d3rlpy_cpu"],
        "ours_steps_per_wall_second": med["ours_wall"],
        "d3rlpy_steps_per_wall_second": med["d3rlpy_wall"],
        "ratio_ours_over_d3rlpy_wall": med["ours_wall"] / med["d3rlpy_wall"],
        "rounds_done": len(series["ours_cpu"]),
        "block_steps": args.block,
        "batch_size": args.batch_size,
    }


if __name__ == "__main__":
    main()
