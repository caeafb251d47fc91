"""Benchmark (issue #17): wall time per env step of DPPO and ReinFlow at equal load.

The curves of ``benchmarks/beyond.py`` ran one algorithm after another, each under whatever
load the machine had then, so their wall times compare only roughly. Here the arms run
side by side, started together (one ``rllib-diffusion finetune`` process each, no periodic
evaluation), and keep running until every arm has completed ``--iterations`` training
iterations; then each is stopped with SIGINT. Every arm therefore shares the machine with
the others for its whole measured window, whatever else runs on it. From each run's
``progress.jsonl``: sampling and learning seconds per iteration (medians), and seconds per
1,000 env steps. The first iteration of each run is left out (EnvRunner warm-up).

With ``--curves ARM=RESULT`` (a result file of ``beyond.py`` whose runs were made with
that arm's settings), the env steps at which each of its runs of the arm's algorithm
first reached ``--threshold`` are turned into wall time at the arm's equal-load cost:
the paper's claim "ReinFlow reaches DPPO's return in less wall time" is (env steps to
the return) × (seconds per env step). ``--summarize-only`` recomputes the result from
the arms' runs in ``--out`` (e.g. with more curves) without running them again.

Example (the BC checkpoints of docs/algorithms.md, "Second seed")::

    python benchmarks/beyond_timing.py --arm dppo=dppo:runs/beyond_s1/bc_ddpm/checkpoint \\
        --arm reinflow=reinflow:runs/beyond_s1/bc_flow/checkpoint --iterations 4 \\
        --curves dppo=beyond_hopper_medium dppo=beyond_hopper_medium_s1 \\
        --curves reinflow=beyond_hopper_medium reinflow=beyond_hopper_medium_s1 --threshold 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402

#: Progress-line keys read per iteration.
SAMPLE, LEARN, ENV_STEPS = "sample_seconds", "learn_seconds", "env_steps"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--arm",
        action="append",
        required=True,
        metavar="NAME=ALGO:CHECKPOINT",
        help="one arm (repeat; the first is the ratios' reference)",
    )
    p.add_argument(
        "--flags",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help='extra finetune flags of one arm, e.g. reinflow_r1="--repeat-samples 1"',
    )
    p.add_argument("--iterations", type=int, default=4, help="measured iterations per arm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/beyond_timing", help="parent of the arms' runs")
    p.add_argument("--name", default="beyond_timing_hopper", help="result file name")
    p.add_argument(
        "--curves",
        nargs="*",
        action="extend",
        default=[],
        metavar="ARM=RESULT",
        help="a beyond.py result whose runs used ARM's settings (repeat)",
    )
    p.add_argument("--threshold", type=float, default=2000.0, help="return for --curves")
    p.add_argument("--timeout-min", type=float, default=60.0, help="stop everything after")
    p.add_argument("--summarize-only", action="store_true", help="reuse the runs in --out")
    return p.parse_args(argv)


def _arms(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags = {}
    for item in args.flags:
        name, _, value = item.partition("=")
        flags[name] = shlex.split(value)
    arms = {}
    for item in args.arm:
        name, _, rest = item.partition("=")
        algo, _, checkpoint = rest.partition(":")
        if not (name and algo and checkpoint):
            sys.exit(f"--arm {item!r}: expected NAME=ALGO:CHECKPOINT, e.g. dppo=dppo:runs/bc")
        if not Path(checkpoint).exists():
            sys.exit(f"--arm {name}: no checkpoint at {checkpoint}; pretrain it first")
        arms[name] = {"algo": algo, "checkpoint": checkpoint, "flags": flags.get(name, [])}
    unknown = set(flags) - set(arms)
    if unknown:
        sys.exit(f"--flags names no arm: {sorted(unknown)}; use an --arm NAME")
    return arms


def _command(arm: dict[str, Any], out: Path, seed: int) -> list[str]:
    cli = shutil.which("rllib-diffusion", path=str(Path(sys.executable).parent))
    return [
        cli or "rllib-diffusion",
        "finetune",
        "--algo",
        arm["algo"],
        "--checkpoint",
        arm["checkpoint"],
        "--out",
        str(out),
        "--env-steps",
        "100000000",  # stopped by this script once every arm has its iterations
        "--eval-interval",
        "0",
        "--eval-episodes",
        "1",
        "--checkpoint-interval",
        "0",
        "--seed",
        str(seed),
        *arm["flags"],
    ]


def _iterations(out: Path) -> list[dict[str, Any]]:
    path = out / "progress.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if LEARN in r]


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT (finetune stops cleanly and shuts its Ray down), then SIGKILL its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_side_by_side(args: argparse.Namespace, arms: dict[str, dict[str, Any]]) -> list[float]:
    """Start every arm at once; stop all once each has ``iterations + 1`` iterations.
    Returns the load averages sampled while they ran."""
    procs, loads = {}, []
    for name, arm in arms.items():
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = open(Path(args.out) / f"{name}.log", "w")  # noqa: SIM115 (lives with the run)
        cmd = _command(arm, out, args.seed)
        print(f"[beyond_timing] {name}: {shlex.join(cmd)}", flush=True)
        procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60 * args.timeout_min
    try:
        while time.monotonic() < deadline:
            time.sleep(10)
            loads.append(os.getloadavg()[0])
            counts = {n: len(_iterations(Path(args.out) / n)) for n in arms}
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                sys.exit(f"arm(s) {dead} exited early; see {args.out}/<arm>.log")
            if min(counts.values()) > args.iterations:
                break
            print(f"[beyond_timing] iterations {counts}, load {loads[-1]:.1f}", flush=True)
    finally:
        for proc in procs.values():
            _stop(proc)
    return loads


def arm_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the measured iterations (the run's first one left out)."""
    rows = rows[1:]
    steps = [b[ENV_STEPS] - a[ENV_STEPS] for a, b in zip(rows, rows[1:])] or [0]
    sample = statistics.median(r[SAMPLE] for r in rows)
    learn = statistics.median(r[LEARN] for r in rows)
    per_iteration = statistics.median(steps)
    return {
        "iterations": len(rows),
        "sample_seconds": sample,
        "learn_seconds": learn,
        "iteration_seconds": sample + learn,
        "env_steps_per_iteration": per_iteration,
        "seconds_per_1k_env_steps": 1000 * (sample + learn) / max(per_iteration, 1),
    }


