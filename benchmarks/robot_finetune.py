"""Benchmark (issue #14): DPPO fine-tuning from a deliberately weak diffusion BC policy on
a robomimic task (Lift, Can, Square), success rate before and after.

Three stages, each skipped when its output exists, so the same command continues a run
cut short (a killed fine-tuning run resumes from its checkpoint):

1. scripted demonstrations: ``python -m rllib_diffusion.collect.robot_demos --task T
   --episodes N --out runs/robot/<task>_scripted_<N>.hdf5``;
2. weak BC: ``rllib-diffusion pretrain`` on them for only ``--bc-gradient-steps``
   (Ta = 4, horizon 4, DPPO's robomimic chunk), into ``runs/robot/bc_<task><N>_<steps>``;
3. DPPO: ``rllib-diffusion finetune --algo dppo`` with DPPO's robomimic settings scaled
   to a 2-core machine (``rllib_diffusion.algorithms.dppo.robomimic``) into ``--out``.

Then ``benchmarks/results/<name>.json`` (+ ``.png``): the pretrained policy's success rate
(the fine-tuning run's start evaluation) and the fine-tuned one's, both over
``--eval-episodes`` deterministic episodes, the training episodes' success rate per
iteration, env steps and wall time. Evaluations run the task's default env, which ends an
episode at its first success (reward 1 there, else 0): their return is a success rate.
Training envs get DPPO's robomimic reward (``--train-reward dppo``, the default: 1 per
solved env step, no early end, ``ROBOMIMIC_ENV_KWARGS``), so the training series is the
solved env steps per episode; ``--train-reward success`` trains on the evaluation env's
reward instead (the first Lift run, ``dppo_robot_lift``), whose training return is a
success rate.

Example (Lift, 5 demos, 100 BC gradient steps, 250k env steps)::

    python benchmarks/robot_finetune.py --task lift --demos 5 --bc-gradient-steps 100 \\
        --env-steps 250000 --name dppo_robot_lift

Franka Kitchen (``--task kitchen_microwave``, ``kitchen_all3`` or ``kitchen_all4``, :data:`KITCHEN_TASKS`):
stage 1 is ``python -m rllib_diffusion.collect.kitchen_demos`` into the Minari id
``local/kitchen/<task>-scripted<N>-v0`` (under ``$MINARI_DATASETS_PATH``), whose tasks
reach the BC and DPPO envs through the checkpoint; the training envs keep the kitchen's
own reward (tasks completed, the episode ends when all are done): ``--train-reward
success``, the only one a kitchen run takes. Example::

    MINARI_DATASETS_PATH=runs/kitchen/minari python benchmarks/robot_finetune.py \\
        --task kitchen_microwave --demos 50 --bc-gradient-steps 500 --env-steps 120000 \\
        --name dppo_kitchen_microwave
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402
from dppo_finetune import flat_settings  # noqa: E402

from rllib_diffusion.algorithms.dppo.robomimic import (  # noqa: E402
    ROBOMIMIC_ENV_KWARGS,
    ROBOMIMIC_KNOBS,
    ROBOMIMIC_RUN,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="lift", choices=["lift", "can", "square", *KITCHEN_TASKS])
    p.add_argument("--demos", type=int, default=5, help="scripted demonstrations for BC")
    p.add_argument("--bc-gradient-steps", type=int, default=100, help="weak BC: few steps")
    p.add_argument("--bc-eval-episodes", type=int, default=20, help="pretrain's own check")
    p.add_argument(
        "--clamp-obs",
        action="store_true",
        help="weak BC pretrained with --clamp-obs (normalised observations clipped to [-1, 1] "
        "in every env; BC dir gets a _clamp suffix): the kitchen's untouched objects have "
        "data ranges of 1e-5..1e-2, so a nudged kettle reaches 1e4 unclipped",
    )
    p.add_argument("--out", default=None, help="fine-tuning run (default runs/robot/dppo_<task>)")
    p.add_argument("--env-steps", type=int, default=250_000, help="DPPO budget")
    for name, value in ROBOMIMIC_RUN.items():  # rllib_diffusion.algorithms.dppo.robomimic
        p.add_argument("--" + name.replace("_", "-"), type=int, default=value)
    p.add_argument(
        "--train-reward",
        choices=["dppo", "success"],
        default=None,
        help="training envs: DPPO's robomimic reward (1 per solved step, no early end; the "
        "robomimic default) or the evaluation env's (1 at the first success, which ends the "
        "episode; kitchen: 1 per completed task, the only choice there)",
    )
    p.add_argument("--eval-interval", type=int, default=25, help="iterations between evals")
    p.add_argument("--eval-episodes", type=int, default=50, help="start, final, periodic")
    p.add_argument("--checkpoint-interval", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="override a DPPO knob of ROBOMIMIC_KNOBS or set another (JSON value)",
    )
    p.add_argument("--name", default=None, help="result name (default dppo_robot_<task>)")
    p.add_argument("--summarize-only", action="store_true", help="rebuild the result only")
    args = p.parse_args(argv)
    args.train_reward = train_reward(args.task, args.train_reward)
    args.out = args.out or f"runs/robot/dppo_{args.task}"
    args.name = args.name or f"dppo_robot_{args.task}"
    return args


#: Kitchen tasks of ``--task``: the subtasks of ``rllib_diffusion.collect.kitchen_demos``.
KITCHEN_TASKS: dict[str, tuple[str, ...]] = {
    "kitchen_microwave": ("microwave",),
    "kitchen_all3": ("microwave", "light_switch", "slide_cabinet"),
    # D4RL's four (kitchen-complete's order); the demos get 400 steps (kitchen_demos).
    "kitchen_all4": ("microwave", "kettle", "light_switch", "slide_cabinet"),
}


def is_kitchen_task(task: str) -> bool:
    return task in KITCHEN_TASKS


def train_reward(task: str, asked: str | None) -> str:
    """The training reward: DPPO's for robomimic unless asked, the env's for the kitchen."""
    if not is_kitchen_task(task):
        return asked or "dppo"
    if asked == "dppo":
        raise SystemExit(f"--train-reward dppo is robomimic's; {task} trains on its own reward.")
    return "success"


#: Name of the training-episode series per ``--train-reward`` (its return's meaning).
TRAIN_SERIES = {"success": "train_success_rate", "dppo": "train_solved_steps_per_episode"}
#: The series of a kitchen run of several subtasks, whose return counts completed ones.
KITCHEN_TASKS_SERIES = "train_tasks_completed_per_episode"


def train_series(args: argparse.Namespace) -> str:
    """The training-episode series' name: what a training episode's return means."""
    if len(KITCHEN_TASKS.get(args.task, ())) > 1:
        return KITCHEN_TASKS_SERIES
    return TRAIN_SERIES[args.train_reward]


def demos_path(args: argparse.Namespace) -> Path:
    return Path(f"runs/robot/{args.task}_scripted_{args.demos}.hdf5")


def kitchen_dataset_id(args: argparse.Namespace) -> str:
    """The Minari id of a kitchen task's scripted demonstrations."""
    name = args.task.removeprefix("kitchen_")
    return f"local/kitchen/{name}-scripted{args.demos}-v0"


