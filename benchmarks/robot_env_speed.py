"""Benchmark: env steps/s of the robomimic tasks on robosuite (one process, one thread).

Per task: time to make the env, to reset it (robosuite reloads its model on every reset),
and env steps/s of random actions (``make_env(id)``: the registered env with its
``TimeLimit``, resets excluded from the step rate), after a warm-up that lets numba compile.
The machine is shared, so the load average is stored with the figures.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/robot_env_speed.py --steps 1000

Writes ``benchmarks/results/robot_env_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def measure(env_id: str, steps: int, resets: int) -> dict[str, float]:
    from rllib_diffusion.envs.tasks import make_env

    t0 = time.perf_counter()
    env = make_env(env_id)
    made = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(20):  # warm-up (numba compiles on first use)
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    t0 = time.perf_counter()
    for i in range(resets):
        env.reset(seed=i)
    reset_s = (time.perf_counter() - t0) / resets
    env.reset(seed=0)
    stepping = 0.0
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape)
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        stepping += time.perf_counter() - t0
        if terminated or truncated:
            env.reset()
    env.close()
    return {"make_s": made, "reset_s": reset_s, "env_steps_per_s": steps / stepping}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--note", default=None)
    args = parser.parse_args()
    from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS

    figures = {}
    for env_id in ROBOT_TASKS:
        figures[env_id] = measure(env_id, args.steps, args.resets)
        print(env_id, {k: round(v, 3) for k, v in figures[env_id].items()}, flush=True)
    path = write_result(
        "robot_env_speed",
        figures,
        load_average=os.getloadavg(),
        steps=args.steps,
        note=args.note,
    )
    print(path)


if __name__ == "__main__":
    main()
