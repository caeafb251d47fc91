"""CPU seconds per SAC gradient step of DSRL-NA on a Hopper BC checkpoint (issue 17).

Builds DSRL (1 EnvRunner × 4 envs, the official utd 20 per 2 vector steps, 2-step
warm-up), trains one iteration of 80 decisions (200 gradient steps) to warm up, then
times two more: CPU seconds of the driver process (the learner and the replay live
there; robust to other jobs' load, unlike wall time) per gradient step, wall seconds too,
and RLlib's timers. To compare code versions, run it from a worktree of each with
``PYTHONPATH=<worktree>``; results are merged by ``--label`` into
``benchmarks/results/<name>.json``::

    PYTHONPATH=/tmp/old python benchmarks/dsrl_speed.py --label old
    python benchmarks/dsrl_speed.py --label new
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def measure(checkpoint: str, iterations: int = 2) -> dict[str, Any]:
    from rllib_diffusion.algorithms.dsrl.finetune import dsrl_config
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings
    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    limit_threads()
    s = FinetuneSettings.of(
        checkpoint=checkpoint,
        algo="dsrl",
        out_dir="/tmp/dsrl_speed",
        num_envs_per_env_runner=4,
        decisions_per_iteration=80,
        eval_interval=0,
        init_rollout_steps=2,
        seed=0,
    )
    init_ray()
    algo = dsrl_config(s).build_algo()
    try:
        algo.train()
        wall = cpu = steps = 0.0
        for _ in range(iterations):
            t, c = time.time(), time.process_time()
            result = algo.train()
            wall, cpu = wall + time.time() - t, cpu + time.process_time() - c
            trained = result["learners"]["__all_modules__"]["num_module_steps_trained"]
            steps += trained / s_batch(algo)
        timers = result.get("timers", {})
    finally:
        algo.stop()
    return {
        "driver_cpu_s_per_gradient_step": cpu / steps,
        "wall_s_per_gradient_step": wall / steps,
        "gradient_steps": steps,
        "learner_update_timer": timers.get("learner_update_timer"),
        "replay_buffer_sampling_timer": timers.get("replay_buffer_sampling_timer"),
        "load_average": os.getloadavg(),
    }


def s_batch(algo: Any) -> int:
    return int(algo.config.total_train_batch_size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", default="runs/beyond/bc_ddpm/checkpoint")
    p.add_argument("--label", required=True, help="key of this code version in the result")
    p.add_argument("--name", default="dsrl_speed_hopper", help="result file name")
    args = p.parse_args(argv)
    figures = measure(str(Path(args.checkpoint).resolve()))
    path = RESULTS_DIR / f"{args.name}.json"
    merged = json.loads(path.read_text())["figures"] if path.exists() else {}
    merged[args.label] = figures
    write_result(args.name, merged)
    print(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
