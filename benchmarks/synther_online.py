"""Smoke figure of online SynthER (``finetune --algo dql --synther-real-ratio 0.5``) on
Hopper-v5: a tiny DQL fine-tuning run from a DiffusionBC checkpoint with the generator
retrained on the replay every ``--retrain-every`` env steps and every minibatch half
synthetic, and (``--arm dql``) the same run without it. Sized to a few minutes on one
loaded core: it measures what a retrain costs and that the loop runs end to end, not
whether SynthER helps (one seed, 8,000 env steps).

Each arm goes into ``<out>/<arm>_seed<seed>``; ``--summarize`` writes
``benchmarks/results/<name>.json`` from the finished runs: per arm the evaluations
before/after, wall and train seconds, the load average at start and end, and per
iteration the SynthER values (pool rows, last retrain's env step, generator loss,
retrain seconds).

Example::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/synther_online.py --arm dql_synther
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/synther_online.py --arm dql
    python benchmarks/synther_online.py --summarize
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

#: DQL knobs of both arms: minibatches of 256, 4 gradient steps per 256 new decisions,
#: the actor on after 1,000 decisions (two iterations).
DQL_KNOBS = {"minibatch_size": 256, "replay_ratio": 4.0, "critic_warmup_decisions": 1000}
#: Run settings of both arms (one core: sampling in the driver).
RUN = dict(
    env_steps=8000,
    num_env_runners=0,
    num_envs_per_env_runner=10,
    decisions_per_iteration=500,
    eval_interval=0,
    eval_episodes=5,
    checkpoint_interval=0,
)
#: The SynthER knobs of ``dql_synther`` (the others keep their defaults).
SYNTHER = {"synther_real_ratio": 0.5}
ARMS = {"dql": {}, "dql_synther": SYNTHER}
SYNTHER_KEYS = (
    "synther_pool_rows",
    "synther_retrain_env_step",
    "synther_generator_loss",
    "synther_seconds",
)


def run_arm(arm: str, seed: int, checkpoint: str, out: Path, retrain_every: int) -> None:
    """``finetune --algo dql`` of ``arm`` into ``out/<arm>_seed<seed>``; writes
    ``bench.json`` there (wall seconds, load averages)."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    knobs = DQL_KNOBS | ARMS[arm]
    if ARMS[arm]:
        knobs["synther_retrain_every"] = retrain_every
    run_dir = out / f"{arm}_seed{seed}"
    load_start, started = os.getloadavg(), time.perf_counter()
    settings = FinetuneSettings.of(
        algo="dql", checkpoint=checkpoint, out_dir=str(run_dir), seed=seed, **RUN, **knobs
    )
    summary = finetune(settings)
    bench = {
        "wall_seconds": time.perf_counter() - started,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "knobs": knobs,
        "run": RUN,
        "train_seconds": summary.get("train_seconds"),
    }
    (run_dir / "bench.json").write_text(json.dumps(bench, indent=1))


def summarize(out: Path, name: str) -> Path:
    """``benchmarks/results/<name>.json`` from every finished run in ``out``."""
    figures, series = {}, {}
    for run_dir in sorted(p for p in out.iterdir() if (p / "bench.json").is_file()):
        bench = json.loads((run_dir / "bench.json").read_text())
        result = json.loads((run_dir / "result.json").read_text())
        lines = [json.loads(x) for x in (run_dir / "progress.jsonl").read_text().splitlines()]
        figures[run_dir.name] = {
            "start_return": result["start_evaluation"]["episode_return_mean"],
            "final_return": result["final_evaluation"]["episode_return_mean"],
            "final_return_std": result["final_evaluation"].get("episode_return_std"),
            "env_steps": lines[-1]["env_steps"],
            **bench,
        }
        series[run_dir.name] = [
            {k: line.get(k) for k in ("iteration", "env_steps", "seconds", *SYNTHER_KEYS)}
            for line in lines[1:]
        ]
    return write_result(name, figures, series)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", choices=sorted(ARMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="runs/main_job/checkpoint")
    p.add_argument("--out", default="runs/synther_online_smoke")
    p.add_argument("--retrain-every", type=int, default=3000)
    p.add_argument("--name", default="synther_online_dql_hopper_smoke")
    p.add_argument("--summarize", action="store_true")
    a = p.parse_args()
    if a.summarize:
        print(summarize(Path(a.out), a.name))
    elif a.arm:
        run_arm(a.arm, a.seed, a.checkpoint, Path(a.out), a.retrain_every)
    else:
        p.error("give --arm or --summarize")


if __name__ == "__main__":
    main()
