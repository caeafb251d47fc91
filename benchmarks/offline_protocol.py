"""Issue 12's offline protocol: every algorithm at one long budget, seeds, across sessions.

The protocol (the issue's item 5): on one dataset, Diffusion-QL, DAC, diffusion BC and
d3rlpy IQL with 3 seeds, IDQL, FQL, TD3+BC (ours) and d3rlpy TD3+BC with 1, all at
``--gradient-steps`` (default 100,000 ≈ 500 target-network time constants at τ = 0.005),
evaluated every 10k steps and at the final checkpoint (10 deterministic episodes each).
Each run is one ``benchmarks/offline.py`` process with a checkpoint every 2,000 steps;
this driver runs the unfinished ones one after the other, in the order below (the first
seed of every algorithm before any second seed), resuming a run that has a checkpoint,
so the same command continues the protocol in the next session::

    python benchmarks/offline_protocol.py                  # run what is left, in order
    python benchmarks/offline_protocol.py --max-hours 2    # stop starting runs after 2 h
    python benchmarks/offline_protocol.py --algos td3bc fql  # only these algorithms' runs
    python benchmarks/offline_protocol.py --status         # done / partial / not started
    python benchmarks/offline_protocol.py --summarize      # result JSON + plot, also partial

The summary (``benchmarks/results/offline_protocol_<tag>.json`` and ``.png``) reports per
algorithm the final-checkpoint return (mean over its episodes, then mean ± std over
seeds) and, labelled separately, the best periodic evaluation (what the papers report),
with the return and critic curves (Q on data actions, Q on policy actions, target, TD
error) of every run, finished or not. The d3rlpy runs need d3rlpy beside the venv
(``--d3rlpy-path DIR`` or ``$D3RLPY_PATH``, see ``docs/algorithms.md``, TD3+BC).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, load_average, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
#: (algorithm, seeds) in the order the runs start: one seed of each first.
PROTOCOL: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("diffusion_ql", (0, 1, 2)),
    ("d3rlpy_iql", (0, 1, 2)),
    ("diffusion_bc", (0, 1, 2)),
    ("td3bc", (0,)),
    ("d3rlpy_td3bc", (0,)),
    ("idql", (0,)),
    ("fql", (0,)),
    ("dac", (0, 1, 2)),
)
#: Critic diagnostics kept per iteration in the summary (progress.jsonl keys).
CRITIC_KEYS = ("q_mean", "q_policy_mean", "target_mean", "td_error", "critic_loss")


@dataclass(frozen=True)
class Run:
    algo: str
    seed: int
    out: Path

    @property
    def name(self) -> str:
        return f"{self.algo}_s{self.seed}"


def protocol_runs(root: Path) -> list[Run]:
    """Every run of the protocol in start order: seed ``i`` of every algorithm before
    seed ``i + 1`` of any."""
    most = max(len(seeds) for _, seeds in PROTOCOL)
    return [
        Run(algo, seeds[i], root / f"{algo}_s{seeds[i]}")
        for i in range(most)
        for algo, seeds in PROTOCOL
        if i < len(seeds)
    ]


def read_progress(run: Run) -> list[dict[str, Any]]:
    path = run.out / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def read_result(run: Run, budget: int) -> dict[str, Any] | None:
    """The run's ``result.json`` once it reached ``budget`` gradient steps, else None."""
    path = run.out / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("gradient_steps", 0) >= budget else None


def summary_path(tag: str) -> Path:
    return RESULTS_DIR / f"offline_protocol_{tag}.json"


def committed_curves(run: Run, tag: str, budget: int) -> dict[str, Any] | None:
    """A finished run's curves as the last ``--summarize`` recorded them (in git), or None.

    ``runs/`` is not in git, so a fresh machine has no run directories: a run the summary
    records as finished at this budget is not run again and keeps its curves."""
    path = summary_path(tag)
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    curves = summary.get("series", {}).get(run.name)
    finished = summary.get("budget_gradient_steps", 0) >= budget
    return curves if finished and curves and "final_episode_returns" in curves else None


def has_checkpoint(run: Run) -> bool:
    return (run.out / "checkpoint").exists() or (run.out / "d3rlpy_checkpoint").exists()


