"""DyDiff on the Hopper-v5 medium subset (issue #16): training speed, rollout speed, and
how far generated states are from the real Hopper's.

Stages (each skipped when its output exists, so the same command resumes; the result
file is rewritten after every stage):

1. ``model``: ``rllib-diffusion dydiff`` trains the segment model and ensemble on
   ``--dataset`` (its result.json holds the per-step error of states predicted from the
   data's s_0 and actions, for the diffusion model and the ensemble rolled open loop).
2. ``rounds=R`` for each ``--rounds``: ``--num-rollouts`` rollouts of ``--policy`` from
   data start states with R injection rounds, timed; then the real Hopper-v5 (MuJoCo
   state set from each observation: qpos = [0, obs[:5]], qvel = obs[5:]) measures

   - ``one_step``: ‖s′_gen − step(s, a)‖ for every generated transition (s, a, s′_gen);
   - ``open_loop``: states of the real env driven from s_0 by the rollout's own actions;
   - ``closed_loop``: states of the real env driven from s_0 by the policy itself (what
     a perfect model would generate),

   each as the per-step RMSE in units of the data's state std.

Example (the run reported in docs/synthetic.md)::

    python benchmarks/dydiff_hopper.py --gradient-steps 2000 --num-rollouts 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("rllib-diffusion"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--policy", default="runs/bench_offline/td3bc/checkpoint",
                   help="policy checkpoint whose actions are injected")  # fmt: skip
    p.add_argument("--out", default="runs/dydiff_bench")
    p.add_argument("--name", default="dydiff_hopper_medium_small")
    p.add_argument("--gradient-steps", type=int, default=2000)
    p.add_argument("--steps-per-iteration", type=int, default=500)
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--diffuse", choices=["states", "deltas"], default="states")
    p.add_argument("--num-rollouts", type=int, default=256)
    p.add_argument("--rounds", type=int, nargs="+", default=[0, 2])
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train_model(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Stage 1 (skipped when ``out/model/result.json`` exists): its result and speed."""
    model = out / "model"
    if not (model / "result.json").exists():
        cmd = [CLI, "dydiff", "--dataset", args.dataset, "--out", str(model),
               "--gradient-steps", str(args.gradient_steps), "--horizon", str(args.horizon),
               "--steps-per-iteration", str(args.steps_per_iteration), "--seed", str(args.seed),
               "--diffuse", args.diffuse, "--overwrite"]  # fmt: skip
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads((model / "result.json").read_text())
    lines = [json.loads(x) for x in (model / "progress.jsonl").read_text().splitlines()]
    per_iter = np.diff([line["seconds"] for line in lines])
    return {
        "checkpoint": result["checkpoint"],
        "train_seconds": result.get("train_seconds"),
        "seconds_per_iteration_after_first": per_iter.tolist(),
        "ms_per_gradient_step_after_first": float(1000 * per_iter.mean() / args.steps_per_iteration)
        if len(per_iter)
        else None,
        "evaluation": result["evaluation"],
        "loss_curve": [[x["gradient_steps"], x["loss"]] for x in lines],
    }