def bc_dataset(args: argparse.Namespace) -> str:
    """Stage 1: the demonstrations (collected unless present); what ``pretrain`` reads."""
    if is_kitchen_task(args.task):
        from rllib_diffusion.data.minari_io import minari_root

        dataset_id = kitchen_dataset_id(args)
        if not (minari_root() / dataset_id).exists():
            run_stage(
                [sys.executable, "-m", "rllib_diffusion.collect.kitchen_demos", "--tasks"]
                + list(KITCHEN_TASKS[args.task])
                + ["--episodes", str(args.demos), "--dataset-id", dataset_id]
            )
        return dataset_id
    demos = demos_path(args)
    if not demos.exists():
        run_stage(
            [sys.executable, "-m", "rllib_diffusion.collect.robot_demos", "--task", args.task]
            + ["--episodes", str(args.demos), "--out", str(demos)]
        )
    return str(demos)


def bc_dir(args: argparse.Namespace) -> Path:
    clamp = "_clamp" if getattr(args, "clamp_obs", False) else ""
    return Path(f"runs/robot/bc_{args.task}{args.demos}_{args.bc_gradient_steps}{clamp}")


def run_stage(cmd: list[str]) -> None:
    print("[robot_finetune] $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def make_weak_bc(args: argparse.Namespace) -> Path:
    """Stages 1 and 2: the demonstrations and the weak BC checkpoint (kept if present)."""
    bc = bc_dir(args)
    if not (bc / "checkpoint").exists():
        demos = bc_dataset(args)
        steps = str(args.bc_gradient_steps)
        run_stage(
            [sys.executable, "-m", "rllib_diffusion.cli", "pretrain", "--dataset", str(demos)]
            + ["--out", str(bc), "--horizon", "4", "--act-steps", "4"]
            + ["--gradient-steps", steps, "--steps-per-iteration", steps]
            + ["--eval-episodes", str(args.bc_eval_episodes), "--seed", str(args.seed)]
            + (["--clamp-obs"] if getattr(args, "clamp_obs", False) else [])
        )
    return bc / "checkpoint"


def finetune_settings(args: argparse.Namespace, checkpoint: Path) -> Any:
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings

    knobs = dict(ROBOMIMIC_KNOBS)
    for item in args.set:
        key, found, value = item.partition("=")
        if not found:
            raise SystemExit(f"--set expects KNOB=VALUE, got {item!r}")
        knobs[key] = json.loads(value)
    out = Path(args.out)
    return FinetuneSettings.of(
        checkpoint=str(checkpoint),
        algo="dppo",
        out_dir=str(out),
        env_steps=args.env_steps,
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner,
        decisions_per_iteration=args.decisions_per_iteration,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        checkpoint_interval=args.checkpoint_interval,
        resume=(out / "checkpoint").exists(),
        seed=args.seed,
        env_kwargs=dict(ROBOMIMIC_ENV_KWARGS) if args.train_reward == "dppo" else None,
        **knobs,
    )


def finished(out: Path) -> dict[str, Any] | None:
    """The run's ``result.json`` when it ran to its final evaluation, else None."""
    path = out / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    if result.get("interrupted") or not result.get("final_evaluation"):
        return None
    return result


def check_same_run(out: Path, settings: Any) -> None:
    """Refuse to summarise or continue a run in ``out`` made with other settings."""
    from dataclasses import MISSING, asdict, fields

    from rllib_diffusion.checkpoints import read_checkpoint_meta

    if not (out / "checkpoint").exists():
        return
    saved = read_checkpoint_meta(out / "checkpoint").settings or {}
    # A field an older run did not record had its default then (env_kwargs: None).
    theirs = {f.name: f.default for f in fields(settings) if f.default is not MISSING} | saved
    ours = asdict(settings)
    ignore = {"resume", "overwrite", "env_steps"}
    diffs = [
        f"{k}: run {theirs.get(k)!r} vs now {v!r}"
        for k, v in ours.items()
        if k not in ignore and k in theirs and theirs[k] != v
    ]
    if diffs:
        raise SystemExit(f"{out} was run with other settings ({'; '.join(diffs)}): use --out.")


def summarize(args: argparse.Namespace, settings: Any) -> None:
    out = Path(args.out)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines() if x]
    iters = [x for x in lines if x["iteration"] > 0]
    evals = [x for x in lines if "eval_return_mean" in x]
    if args.train_reward == "dppo":  # periodic evaluations run the training env: not rates
        evals = [x for x in evals if x["iteration"] == 0]
    final = finished(out)
    train_key = train_series(args)
    figures: dict[str, Any] = {
        "task": args.task,
        **kitchen_figures(args),
        "demos": args.demos,
        "bc_gradient_steps": args.bc_gradient_steps,
        "env_steps": lines[-1]["env_steps"] if lines else 0,
        "iterations": len(iters),
        "complete": final is not None,
    }
    if evals and evals[0]["iteration"] == 0:  # the pretrained policy, before any update
        figures["start_success_rate"] = evals[0]["eval_return_mean"]
    recent = [x["train_return_mean"] for x in iters[-5:] if x.get("train_return_mean") is not None]
    if recent:
        figures[f"{train_key}_last5_iterations"] = sum(recent) / len(recent)
    if final is not None:
        start, end = final["start_evaluation"], final["final_evaluation"]
        figures.update(
            start_success_rate=start.get("success_rate"),
            start_eval_episodes=start["num_episodes"],
            final_success_rate=end.get("success_rate"),
            final_eval_episodes=end["num_episodes"],
            final_mean_episode_length=sum(end["episode_lengths"]) / end["num_episodes"],
            start_mean_episode_length=sum(start["episode_lengths"]) / start["num_episodes"],
            train_minutes=final["train_seconds"] / 60,
        )
    series = {
        "train_env_steps": [x["env_steps"] for x in iters],
        train_key: [x.get("train_return_mean") for x in iters],
        "eval_env_steps": [x["env_steps"] for x in evals],
        "eval_success_rate": [x["eval_return_mean"] for x in evals],
        "minutes": [x.get("seconds", 0.0) / 60 for x in iters],
    }
    if final is not None and args.train_reward == "dppo":
        series["eval_env_steps"].append(figures["env_steps"])
        series["eval_success_rate"].append(figures["final_success_rate"])
    path = write_result(args.name, figures, series, settings=flat_settings(settings))
    plot(args.name, series, train_key)
    print(json.dumps(figures, indent=1), f"\nwrote {path}", flush=True)


