"""Benchmark: speed of the EnvRunner-side forwards (denoising-chain sampling), current
code against a baseline checkout, side by side.

Cases (Hopper defaults: Do 11, Da 3, Ta 4, K 20, MLP 3×512 Mish denoiser, batch 40 =
one forward of a runner's vector env; modules built ``inference_only`` as on runners):

* ``dppo_ddpm_explore``: ``DPPOModule.forward_exploration``, DDPM K=20, K'=10;
* ``dppo_ddim5_explore``: the same with DDIM-5 (K' = 5, every DDIM step);
* ``dppo_ddpm_inference``: ``DPPOModule.forward_inference``, DDPM;
* ``bc_ddpm_inference``: ``DiffusionPolicyModule.forward_inference`` (DiffusionBC), DDPM.

Each code tree runs in its own worker process (its root first on ``sys.path``, the
editable-install finder removed, torch on 1 thread); the parent alternates the order of
the trees each round and reports medians and the median of the per-round ratios. Before
timing, every case is run once per tree with the same seed and the outputs' bytes are
hashed: ``bit_identical`` says whether both trees produce the same numbers. The machine
is shared, so the load average is printed and stored with the figures.

Example (``git worktree add /tmp/perf_base <commit before the change>`` first)::

    OMP_NUM_THREADS=1 python benchmarks/sampling_speed.py --baseline /tmp/perf_base
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Tree, git_sha, import_from, load_average, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH = 40
OBS_DIM, ACTION_DIM, HORIZON, K, K_FT = 11, 3, 4, 20, 10
#: case -> (module, sampler, forward)
CASES = {
    "dppo_ddpm_explore": ("dppo", "ddpm", "forward_exploration"),
    "dppo_ddim5_explore": ("dppo", "ddim", "forward_exploration"),
    "dppo_ddpm_inference": ("dppo", "ddpm", "forward_inference"),
    "bc_ddpm_inference": ("bc", "ddpm", "forward_inference"),
}


# ------------------------------------------------------------------ worker side
def _build(case: str, batch: int):
    """``(module, forward method name, obs (batch, Do))`` of one case, weights seeded."""
    import torch

    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    kind, sampler, forward = CASES[case]
    pol = DiffusionPolicyConfig(
        obs_dim=OBS_DIM, action_dim=ACTION_DIM, horizon=HORIZON, act_steps=HORIZON,
        denoising_steps=K, sampler=sampler, ddim_steps=5 if sampler == "ddim" else None,
    )  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS_DIM, HORIZON, ACTION_DIM)
    torch.manual_seed(0)
    if kind == "dppo":
        from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig, DPPOModule

        k_ft = K_FT if sampler == "ddpm" else None
        cfg = DPPOModelConfig(policy=pol.to_dict(), ft_denoising_steps=k_ft).to_dict()
        module = DPPOModule(
            observation_space=obs_space, action_space=act_space, inference_only=True,
            model_config=cfg,
        )  # fmt: skip
    else:
        from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule

        module = DiffusionPolicyModule(
            observation_space=obs_space, action_space=act_space, inference_only=True,
            model_config=pol.to_dict(),
        )  # fmt: skip
    obs = torch.randn(batch, OBS_DIM, generator=torch.Generator().manual_seed(1))
    return module, forward, obs


def _digest(module, forward: str, obs) -> dict:
    """SHA-256 of every output tensor's bytes for a fixed seed, and whether any output
    carries an autograd graph."""
    import hashlib

    import torch

    torch.manual_seed(2)
    out = getattr(module, forward)({"obs": obs})
    h = hashlib.sha256()
    for key in sorted(out):
        h.update(key.encode() + out[key].detach().contiguous().numpy().tobytes())
    graph = any(v.requires_grad or v.grad_fn is not None for v in out.values())
    return {"sha256": h.hexdigest(), "carries_graph": graph}


def worker(root: str, batch: int) -> None:
    """Serve JSON-line requests on stdin: ``digest`` and ``time`` of a case."""
    import_from(root)
    import time

    import torch

    torch.set_num_threads(1)
    import rllib_diffusion

    built = {case: _build(case, batch) for case in CASES}
    print(json.dumps({"package": rllib_diffusion.__file__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        module, forward, obs = built[req["case"]]
        if req["cmd"] == "digest":
            reply = _digest(module, forward, obs)
        else:
            fn = getattr(module, forward)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(req["calls"]):
                fn({"obs": obs})
            n = req["calls"]
            reply = {"cpu": (time.process_time() - c0) / n, "wall": (time.perf_counter() - t0) / n}
        print(json.dumps(reply), flush=True)


# ------------------------------------------------------------------ parent side
def measure(trees: list[Tree], cases: list[str], rounds: int, target_s: float) -> dict:
    """Per case and tree, CPU and wall seconds per forward in each round (the order of
    the trees alternates). CPU time of the worker is the primary figure: on a loaded
    machine wall time mostly measures the scheduler."""
    calls = {}
    for case in cases:  # warm up, and size each timing to about target_s of CPU
        per_call = max(t.ask(cmd="time", case=case, calls=2)["cpu"] for t in trees)
        calls[case] = max(2, round(target_s / per_call))
    cpu = {case: {t.label: [] for t in trees} for case in cases}
    wall = {case: {t.label: [] for t in trees} for case in cases}
    loads = []
    for r in range(rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for case in cases:
            for tree in order:
                reply = tree.ask(cmd="time", case=case, calls=calls[case])
                cpu[case][tree.label].append(reply["cpu"])
                wall[case][tree.label].append(reply["wall"])
        loads.append(load_average())
        print(f"round {r + 1}/{rounds} done, load average {loads[-1]}", flush=True)
    return {
        "cpu_seconds_per_forward": cpu,
        "wall_seconds_per_forward": wall,
        "calls_per_timing": calls,
        "load_per_round": loads,
    }


def summarize(series: dict, digests: dict, batch: int) -> dict:
    """Figures: per case, samples per CPU-second of each tree (medians), current ÷
    baseline (ratio of medians and median of per-round ratios), and the wall ratio."""
    figures = {}
    for case, by_tree in series["cpu_seconds_per_forward"].items():
        cur = by_tree["current"]
        figures[f"{case}_per_s"] = batch / statistics.median(cur)
        figures[f"{case}_carries_graph"] = digests[case]["current"]["carries_graph"]
        if "baseline" not in by_tree:
            continue
        base = by_tree["baseline"]
        figures[f"{case}_baseline_per_s"] = batch / statistics.median(base)
        figures[f"{case}_speedup"] = statistics.median(base) / statistics.median(cur)
        figures[f"{case}_speedup_per_round_median"] = statistics.median(
            b / c for b, c in zip(base, cur)
        )
        w = series["wall_seconds_per_forward"][case]
        figures[f"{case}_wall_speedup"] = statistics.median(w["baseline"]) / statistics.median(
            w["current"]
        )
        figures[f"{case}_bit_identical"] = (
            digests[case]["current"]["sha256"] == digests[case]["baseline"]["sha256"]
        )
        figures[f"{case}_baseline_carries_graph"] = digests[case]["baseline"]["carries_graph"]
    return figures


def print_table(figures: dict, cases: list[str], loads: list) -> None:
    unit = {"dppo": "chains/s", "bc": "chunks/s"}
    print("\nper CPU-second of one thread (medians); ratio = current / baseline speed")
    print(f"{'case':22s} {'current':>10s} {'baseline':>10s} {'ratio':>7s} {'per-round':>9s}"
          f" {'wall':>6s}  identical  graph(cur/base)")  # fmt: skip
    for case in cases:
        f = lambda k, c=case: figures.get(f"{c}_{k}")  # noqa: E731
        base = f"{f('baseline_per_s'):10.0f}" if f("baseline_per_s") else f"{'-':>10s}"
        ratio = (
            f"{f('speedup'):7.2f} {f('speedup_per_round_median'):9.2f} {f('wall_speedup'):6.2f}"
            if f("speedup")
            else ""
        )
        print(f"{case:22s} {f('per_s'):10.0f} {base} {ratio}  {f('bit_identical')!s:9s}"
              f"  {f('carries_graph')}/{f('baseline_carries_graph')}   "
              f"[{unit[CASES[case][0]]}]")  # fmt: skip
    print(f"load average (1, 5, 15 min) per round: {loads}; cores: {os.cpu_count()}")


def markdown(path: Path) -> str:
    """The table of ``docs/performance.md``, rebuilt from a stored result file."""
    r = json.loads(path.read_text())
    f, v = r["figures"], r["versions"]
    unit = {"dppo": "chains", "bc": "action chunks"}
    lines = [
        f"Measured by `{r['command']}` on {r['machine']} (torch {v.get('torch')}, "
        f"ray {v.get('ray')}, python {v.get('python')}); current = git {v.get('git_sha')} + "
        f"working tree, baseline = git {r.get('baseline_git_sha')}; batch {r['batch']}, torch 1 thread, {len(r['series']['load_per_round'])} "
        f"interleaved rounds; load average {f['load_average_start']} at the start, "
        f"{f['load_average_end']} at the end.",
        "",
        "| case | unit | baseline /CPU-s | current /CPU-s | speed-up (medians) "
        "| speed-up (per-round median) | wall speed-up | bit-identical | graph before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in r["series"]["cpu_seconds_per_forward"]:
        g = lambda k, c=case: f.get(f"{c}_{k}")  # noqa: E731
        lines.append(
            f"| `{case}` | {unit[CASES[case][0]]} | {g('baseline_per_s'):.0f} | {g('per_s'):.0f} "
            f"| {g('speedup'):.3f} | {g('speedup_per_round_median'):.3f} "
            f"| {g('wall_speedup'):.2f} | {'yes' if g('bit_identical') else 'NO'} "
            f"| {g('baseline_carries_graph')} → {g('carries_graph')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--baseline", type=Path, help="root of a checkout to compare against")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--target-seconds", type=float, default=0.6, help="per timing")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    p.add_argument("--name", default="sampling_speed")
    p.add_argument(
        "--markdown", type=Path, metavar="RESULT_JSON", help="only print the docs table of a result"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.batch)
    if args.markdown:
        return print(markdown(args.markdown))
    cases = args.case or list(CASES)
    load_start = load_average()
    roots = [("current", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    trees = [
        Tree(label, __file__, root, "--batch", str(args.batch), timeout=60) for label, root in roots
    ]
    for t in trees:
        print(f"{t.label}: rllib_diffusion from {t.package}", flush=True)
    digests = {c: {t.label: t.ask(cmd="digest", case=c) for t in trees} for c in cases}
    series = measure(trees, cases, args.rounds, args.target_seconds)
    for t in trees:
        t.close()
    figures = summarize(series, digests, args.batch)
    figures["load_average_start"] = load_start
    figures["load_average_end"] = load_average()
    print_table(figures, cases, series["load_per_round"])
    path = write_result(
        args.name, figures, series, batch=args.batch, digests=digests,
        packages={t.label: t.package for t in trees},
        baseline=str(args.baseline) if args.baseline else None,
        baseline_git_sha=git_sha(args.baseline) if args.baseline else None,
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