class RealHopper:
    """Hopper-v5 whose state is set from an observation (x, excluded from it, is 0)."""

    def __init__(self) -> None:
        import gymnasium as gym

        self.env = gym.make("Hopper-v5")
        self.env.reset(seed=0)
        self.sim = self.env.unwrapped

    def step_from(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        self.sim.set_state(np.concatenate([[0.0], obs[:5]]), obs[5:].astype(np.float64))
        nxt, *_ = self.env.step(np.clip(action, -1.0, 1.0))
        return nxt.astype(np.float32)

    def drive(self, s0: np.ndarray, actions_or_policy, horizon: int) -> np.ndarray:
        """``(N, H + 1, Do)`` real states from ``s0`` under a fixed ``(N, H, Da)`` action
        sequence or a policy (callable)."""
        states = [s0.astype(np.float32)]
        fixed = isinstance(actions_or_policy, np.ndarray)
        for i in range(horizon):
            cur = states[-1]
            a = actions_or_policy[:, i] if fixed else actions_or_policy(cur)
            states.append(np.stack([self.step_from(o, u) for o, u in zip(cur, a)]))
        return np.stack(states, axis=1)


def per_step_rmse(pred: np.ndarray, true: np.ndarray, std: np.ndarray, valid) -> list[float]:
    """RMSE per step over the valid (not after a terminal) rollouts, in std units."""
    z = ((pred - true) / std) ** 2  # (N, H, Do)
    return [float(np.sqrt(z[valid[:, i], i].mean())) for i in range(z.shape[1])]


def rollout_stage(args, module, policy, s0, rounds: int, std) -> dict[str, Any]:
    import torch

    from rllib_diffusion.algorithms.dydiff.rollout import (
        filter_rollouts,
        inject_actions,
        score_rollouts,
        termination_fn,
    )

    started = time.perf_counter()
    states, actions = inject_actions(module, policy, s0, rounds=rounds,
                                     generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    seconds = time.perf_counter() - started
    r = score_rollouts(module, states, actions, termination_fn("Hopper-v5"))
    valid = r.valid_steps()
    real = RealHopper()
    one_step = np.stack(
        [np.stack([real.step_from(o, u) for o, u in zip(states[:, i], actions[:, i])])
         for i in range(actions.shape[1])], axis=1,
    )  # fmt: skip
    open_loop = real.drive(s0, actions, args.horizon)
    closed_loop = real.drive(s0, policy, args.horizon)
    keep = filter_rollouts(r, "hardmax", fraction=0.6, threshold=0, temperature=0.05,
                           rng=np.random.default_rng(0))  # fmt: skip
    gen = states[:, 1:]
    return {
        "rounds": rounds,
        "num_rollouts": len(s0),
        "rollout_seconds": seconds,
        "rollouts_per_second": len(s0) / seconds,
        "one_step_rmse": per_step_rmse(gen, one_step, std, valid),
        "open_loop_rmse": per_step_rmse(gen, open_loop[:, 1:], std, valid),
        "closed_loop_rmse": per_step_rmse(gen, closed_loop[:, 1:], std, valid),
        "terminal_rate_per_step": r.terminals.mean(0).tolist(),
        "valid_transitions": int(valid.sum()),
        "hardmax_kept_transitions": len(r.transitions(keep)["obs"]),
        "mean_max_disagreement": float(r.max_disagreement().mean()),
        "predicted_return_mean": float(r.returns().mean()),
    }


def main(args: argparse.Namespace) -> None:
    from rllib_diffusion.algorithms.dydiff.run import policy_from_checkpoint
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.transitions import dataset_transitions
    from rllib_diffusion.utils.runtime import limit_threads

    limit_threads()
    out = (ROOT / args.out).resolve()
    figures: dict[str, Any] = {
        "policy": args.policy, "dataset": args.dataset, "diffuse": args.diffuse
    }  # fmt: skip
    figures["model"] = train_model(args, out)
    write_result(args.name, figures, note="partial: model trained")
    module, _ = load_policy_module(figures["model"]["checkpoint"])
    policy = policy_from_checkpoint(str(ROOT / args.policy))
    obs = dataset_transitions(load_dataset(str(ROOT / args.dataset)))["obs"]
    std = obs.std(0)
    s0 = obs[np.random.default_rng(args.seed).integers(0, len(obs), args.num_rollouts)]
    for rounds in args.rounds:
        key = f"rounds={rounds}"
        figures[key] = rollout_stage(args, module, policy, s0, rounds, std)
        print(key, json.dumps({k: v for k, v in figures[key].items()}), flush=True)
        write_result(args.name, figures, note=f"partial: up to {key}")
    write_result(args.name, figures, note="complete; machine shared and loaded (see docs)")


if __name__ == "__main__":
    main(parse_args())