def time_to_threshold(
    curves: list[str], arms: dict[str, dict[str, Any]], cost: dict[str, float], threshold: float
) -> dict[str, Any]:
    """Per ``ARM=RESULT`` and run of the arm's algorithm in RESULT (``<algo>_s<seed>``):
    env steps at its first evaluation ≥ ``threshold``, and that many env steps at the
    arm's measured seconds per 1,000 env steps (``cost``)."""
    out = {}
    for item in curves:
        arm, _, name = item.partition("=")
        if arm not in arms:
            sys.exit(f"--curves {item!r}: no arm {arm!r}; give ARM=RESULT with an --arm NAME")
        series = json.loads((RESULTS_DIR / f"{name}.json").read_text())["series"]
        for run, curve in series.items():
            if run.rsplit("_s", 1)[0] != arms[arm]["algo"]:
                continue
            pairs = zip(curve["eval_env_steps"], curve["eval_return_mean"])
            steps = next((s for s, r in pairs if r >= threshold), None)
            out[f"{arm}:{name}:{run}"] = {
                "env_steps_to_threshold": steps,
                "minutes_at_equal_load": None if steps is None else steps * cost[arm] / 6e4,
            }
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    arms = _arms(args)
    loads = [] if args.summarize_only else run_side_by_side(args, arms)
    runs = {name: _iterations(Path(args.out) / name) for name in arms}
    if not all(len(rows) > 2 for rows in runs.values()):
        sys.exit(f"too few iterations in {args.out} to summarise: {runs.keys()}; run it first")
    figures = {name: arm_figures(rows) for name, rows in runs.items()}
    ref = next(iter(figures.values()))
    for fig in figures.values():
        fig["iteration_seconds_vs_first_arm"] = fig["iteration_seconds"] / ref["iteration_seconds"]
        fig["per_env_step_vs_first_arm"] = (
            fig["seconds_per_1k_env_steps"] / ref["seconds_per_1k_env_steps"]
        )
    extra = {"load_average": {"min": min(loads), "max": max(loads)}} if loads else {}
    if args.summarize_only:  # keep the load recorded when the arms ran
        old = RESULTS_DIR / f"{args.name}.json"
        if old.exists():
            extra.update(
                {k: v for k, v in json.loads(old.read_text()).items() if k == "load_average"}
            )
    if args.curves:
        cost = {n: f["seconds_per_1k_env_steps"] for n, f in figures.items()}
        extra["time_to_threshold"] = time_to_threshold(args.curves, arms, cost, args.threshold)
        extra["threshold"] = args.threshold
    arm_info = {n: {k: a[k] for k in ("algo", "checkpoint", "flags")} for n, a in arms.items()}
    write_result(args.name, figures, arms=arm_info, **extra)
    print(json.dumps({"figures": figures, **extra}, indent=1), flush=True)


if __name__ == "__main__":
    main()
