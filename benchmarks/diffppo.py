"""Benchmark (c) of the synthetic-experience issue: PPO and DPPO with vs without synthetic
segments at a matched env-step budget, from the same BC checkpoint, several seeds.

Gaussian arms (``ppo``, ``diffppo``, ...) are ``finetune_gaussian_ppo`` runs (RLlib PPO;
DiffPPO = the same run with DiffPPO knobs) from a Gaussian BC checkpoint; DPPO arms
(``dppo``, ``dppo_policy``, ...) are ``rllib-diffusion finetune --algo dppo`` runs (the
others with ``--synthetic-ratio 1``; ``dppo_generated`` also with ``--synthetic-actions
generated``) from a DiffusionBC checkpoint. Each run goes into
``<out>/<arm>_seed<seed>``. Run the arms one at a time (``--arm ppo --seed 0`` ...);
``--summarize`` then writes ``benchmarks/results/<name>.json`` from every finished (or
partial) run in ``<out>``: per arm the final evaluation (mean over seeds) and the curves
of evaluation return vs env steps, plus the synthetic steps per iteration.

Example::

    nice -n 5 python benchmarks/diffppo.py --arm ppo --seed 0
    nice -n 5 python benchmarks/diffppo.py --arm diffppo --seed 0
    python benchmarks/diffppo.py --summarize
    # DPPO (defaults: runs/beyond/bc_ddpm/checkpoint, runs/diffppo_dppo_bench,
    # result diffppo_dppo_hopper_medium_small)
    nice -n 5 python benchmarks/diffppo.py --arm dppo --seed 0
    nice -n 5 python benchmarks/diffppo.py --arm dppo_policy --seed 0
    python benchmarks/diffppo.py --family dppo --summarize
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402

#: Arms: name -> DiffPPO knobs (empty: plain PPO).
ARMS: dict[str, dict] = {
    "ppo": {},
    "diffppo": {"synthetic_ratio": 1.0},
    "diffppo_policy": {"synthetic_ratio": 1.0, "synthetic_actions": "policy"},
    "ppo_10_epochs": {},
}
#: DPPO arms: name -> DPPO knobs (empty: plain DPPO).
DPPO_ARMS: dict[str, dict] = {
    "dppo": {},
    "dppo_policy": {"synthetic_ratio": 1.0},
    # The same, with as many minibatch steps per update as the real rows alone make
    # (``--synthetic-matched-updates``): the update-count control of the DPPO family.
    "dppo_policy_matched": {"synthetic_ratio": 1.0, "synthetic_matched_updates": True},
    # Generated segments, actions included; each chunk's chain drawn from the forward
    # posterior and scored by the pre-update policy (``--synthetic-actions generated``).
    "dppo_generated": {"synthetic_ratio": 1.0, "synthetic_actions": "generated"},
}
#: DPPO run settings of every DPPO arm (those of runs/beyond's DPPO runs).
DPPO_SETTINGS = dict(num_env_runners=1, num_envs_per_env_runner=10, decisions_per_iteration=2000)
#: Defaults per family: checkpoint, out folder, result name.
FAMILY_DEFAULTS = {
    "gaussian": (
        "runs/bench_gauss_hopper_small/bc/checkpoint",
        "runs/diffppo_bench",
        "diffppo_hopper_medium_small",
    ),
    "dppo": (
        "runs/beyond/bc_ddpm/checkpoint",
        "runs/diffppo_dppo_bench",
        "diffppo_dppo_hopper_medium_small",
    ),
}
#: Arms' settings that differ from the others' (PPO with as many minibatch updates per
#: iteration as the augmented arms make: a control for the update count).
ARM_SETTINGS: dict[str, dict] = {"ppo_10_epochs": {"num_epochs": 10}}


def run_arm(args: argparse.Namespace) -> None:
    if args.arm in DPPO_ARMS:
        return run_dppo_arm(args)
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
        GaussianPPOSettings,
        finetune_gaussian_ppo,
    )

    settings = GaussianPPOSettings(
        checkpoint=args.checkpoint,
        out_dir=str(Path(args.out) / f"{args.arm}_seed{args.seed}"),
        env_steps=args.env_steps,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        resume=args.resume,
        knobs=dict(ARMS[args.arm]),
        **ARM_SETTINGS.get(args.arm, {}),
    )
    finetune_gaussian_ppo(settings)


def run_dppo_arm(args: argparse.Namespace) -> None:
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    settings = FinetuneSettings(
        checkpoint=args.checkpoint,
        algo="dppo",
        out_dir=str(Path(args.out) / f"{args.arm}_seed{args.seed}"),
        env_steps=args.env_steps,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        checkpoint_interval=1,
        seed=args.seed,
        resume=args.resume,
        knobs=dict(DPPO_ARMS[args.arm]),
        **DPPO_SETTINGS,
    )
    finetune(settings)


def arm_summary(run: Path) -> dict:
    """Figures and curves of one run directory (partial runs: progress only)."""
    lines = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_return_mean" in x]
    result = run / "result.json"
    final = json.loads(result.read_text()) if result.exists() else None
    if final and "final_evaluation" in final:  # a DPPO run's result
        final["evaluation"] = final["final_evaluation"]
    out = {
        "complete": bool(final and final.get("evaluation")),
        "env_steps": lines[-1]["env_steps"],
        "eval_env_steps": [x["env_steps"] for x in evals],
        "eval_return_mean": [x["eval_return_mean"] for x in evals],
        "train_env_steps": [x["env_steps"] for x in lines if x["iteration"] > 0],
        "train_return_mean": [x.get("train_return_mean") for x in lines if x["iteration"] > 0],
        "seconds": lines[-1].get("seconds"),
    }
    finite = [x for x in out["train_return_mean"] if x is not None and np.isfinite(x)]
    # Mean return of the stochastic policy's training episodes, last three iterations.
    out["train_return_last3"] = float(np.mean(finite[-3:])) if finite else None
    kept = [
        x["diffppo_synthetic_kept_fraction"]
        for x in lines
        if "diffppo_synthetic_kept_fraction" in x
    ]
    synth = [x["diffppo_synthetic_steps"] for x in lines if "diffppo_synthetic_steps" in x]
    if synth:
        out["synthetic_steps"] = synth
        out["synthetic_kept_fraction"] = kept
        out["generator_seconds"] = [
            x["diffppo_generator_seconds"] for x in lines if "diffppo_generator_seconds" in x
        ]
    if out["complete"]:
        ev = final["evaluation"]
        out.update(
            final_return_mean=ev["episode_return_mean"],
            final_return_std=ev["episode_return_std"],
            final_eval_episodes=ev["num_episodes"],
            settings=final.get("settings"),
        )
    return out


def summarize(args: argparse.Namespace) -> None:
    arms: dict[str, dict] = {}
    for arm in DPPO_ARMS if args.family == "dppo" else ARMS:
        runs = sorted(Path(args.out).glob(f"{arm}_seed*"))
        per_seed = {
            r.name.split("_seed")[-1]: arm_summary(r)
            for r in runs
            if (r / "progress.jsonl").exists()
        }
        if per_seed:
            arms[arm] = per_seed
    figures = {}
    for arm, seeds in arms.items():
        finals = [s["final_return_mean"] for s in seeds.values() if s["complete"]]
        figures[f"{arm}_seeds_complete"] = len(finals)
        if finals:
            figures[f"{arm}_final_return_mean"] = float(np.mean(finals))
            figures[f"{arm}_final_return_std_over_seeds"] = float(np.std(finals))
        last3 = [s["train_return_last3"] for s in seeds.values() if s.get("train_return_last3")]
        if last3:
            figures[f"{arm}_train_return_last3_mean"] = float(np.mean(last3))
        synth = [
            np.mean(s["synthetic_kept_fraction"])
            for s in seeds.values()
            if s.get("synthetic_kept_fraction")
        ]
        if synth:
            figures[f"{arm}_synthetic_kept_fraction_mean"] = float(np.mean(synth))
            steps = [
                np.mean(s["synthetic_steps"]) for s in seeds.values() if s.get("synthetic_steps")
            ]
            figures[f"{arm}_synthetic_steps_per_iteration_mean"] = float(np.mean(steps))
    figures["env_steps_budget"] = args.env_steps
    path = write_result(
        args.name,
        figures,
        {"arms": arms},
        arms_knobs=DPPO_ARMS if args.family == "dppo" else ARMS,
        arms_settings={a: DPPO_SETTINGS for a in DPPO_ARMS}
        if args.family == "dppo"
        else ARM_SETTINGS,
        checkpoint=args.checkpoint,
    )
    plot(args.name, arms)
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


def plot(name: str, arms: dict[str, dict]) -> None:
    """``<name>.png``: deterministic evaluation return vs env steps, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (arm, seeds) in enumerate(arms.items()):
        for j, run in enumerate(seeds[k] for k in sorted(seeds)):
            x, y = run["eval_env_steps"], run["eval_return_mean"]
            if run.get("complete"):
                x, y = x + [run["env_steps"]], y + [run["final_return_mean"]]
            ax.plot(x, y, "o-", color=f"C{i}", alpha=0.8, label=arm if j == 0 else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("deterministic eval return (10 episodes)")
    ax.legend()
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--family", choices=sorted(FAMILY_DEFAULTS), help="(default: the arm's)")
    p.add_argument("--checkpoint", help="BC checkpoint (default: the family's)")
    p.add_argument("--out", help="runs folder (default: the family's)")
    p.add_argument("--name", help="result name (default: the family's)")
    p.add_argument("--arm", choices=sorted(ARMS) + sorted(DPPO_ARMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-steps", type=int, default=65_536)
    p.add_argument("--eval-interval", type=int, default=2)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--summarize", action="store_true", help="write the result from --out")
    args = p.parse_args()
    args.family = args.family or ("dppo" if args.arm in DPPO_ARMS else "gaussian")
    if args.arm and (args.arm in DPPO_ARMS) != (args.family == "dppo"):
        p.error(f"--arm {args.arm} is not an arm of --family {args.family}")
    defaults = FAMILY_DEFAULTS[args.family]
    args.checkpoint = args.checkpoint or defaults[0]
    args.out = args.out or defaults[1]
    args.name = args.name or defaults[2]
    if args.summarize:
        summarize(args)
    elif args.arm:
        run_arm(args)
    else:
        p.error("give --arm (run one) or --summarize")


if __name__ == "__main__":
    main()
