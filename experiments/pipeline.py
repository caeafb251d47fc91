"""Main job: dataset -> diffusion BC pretraining (RLlib offline) -> DPPO fine-tuning
(RLlib EnvRunners + LearnerGroup) -> evaluation, printing the return before and after.

Default: the Hopper-v5 "medium" dataset shipped in ``data/`` (200 episodes recorded with
``rllib-diffusion collect`` from a PPO behaviour policy). Works unchanged as
``ray job submit --working-dir . -- python experiments/pipeline.py``: inside a job it
joins the cluster it was submitted to. Writes ``<out>/summary.json``.
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
    from rllib_diffusion.cli import OneLineParser, add_pretrain_args

    p = OneLineParser(
        prog="experiments/pipeline.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pretrain_args(p)
    # Defaults of the main job: sized to finish in minutes on a 2-core CPU machine.
    p.set_defaults(
        dataset=str(DEFAULT_DATASET),
        out_dir="runs/main_job",
        gradient_steps=12_000,
        steps_per_iteration=1_000,
        eval_episodes=10,
    )
    for action in p._actions:
        if action.dest == "dataset":
            action.required = False
    p.add_argument(
        "--finetune-env-steps", type=int, default=150_000, help="DPPO budget (0: skip DPPO)"
    )
    p.add_argument("--num-envs-per-env-runner", type=int, default=10)
    p.add_argument("--num-env-runners", type=int, default=1)
    return p.parse_args(argv)


#: The main job's own flags (read here for the DPPO stage, not by pretraining).
DPPO_FLAGS = ("finetune_env_steps", "num_envs_per_env_runner", "num_env_runners")


def main(argv=None) -> int:
    from rllib_diffusion.algorithms.bc.pretrain import pretrain
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune
    from rllib_diffusion.cli import DEBUG_FLAG, pretrain_settings_from_args, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv  # as every rllib-diffusion command: show the traceback
    args = parse_args([a for a in argv if a != DEBUG_FLAG])
    t0 = time.perf_counter()
    out = Path(args.out_dir)
    results: dict = {}

    def job(a: argparse.Namespace) -> None:
        steps = 2 if a.finetune_env_steps else 1
        print(f"[main] 1/{steps} pretraining a diffusion policy on {a.dataset}", flush=True)
        bc = pretrain(pretrain_settings_from_args(a, consumed=DPPO_FLAGS))
        ev = bc["evaluation"]
        results.update(
            dataset=a.dataset,
            dataset_return_mean=bc["dataset_return_mean"],
            pretrained_return_mean=ev["episode_return_mean"],
            pretrained_return_std=ev["episode_return_std"],
            pretrained_checkpoint=bc["checkpoint"],
            pretrain_gradient_steps=bc["gradient_steps"],
            pretrain_minutes=(time.perf_counter() - t0) / 60,
            eval_episodes=ev["num_episodes"],
        )
        if a.finetune_env_steps:
            print(
                f"[main] 2/2 fine-tuning it with DPPO for {a.finetune_env_steps} env steps",
                flush=True,
            )
            ft = finetune(
                FinetuneSettings.of(
                    checkpoint=bc["checkpoint"],
                    out_dir=str(out / "dppo"),
                    env_steps=a.finetune_env_steps,
                    num_env_runners=a.num_env_runners,
                    num_envs_per_env_runner=a.num_envs_per_env_runner,
                    eval_interval=0,
                    checkpoint_interval=0,
                    eval_episodes=a.eval_episodes,
                    seed=a.seed,
                    overwrite=a.overwrite,  # the job's --overwrite replaces both stages
                )
            )
            fe = ft["final_evaluation"]
            results.update(
                finetuned_return_mean=fe["episode_return_mean"],
                finetuned_return_std=fe["episode_return_std"],
                finetuned_normalized_score=fe.get("normalized_score"),
                finetune_env_steps=ft["env_steps"],
                finetuned_checkpoint=ft["checkpoint"],
            )
        results["minutes"] = (time.perf_counter() - t0) / 60
        line = (
            f"[main] dataset mean return {results['dataset_return_mean']:.1f}; pretrained "
            f"diffusion policy {results['pretrained_return_mean']:.1f} ± "
            f"{results['pretrained_return_std']:.1f}"
        )
        if "finetuned_return_mean" in results:
            line += (
                f"; after DPPO ({results['finetune_env_steps']} env steps) "
                f"{results['finetuned_return_mean']:.1f} ± {results['finetuned_return_std']:.1f}"
            )
        print(
            f"{line} (mean ± std over {results['eval_episodes']} episodes); "
            f"{results['minutes']:.1f} min",
            flush=True,
        )
        final = results.get("finetuned_checkpoint", results["pretrained_checkpoint"])
        print(f"[main] evaluate again: rllib-diffusion evaluate --checkpoint {final}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, out / "summary.json")

    return run_command(job, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
