"""Main job: dataset -> diffusion BC pretraining on RLlib -> evaluation in the env.

Default: the Hopper-v5 "medium" dataset shipped in ``data/`` (200 episodes recorded
with ``rllib-diffusion collect`` from a PPO behaviour policy). Works unchanged as
``ray job submit --working-dir . -- python experiments/pipeline.py``: inside a job it
joins the cluster it was submitted to.

Prints the dataset's mean return and the pretrained policy's return, and writes
``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT / "data" / "hopper-medium-v5-small.npz"


def parse_args(argv=None) -> argparse.Namespace:
    from rllib_diffusion.cli import add_pretrain_args

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_pretrain_args(p)
    # Defaults of the main job: sized to finish in minutes on a 2-core CPU machine.
    p.set_defaults(
        dataset=str(DEFAULT_DATASET),
        out="runs/main_job",
        gradient_steps=12_000,
        steps_per_iteration=1_000,
        eval_episodes=10,
    )
    for action in p._actions:
        if action.dest == "dataset":
            action.required = False
    return p.parse_args(argv)


def main(argv=None) -> int:
    from rllib_diffusion.algorithms.bc.pretrain import pretrain
    from rllib_diffusion.cli import pretrain_settings_from_args, run_command

    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    results: dict = {}

    def job(a: argparse.Namespace) -> None:
        print(f"[main] 1/2 pretraining a diffusion policy on {a.dataset}", flush=True)
        summary = pretrain(pretrain_settings_from_args(a))
        ev = summary["evaluation"]
        results.update(
            dataset=a.dataset,
            dataset_return_mean=summary["dataset_return_mean"],
            pretrained_return_mean=ev["episode_return_mean"],
            pretrained_return_std=ev["episode_return_std"],
            pretrained_normalized_score=ev.get("normalized_score"),
            eval_episodes=ev["num_episodes"],
            checkpoint=summary["checkpoint"],
            gradient_steps=summary["gradient_steps"],
            seconds=time.perf_counter() - t0,
        )
        print("[main] 2/2 summary", flush=True)
        print(
            f"[main] dataset mean return {results['dataset_return_mean']:.1f}; pretrained "
            f"diffusion policy {results['pretrained_return_mean']:.1f} ± "
            f"{results['pretrained_return_std']:.1f} over {results['eval_episodes']} episodes "
            f"(normalised score {results['pretrained_normalized_score']:.1f}); "
            f"{results['seconds'] / 60:.1f} min",
            flush=True,
        )
        print(
            f"[main] evaluate again: rllib-diffusion evaluate --checkpoint {results['checkpoint']}",
            flush=True,
        )
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, out / "summary.json")

    return run_command(job, args)


if __name__ == "__main__":
    sys.exit(main())
