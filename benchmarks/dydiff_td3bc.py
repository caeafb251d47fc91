"""Benchmark (issue #16, b): TD3+BC with vs without DyDiff rollouts on the Hopper data.

One round of DyDiff's loop, with every step a project command (each skipped when its
output exists, so the same command resumes; the result file is rewritten after each):

1. ``rollouts``: ``rllib-diffusion dydiff --model M --policy P`` rolls the policy ``P``
   (a TD3+BC checkpoint trained on the real data) through the DyDiff model ``M`` with
   iterated action injection, filters them and writes the kept transitions as the Minari
   id ``--rollouts-id``.
2. Per seed, two TD3+BC arms with the same batch and gradient budget: ``real`` (the
   dataset alone) and ``dydiff`` (every batch ``--real-ratio`` real rows, the rest
   rollouts; DyDiff's ratio 0.6 needs a batch of a multiple of 5, hence 320).

The ``dydiff`` arm is not DyDiff's full loop: its rollouts come once from a separately
trained policy. The ``regen`` arm is: ``offline --dydiff-model M`` regenerates
``--num-rollouts-per-regeneration`` rollouts (DyDiff: 2,048) with the learning policy
itself every ``--regenerate-every`` gradient steps (DyDiff: 500) and mixes them at
``--real-ratio``; it needs no ``--policy``.

Examples (the runs in docs/synthetic.md)::

    python benchmarks/dydiff_td3bc.py --model runs/dydiff_bench10k/model/checkpoint \
        --policy runs/bench_offline/td3bc/checkpoint --seeds 0 1
    python benchmarks/dydiff_td3bc.py --model runs/dydiff_bench10k/model/checkpoint \
        --arms real regen --steps-per-iteration 500 --out runs/dydiff_regen \
        --name dydiff_regen_td3bc_hopper_medium_small_synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

CLI = str(Path(sys.executable).with_name("rllib-diffusion"))
ARMS = ("real", "dydiff", "regen")


def run(cmd: list[str], log: Path) -> None:
    """Run a project command, its output in ``log``; a failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode:
            raise SystemExit(f"failed: {' '.join(cmd)} (see {log})")


def rollouts(a: argparse.Namespace) -> dict[str, Any]:
    out = a.out / "rollouts"
    if not (out / "dydiff.json").exists():
        run(
            [CLI, "dydiff", "--dataset", a.dataset, "--model", a.model, "--policy", a.policy,
             "--dataset-id", a.rollouts_id, "--num-rollouts", str(a.num_rollouts),
             "--out", str(out)],
            a.out / "rollouts.log",
        )  # fmt: skip
    prov = json.loads((out / "dydiff.json").read_text())["provenance"]
    keys = ("num_rollouts", "num_rollouts_kept", "num_transitions", "injection_rounds",
            "filter", "terminal_rate", "generator_checkpoint", "policy_checkpoint")  # fmt: skip
    return {k: prov[k] for k in keys}


def arm_flags(a: argparse.Namespace, name: str) -> list[str]:
    """The flags that make arm ``name`` (none for ``real``)."""
    ratio = ["--real-ratio", str(a.real_ratio)]
    if name == "dydiff":
        return ["--synthetic-dataset", a.rollouts_id, *ratio]
    if name == "regen":
        return ["--dydiff-model", a.model, "--dydiff-regenerate-every", str(a.regenerate_every),
                "--dydiff-num-rollouts", str(a.num_rollouts_per_regeneration), *ratio]  # fmt: skip
    return []


def arm(a: argparse.Namespace, name: str, seed: int) -> dict[str, Any]:
    out = a.out / f"td3bc_{name}_s{seed}"
    if not (out / "result.json").exists():
        load = {"load_average_start": os.getloadavg()}
        run(
            [CLI, "offline", "--algo", "td3bc", "--dataset", a.dataset, "--batch-size",
             str(a.batch_size), "--gradient-steps", str(a.gradient_steps), "--seed", str(seed),
             "--steps-per-iteration", str(a.steps_per_iteration), "--out", str(out),
             *arm_flags(a, name)],
            a.out / f"td3bc_{name}_s{seed}.log",
        )  # fmt: skip
        load["load_average_end"] = os.getloadavg()
        (out / "load.json").write_text(json.dumps(load))
    result = json.loads((out / "result.json").read_text())
    ev = result["evaluation"]
    figures = {"return_mean": ev["episode_return_mean"], "return_std": ev["episode_return_std"],
               "normalized_score": ev.get("normalized_score"), "episodes": ev["num_episodes"],
               "train_seconds": result["train_seconds"]}  # fmt: skip
    if (out / "load.json").exists():
        figures.update(json.loads((out / "load.json").read_text()))
    if name == "regen":
        figures["regenerations"] = regeneration_figures(result["progress"])
    return figures