def run_command(run: Run, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(HERE / "offline.py"), "--algo", run.algo]
    cmd += ["--dataset", args.dataset, "--seed", str(run.seed), "--out", str(run.out)]
    cmd += ["--gradient-steps", str(args.gradient_steps), "--eval-every", str(args.eval_every)]
    cmd += ["--eval-episodes", str(args.eval_episodes), "--checkpoint-every", "2000"]
    cmd += ["--tag", f"{args.tag}_s{run.seed}"]
    return cmd + (["--resume"] if has_checkpoint(run) else [])


def run_env(run: Run, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if run.algo.startswith("d3rlpy"):
        env["PYTHONPATH"] = os.pathsep.join(
            x for x in (args.d3rlpy_path, env.get("PYTHONPATH")) if x
        )
    return env


def run_pending(args: argparse.Namespace) -> None:
    root, start = Path(args.root), time.monotonic()
    for run in protocol_runs(root):
        if args.algos and run.algo not in args.algos:
            continue
        if run_state(run, args.gradient_steps, args.tag)[0].startswith("done"):
            continue
        if run.algo.startswith("d3rlpy") and not args.d3rlpy_path:
            print(f"[protocol] skipping {run.name}: no --d3rlpy-path / $D3RLPY_PATH", flush=True)
            continue
        if args.max_hours and time.monotonic() - start > 3600 * args.max_hours:
            print(f"[protocol] --max-hours {args.max_hours} reached; next: {run.name}")
            return
        cmd = run_command(run, args)
        print(f"[protocol] {run.name}: {' '.join(cmd)}", flush=True)
        run.out.parent.mkdir(parents=True, exist_ok=True)
        with open(root / f"{run.name}.log", "a") as log:
            code = subprocess.call(cmd, env=run_env(run, args), stdout=log, stderr=log)
        if code != 0:
            sys.exit(f"[protocol] {run.name} exited with {code}; see {root / run.name}.log")
    print("[protocol] every run of the protocol is done", flush=True)


def run_state(run: Run, budget: int, tag: str) -> tuple[str, int]:
    """``("done" | "done (summary)" | "partial" | "not started", gradient steps reached)``;
    "done (summary)": finished on another machine, known from the committed summary."""
    if read_result(run, budget) is not None:
        return "done", budget
    progress = read_progress(run)
    if not progress and committed_curves(run, tag, budget) is not None:
        return "done (summary)", budget
    if not progress:
        return "not started", 0
    return "partial", int(progress[-1]["gradient_steps"])


def print_status(args: argparse.Namespace) -> None:
    for run in protocol_runs(Path(args.root)):
        state, steps = run_state(run, args.gradient_steps, args.tag)
        print(f"{run.name:<18} {state:<15} {steps:>7} / {args.gradient_steps}")


def run_curves(run: Run, budget: int, tag: str) -> dict[str, Any]:
    """One run's evaluation curve (periodic evaluations, then the final checkpoint's),
    critic curves, final episode returns and training time; a run finished elsewhere
    keeps the curves of the committed summary."""
    progress, result = read_progress(run), read_result(run, budget)
    if not progress and (committed := committed_curves(run, tag, budget)) is not None:
        return committed
    evals = [
        (int(x["gradient_steps"]), float(x["eval_return_mean"]))
        for x in progress
        if "eval_return_mean" in x and x["gradient_steps"] < budget
    ]
    curves: dict[str, Any] = {
        "gradient_steps": [int(x["gradient_steps"]) for x in progress],
        "eval_gradient_steps": [s for s, _ in evals],
        "eval_return_mean": [r for _, r in evals],
    }
    for key in CRITIC_KEYS:
        if any(key in x for x in progress):
            curves[key] = [x.get(key) for x in progress]
    if result is not None:
        ev = result["evaluation"]
        curves["final_episode_returns"] = ev["episode_returns"]
        curves["eval_gradient_steps"].append(budget)
        curves["eval_return_mean"].append(ev["episode_return_mean"])
        curves["train_seconds"] = result.get("train_seconds")
    return curves


def algo_figures(runs: list[Run], curves: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per algorithm: final return (mean ± std over finished seeds of each seed's mean over
    its final episodes; no std for one seed), best periodic evaluation likewise, and the
    partial runs."""
    done = [r for r in runs if "final_episode_returns" in curves[r.name]]
    finals = [float(np.mean(curves[r.name]["final_episode_returns"])) for r in done]
    bests = [max(curves[r.name]["eval_return_mean"]) for r in done]
    partial = {
        r.name: {
            "gradient_steps": curves[r.name]["gradient_steps"][-1],
            "last_eval": (curves[r.name]["eval_return_mean"] or [None])[-1],
        }
        for r in runs
        if r not in done and curves[r.name]["gradient_steps"]
    }
    return {
        "seeds_done": [r.seed for r in done],
        "final_return_per_seed": finals,
        "final_return_mean": float(np.mean(finals)) if finals else None,
        "final_return_std_over_seeds": float(np.std(finals)) if len(finals) > 1 else None,
        "best_eval_per_seed": bests,
        "best_eval_mean": float(np.mean(bests)) if bests else None,
        "partial_runs": partial,
    }


def data_mc_return(dataset: str, gamma: float = 0.99) -> float:
    """Mean discounted return-to-go over the data's transitions (episodes cut at their
    ends, so a truncated episode's tail counts less): the scale Q on data should reach."""
    from rllib_diffusion.data import load_dataset

    values = []
    for ep in load_dataset(dataset).episodes:
        g, out = 0.0, []
        for r in ep.rewards[::-1]:
            g = float(r) + gamma * g
            out.append(g)
        values.extend(out)
    return float(np.mean(values))


def summarize(args: argparse.Namespace) -> None:
    runs = protocol_runs(Path(args.root))
    curves = {r.name: run_curves(r, args.gradient_steps, args.tag) for r in runs}
    figures = {
        algo: algo_figures([r for r in runs if r.algo == algo], curves) for algo, _ in PROTOCOL
    }
    figures["data_mc_discounted_return"] = data_mc_return(args.dataset)
    name = f"offline_protocol_{args.tag}"
    path = write_result(
        name,
        figures,
        {r.name: curves[r.name] for r in runs if curves[r.name]["gradient_steps"]},
        dataset=args.dataset,
        budget_gradient_steps=args.gradient_steps,
        load_average_at_summary=load_average(),
    )
    plot(curves, runs, figures["data_mc_discounted_return"], path.with_suffix(".png"))
    for algo, _ in PROTOCOL:
        f = figures[algo]
        print(
            f"{algo:<14} seeds {f['seeds_done']}: final {f['final_return_mean']} "
            f"± {f['final_return_std_over_seeds']}, best {f['best_eval_mean']}; "
            f"partial {f['partial_runs']}"
        )
    print(f"wrote {path}")


def plot(curves: dict[str, dict[str, Any]], runs: list[Run], mc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ret, ax_q) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {algo: f"C{i}" for i, (algo, _) in enumerate(PROTOCOL)}
    for run in runs:
        c = curves[run.name]
        style = dict(color=colors[run.algo], alpha=0.85, ls=["-", "--", ":"][run.seed % 3])
        if c["eval_gradient_steps"]:
            ax_ret.plot(c["eval_gradient_steps"], c["eval_return_mean"], marker="o", ms=3,
                        label=run.name, **style)  # fmt: skip
        if "q_mean" in c:
            ax_q.plot(c["gradient_steps"], c["q_mean"], label=run.name, **style)
    ax_q.axhline(mc, color="k", lw=1, ls="--", label="data MC return-to-go")
    ax_ret.set(xlabel="gradient steps", ylabel="return (10 episodes)", title="evaluations")
    ax_q.set(xlabel="gradient steps", ylabel="Q on data actions", title="critics")
    for ax in (ax_ret, ax_q):
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--tag", default="hopper_medium_small_100k", help="result name")
    p.add_argument("--root", default="runs/bench_offline100k", help="run directories")
    p.add_argument("--gradient-steps", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--d3rlpy-path", default=os.environ.get("D3RLPY_PATH"))
    p.add_argument("--max-hours", type=float, default=0.0, help="0: no limit")
    p.add_argument(
        "--algos",
        nargs="+",
        choices=[a for a, _ in PROTOCOL],
        help="run only these algorithms' runs (e.g. two drivers on disjoint sets, one per core)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true")
    mode.add_argument("--summarize", action="store_true")
    args = p.parse_args()
    if args.status:
        print_status(args)
    elif args.summarize:
        summarize(args)
    else:
        run_pending(args)


if __name__ == "__main__":
    main()