def kitchen_figures(args: argparse.Namespace) -> dict[str, Any]:
    """A kitchen run's subtasks and dataset (nothing for robomimic)."""
    if not is_kitchen_task(args.task):
        return {}
    return {"kitchen_tasks": list(KITCHEN_TASKS[args.task]), "dataset": kitchen_dataset_id(args)}


#: The right-hand axis of a training series that is not a success rate.
TRAIN_AXIS_LABELS = {
    TRAIN_SERIES["dppo"]: "train episodes: solved env steps",
    KITCHEN_TASKS_SERIES: "train episodes: tasks completed",
}


def plot(name: str, series: dict[str, list], train_key: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(series["eval_env_steps"], series["eval_success_rate"], "o-", label="deterministic eval")
    train_ax = ax if train_key == "train_success_rate" else ax.twinx()
    train_ax.plot(
        series["train_env_steps"], series[train_key], "C1", alpha=0.6, label="train episodes"
    )
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    if train_ax is not ax:
        train_ax.set_ylabel(TRAIN_AXIS_LABELS[train_key])
    fig.legend(loc="lower right")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    from rllib_diffusion.algorithms.finetune_run import finetune

    args = parse_args(argv)
    checkpoint = bc_dir(args) / "checkpoint" if args.summarize_only else make_weak_bc(args)
    settings = finetune_settings(args, checkpoint)
    check_same_run(Path(args.out), settings)
    done = finished(Path(args.out))
    if not args.summarize_only and (done is None or done["env_steps"] < args.env_steps):
        finetune(settings)
    summarize(args, settings)


if __name__ == "__main__":
    main()