def regeneration_figures(progress: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-regeneration figures from the run's progress lines (mean, min, max)."""
    from rllib_diffusion.algorithms import regenerated_rollouts as R

    lines = [x for x in progress if R.AT_STEP in x]
    out: dict[str, Any] = {"count": len(lines), "at_steps": [x[R.AT_STEP] for x in lines]}
    for key in (R.KEPT, R.TRANSITIONS, R.TERMINAL_RATE, R.REWARD_MEAN, R.SECONDS):
        values = np.array([x[key] for x in lines], dtype=float)
        out[key] = {"mean": float(values.mean()), "min": float(values.min()),
                    "max": float(values.max())}  # fmt: skip
    out["eval_returns"] = [[x["gradient_steps"], x["eval_return_mean"]]
                           for x in progress if "eval_return_mean" in x]  # fmt: skip
    return out


def summary(per_seed: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """Per arm: the mean over seeds of the final returns, and their spread."""
    out = {}
    for name, seeds in per_seed.items():
        if not seeds:
            continue
        means = np.array([r["return_mean"] for r in seeds.values()])
        out[name] = {"mean_over_seeds": float(means.mean()), "std_over_seeds": float(means.std()),
                     "seeds": len(means)}  # fmt: skip
    for name in ("dydiff", "regen"):
        if name in out and "real" in out:
            out[f"ratio_{name}_to_real"] = (
                out[name]["mean_over_seeds"] / out["real"]["mean_over_seeds"]
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--model", required=True, help="DyDiff checkpoint (rllib-diffusion dydiff)")
    p.add_argument("--policy", help="policy checkpoint whose actions are injected (dydiff arm)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=["real", "dydiff"])
    p.add_argument("--steps-per-iteration", type=int, default=1000)
    p.add_argument("--regenerate-every", type=int, default=500, help="regen arm; DyDiff's")
    p.add_argument("--num-rollouts-per-regeneration", type=int, default=2048, help="DyDiff's")
    p.add_argument("--rollouts-id", default="local/hopper/dydiff-td3bc-v0")
    p.add_argument("--num-rollouts", type=int, default=6144)
    p.add_argument("--real-ratio", type=float, default=0.6, help="DyDiff's")
    p.add_argument("--batch-size", type=int, default=320)
    p.add_argument("--gradient-steps", type=int, default=20_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=Path("runs/dydiff_b"))
    p.add_argument("--name", default="dydiff_td3bc_hopper_medium_small_synthetic")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if "dydiff" in a.arms and a.policy is None:
        p.error("the dydiff arm needs --policy")
    figures: dict[str, Any] = {"batch_size": a.batch_size, "gradient_steps": a.gradient_steps,
                               "real_ratio": a.real_ratio, "arms": a.arms,
                               "steps_per_iteration": a.steps_per_iteration}  # fmt: skip
    if "dydiff" in a.arms:
        figures["rollouts"] = rollouts(a)
    if "regen" in a.arms:
        figures["regenerate_every"] = a.regenerate_every
        figures["num_rollouts_per_regeneration"] = a.num_rollouts_per_regeneration
        figures["model"] = a.model
    per_seed: dict[str, dict[int, dict]] = {name: {} for name in a.arms}
    for seed in a.seeds:
        for name in a.arms:
            per_seed[name][seed] = arm(a, name, seed)
            figures.update(per_seed=per_seed, summary=summary(per_seed))
            print(f"wrote {write_result(a.name, figures)}", flush=True)
    print(json.dumps(figures["summary"], indent=1))


if __name__ == "__main__":
    main()
