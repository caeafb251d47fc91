"""Benchmark: our hot paths side by side with their peers and the raw-env ceiling, in one
run, as ratios measured on the same machine at the same time.

Rows (Hopper dims: Do 11, Da 3, Ta 4; unit per CPU-second of one torch thread):

* ``dppo_sample``: ``DPPOModule.forward_exploration`` (batch 40, K=20, K'=10) vs the
  reference DPPO's ``model(cond, deterministic=False, return_chain=True)``; chains/s;
* ``dppo_update_10k`` / ``dppo_update_50k``: our DPPO learner (``Learner.update``) vs
  the reference ``PPODiffusion.loss`` + backward + AdamW steps, minibatches of 10,000 /
  50,000 (env step, denoising step) pairs; pairs/s;
* ``dql_update``: our Diffusion-QL learner vs the reference ``Diffusion_QL.train``,
  batch 256; gradient steps/s;
* ``dql_action``: our Diffusion-QL ``forward_inference`` on one state vs the
  reference ``sample_action`` (50 candidates each); actions/s;
* ``bc``: our diffusion-BC learner vs a minimal PyTorch DDPM-BC loop (batch 256, 3x512
  Mish, K=20); gradient steps/s;
* ``envrunner``: RLlib's ``SingleAgentEnvRunner`` with our DPPO module, 40 Hopper-v5
  envs in the action-chunk env, one process, vs gymnasium ``SyncVectorEnv`` of the same
  40 envs with random actions; env steps/s.

The references are imported unmodified at run time from a ``git archive`` of their
mirrors (``--dppo-ref``, ``--dql-ref``: a mirror, a bare repo or a checkout); a missing
one is reported in one line and its rows measure ours only. Ours, and each peer, run in
their own worker process (torch 1 thread); every row alternates ours and the peer
(A B, B A, ...) for ``--rounds`` rounds. The figure is units per CPU-second of the
worker (the machine is shared and loaded: wall time mostly measures the scheduler);
wall-time rates are stored too. Ratio = ours / peer (> 1: ours is faster).

Example::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/performance.py
    python benchmarks/performance.py --rows bc,envrunner --rounds 5
    python benchmarks/performance.py --markdown benchmarks/results/performance.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Tree, import_from, load_average, write_result  # noqa: E402
from performance_peers import (  # noqa: E402
    PEERS,
    STUBBABLE,
    Bench,
    export_reference,
    stubbed_imports,
)

ROOT = Path(__file__).resolve().parent.parent
MIRRORS = Path(os.environ.get("RLLIB_DIFFUSION_MIRRORS", "/work/.mirror"))
DEFAULT_REFS = {
    "dppo": MIRRORS / "irom-lab+dppo",
    "dql": MIRRORS / "Zhendong-Wang+Diffusion-Policies-for-Offline-RL",
}
#: row -> (unit, what ours is, what the peer is)
ROWS = {
    "dppo_sample": ("chains", "DPPOModule.forward_exploration", "reference DPPO model(cond, deterministic=False, return_chain=True)"),
    "dppo_update_10k": ("pairs", "DPPO learner update, minibatch 10k pairs", "reference PPODiffusion.loss + backward + AdamW"),
    "dppo_update_50k": ("pairs", "DPPO learner update, minibatch 50k pairs", "reference PPODiffusion.loss + backward + AdamW"),
    "dql_update": ("gradient steps", "Diffusion-QL learner update, batch 256", "reference Diffusion_QL.train"),
    "dql_action": ("actions", "Diffusion-QL forward_inference, 50 candidates", "reference Diffusion_QL.sample_action"),
    "bc": ("gradient steps", "diffusion-BC learner update, batch 256", "minimal PyTorch DDPM-BC loop"),
    "envrunner": ("env steps", "SingleAgentEnvRunner + DPPO module, 40 envs", "raw SyncVectorEnv, random actions, 40 envs"),
}  # fmt: skip
#: The issue's targets (ours / peer), shown beside the measured ratios.
TARGETS = {
    "dppo_update_10k": 2.0,
    "dppo_update_50k": 2.0,
    "dql_update": 2.0,
    "bc": 1.0,
    "envrunner": 0.8,
}
#: Problem sizes; ``--smoke`` shrinks them (a test of the plumbing, not a figure).
SIZES = {
    "batch": 40, "denoising_steps": 20, "ft_steps": 10, "hidden": [512, 512, 512],
    "critic_hidden": [256, 256, 256], "pairs_10k": 10_000, "pairs_50k": 50_000,
    "dql_batch": 256, "dql_steps": 10, "dql_rows": 100_000,
    "bc_batch": 256, "bc_steps": 20, "bc_rows": 100_000,
    "envs": 40, "env_vector_steps": 100,
}  # fmt: skip
SMOKE = {**SIZES, "batch": 4, "denoising_steps": 5, "ft_steps": 2, "hidden": [32, 32, 32],
         "critic_hidden": [16, 16, 16], "pairs_10k": 40, "pairs_50k": 80, "dql_batch": 16,
         "dql_steps": 2, "dql_rows": 256, "bc_batch": 16, "bc_steps": 2, "bc_rows": 256,
         "envs": 2, "env_vector_steps": 4}  # fmt: skip
OURS, PEER = "ours", "peer"


# ------------------------------------------------------------------ our side
def _learner_bench(
    case: str, steps: int | None, rows: int | None, policy: dict | None = None
) -> Bench:
    """One of ``learner_speed``'s learners through ``Learner.update``; a call = one
    ``update()`` of ``steps`` gradient steps of ``rows`` rows."""
    from learner_speed import Case

    c = Case(case, steps=steps, rows=rows, policy=policy)
    per_call = c.steps * (c.rows if case == "dppo" else 1)

    def run(calls: int) -> int:
        for _ in range(calls):
            c.update()
        return calls * per_call

    return Bench(
        run,
        {
            "learner": type(c.learner).__name__,
            "steps_per_update": c.steps,
            "rows_per_step": c.rows,
            "policy": policy or "defaults",
            "grad_clip": c.learner.config.grad_clip,
            "model_config": c.learner.config.model_config,
        },
    )


def _dppo_sample_bench(sizes: dict[str, Any]) -> Bench:
    from sampling_speed import K_FT, K, _build

    module, forward, obs = _build("dppo_ddpm_explore", sizes["batch"])
    fn = getattr(module, forward)

    def run(calls: int) -> int:
        for _ in range(calls):
            fn({"obs": obs})
        return calls * sizes["batch"]

    return Bench(
        run,
        {
            "module": "DPPOModule (inference_only)",
            "call": forward,
            "batch": sizes["batch"],
            "denoising_steps": K,
            "ft_denoising_steps": K_FT,
            "network": "DiffusionMLP 3x512 Mish residual, time_dim 16",
        },
    )


def _dql_action_bench(sizes: dict[str, Any]) -> Bench:
    """The Diffusion-QL module built ``inference_only`` (as on EnvRunners: the EMA actor
    and the target critics) from the learner's config, one state per call."""
    import torch
    from learner_speed import inference_only_dql

    module, states = inference_only_dql()

    def run(calls: int) -> int:
        for i in range(calls):
            out = module.forward_inference({"obs": torch.from_numpy(states[i % 64][None])})
            out["actions"].numpy()
        return calls

    cfg = module.dql_config
    return Bench(
        run,
        {
            "module": f"{type(module).__name__} (inference_only)",
            "call": "forward_inference({'obs': (1, 11)})",
            "num_candidates": cfg.num_candidates,
            "action_selection": cfg.action_selection,
            "denoising_steps": cfg.denoising_steps,
            "hidden_dims": list(cfg.hidden_dims),
        },
    )


def _envrunner_bench(sizes: dict[str, Any]) -> Bench:
    """RLlib's EnvRunner with our DPPO module in the action-chunk env; units are true env
    steps (each decision executes ``act_steps`` of them, fewer at an episode's end)."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
    from rllib_diffusion.envs.chunking import chunk_spaces, register_chunked_env
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    pol = DiffusionPolicyConfig(
        obs_dim=11,
        action_dim=3,
        env_id="Hopper-v5",
        hidden_dims=tuple(sizes["hidden"]),
        denoising_steps=sizes["denoising_steps"],
    )
    obs_space, act_space = chunk_spaces(11, pol.horizon, 3)
    config = (
        DPPOConfig()
        .environment(register_chunked_env(), env_config=pol.env_config(), observation_space=obs_space, action_space=act_space)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=sizes["envs"])
        .rl_module(model_config=DPPOModelConfig(policy=pol.to_dict(), ft_denoising_steps=sizes["ft_steps"]).to_dict())
    )  # fmt: skip
    runner = SingleAgentEnvRunner(config=config)
    decisions = sizes["envs"] * sizes["env_vector_steps"] // pol.act_steps

    def run(calls: int) -> int:
        steps = 0
        for _ in range(calls):
            episodes = runner.sample(num_timesteps=decisions, random_actions=False)
            steps += sum(int(i.get("env_steps", 1)) for ep in episodes for i in ep.get_infos()[1:])
        return steps

    return Bench(
        run,
        {
            "runner": "SingleAgentEnvRunner (local, num_env_runners=0)",
            "num_envs": sizes["envs"],
            "env": "Hopper-v5 in the action-chunk env (act_steps 4)",
            "decisions_per_call": decisions,
            "module": "DPPOModule, DDPM K=20, K'=10",
        },
    )


OUR_BENCHES = {
    "dppo_sample": _dppo_sample_bench,
    "dppo_update_10k": lambda s: _learner_bench("dppo", 2, s["pairs_10k"]),
    "dppo_update_50k": lambda s: _learner_bench("dppo", 1, s["pairs_50k"]),
    "dql_update": lambda s: _learner_bench("diffusion_ql", s["dql_steps"], s["dql_batch"]),
    "dql_action": _dql_action_bench,
    "bc": lambda s: _learner_bench("bc", s["bc_steps"], s["bc_batch"], {"hidden_dims": s["hidden"], "denoising_steps": s["denoising_steps"]}),
    "envrunner": _envrunner_bench,
}  # fmt: skip


# ------------------------------------------------------------------ worker side
class Server:
    """One side's benches, built on request: ``build``, ``time`` and ``drop`` a row."""

    def __init__(self, side: str) -> None:
        self.side, self.built, self.stubs = side, {}, []

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        row = req["row"]
        if req["cmd"] == "build":
            group = PEERS[row][0] if self.side == PEER else None
            make = OUR_BENCHES[row] if self.side == OURS else PEERS[row][1]
            with stubbed_imports(group) if group in STUBBABLE else nullcontext([]) as stubs:
                self.built[row] = make(req["sizes"])
            self.stubs += [s for s in stubs if s not in self.stubs]
            return {"config": self.built[row].config, "stubs": self.stubs}
        if req["cmd"] == "drop":
            self.built.pop(row, None)
            return {}
        t0, c0 = time.perf_counter(), time.process_time()
        units = self.built[row].run(req["calls"])
        return {"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0, "units": units}


def worker(root: str, side: str) -> None:
    """Serve JSON-line requests on stdin (see :class:`Server`)."""
    import_from(root)
    import torch

    torch.set_num_threads(1)
    server = Server(side)
    print(json.dumps({"package": root}), flush=True)
    for line in sys.stdin:
        print(json.dumps(server.handle(json.loads(line))), flush=True)


class LocalSide:
    """A side served in this process (``--in-process``: tests and debugging)."""

    def __init__(self, label: str, side: str, root: str) -> None:
        if root not in sys.path:
            sys.path.insert(0, root)
        self.label, self.package, self.server = label, root, Server(side)

    def ask(self, **req: Any) -> dict[str, Any]:
        return self.server.handle(req)

    def close(self) -> None:
        self.server.built.clear()


# ------------------------------------------------------------------ parent side
def resolve_references(args: argparse.Namespace, rows: list[str], tmp: Path) -> dict[str, Any]:
    """Per reference the rows need: its export (``dir``, ``commit``, ...) or, when it is
    missing, ``{"missing": reason}`` (said in one line; its rows measure ours only)."""
    refs: dict[str, Any] = {}
    for name in sorted({PEERS[r][0] for r in rows} & set(DEFAULT_REFS)):
        source = Path(getattr(args, f"{name}_ref")).expanduser()
        info = export_reference(name, source, tmp / name) if source.exists() else None
        if info is None:
            why = f"{source} is not a mirror, bare repo or checkout of it"
            refs[name] = {"missing": why, "source": str(source)}
            named = ", ".join(r for r in rows if PEERS[r][0] == name)
            print(f"performance: reference {name} missing ({why}; pass --{name}-ref DIR): "
                  f"measuring ours only for {named}", flush=True)  # fmt: skip
        else:
            refs[name] = info
    return refs


def open_sides(rows: list[str], refs: dict[str, Any], in_process: bool) -> dict[str, Any]:
    """The worker of ours and of each peer group the rows need (None: reference missing)."""

    def side(label: str, kind: str, root: str):
        if in_process:
            return LocalSide(label, kind, root)
        return Tree(label, __file__, Path(root), "--side", kind, timeout=300)

    sides: dict[str, Any] = {OURS: side(OURS, OURS, str(ROOT))}
    for group in {PEERS[r][0] for r in rows}:
        ref = refs.get(group, {"dir": str(ROOT)})
        sides[group] = None if "missing" in ref else side(f"peer {group}", PEER, ref["dir"])
    return sides


def measure_row(row: str, ours: Any, peer: Any, sizes: dict, rounds: int, target_s: float) -> dict:
    """Build the row on both sides, size each timing to about ``target_s`` CPU seconds,
    then ``rounds`` interleaved timings (ours first in even rounds, the peer first in odd
    ones); returns per side the timings, the configs and the calls per timing."""
    sides = {OURS: ours, PEER: peer} if peer is not None else {OURS: ours}
    out: dict[str, Any] = {"config": {}, "calls": {}, "timings": {s: [] for s in sides}}
    for name, side in sides.items():
        built = side.ask(cmd="build", row=row, sizes=sizes)
        out["config"][name] = built["config"]
        if built["stubs"]:
            out["stubs"] = built["stubs"]
        warm = side.ask(cmd="time", row=row, calls=1)
        out["calls"][name] = max(1, round(target_s / max(warm["cpu"], 1e-9)))
    order = list(sides)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            out["timings"][name].append(
                sides[name].ask(cmd="time", row=row, calls=out["calls"][name])
            )
    for side in sides.values():
        side.ask(cmd="drop", row=row)
    out["load_average"] = load_average()
    return out


def row_figures(row: str, m: dict) -> dict[str, Any]:
    """Medians of units per CPU-second and per wall-second of each side, and the ratios
    ours / peer (of the medians, and the median of the per-round ratios)."""
    rate = {s: [t["units"] / t["cpu"] for t in ts] for s, ts in m["timings"].items()}
    wall = {s: [t["units"] / t["wall"] for t in ts] for s, ts in m["timings"].items()}
    f: dict[str, Any] = {"unit": ROWS[row][0], "ours_per_cpu_s": statistics.median(rate[OURS]),
                         "ours_per_wall_s": statistics.median(wall[OURS])}  # fmt: skip
    if PEER not in rate:
        return f
    f["peer_per_cpu_s"] = statistics.median(rate[PEER])
    f["peer_per_wall_s"] = statistics.median(wall[PEER])
    f["ratio"] = f["ours_per_cpu_s"] / f["peer_per_cpu_s"]
    f["ratio_per_round_median"] = statistics.median(o / p for o, p in zip(rate[OURS], rate[PEER]))
    f["wall_ratio"] = f["ours_per_wall_s"] / f["peer_per_wall_s"]
    if row in TARGETS:
        f["target"] = TARGETS[row]
        f["target_met"] = f["ratio"] >= TARGETS[row]
    return f


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(path: Path) -> str:
    """The side-by-side table of ``docs/performance.md``, rebuilt from a result file."""
    r = json.loads(Path(path).read_text())
    v, f = r["versions"], r["figures"]
    refs = "; ".join(
        f"{name}: {ref['missing']}" if "missing" in ref
        else f"{name} = {ref['source']} at {(ref.get('commit') or 'checkout')[:7]}"
        for name, ref in r["references"].items()
    ) or "none needed"  # fmt: skip
    stubs = sorted({s for m in r["series"].values() for s in m.get("stubs", [])})
    lines = [
        f"Measured by `{r['command']}` on {r['machine']} (torch {v.get('torch')}, "
        f"ray {v.get('ray')}, python {v.get('python')}, git {v.get('git_sha')}); torch 1 "
        f"thread, {r['rounds']} interleaved rounds per row; load average "
        f"{f['load_average_start']} at the start, {f['load_average_end']} at the end "
        f"(shared machine). References: {refs}; stubbed imports (never called): "
        f"{', '.join(stubs) or 'none'}."
        + (" SMOKE SIZES: a plumbing check, not a figure." if r.get("smoke") else ""),
        "",
        "| row | unit | ours /CPU-s | peer /CPU-s | ours ÷ peer | per-round median "
        "| wall ratio | issue target | ours | peer / ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, g in f["rows"].items():
        target = g.get("target")
        met = (
            ""
            if target is None or "ratio" not in g
            else (" (met)" if g["target_met"] else " (not met)")
        )
        lines.append(
            f"| `{row}` | {g['unit']} | {_fmt(g['ours_per_cpu_s'])} "
            f"| {_fmt(g.get('peer_per_cpu_s')) if 'ratio' in g else g.get('peer', '–')} "
            f"| {_fmt(g.get('ratio'))} | {_fmt(g.get('ratio_per_round_median'))} "
            f"| {_fmt(g.get('wall_ratio'))} | {f'≥ {target}×{met}' if target else '–'} "
            f"| {ROWS[row][1]} | {ROWS[row][2]} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", help=f"comma-separated, default all: {','.join(ROWS)}")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row")
    p.add_argument("--target-seconds", type=float, default=0.5, help="CPU-s per timing")
    p.add_argument("--dppo-ref", default=str(DEFAULT_REFS["dppo"]), metavar="DIR_OR_MIRROR")
    p.add_argument("--dql-ref", default=str(DEFAULT_REFS["dql"]), metavar="DIR_OR_MIRROR")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing only")
    p.add_argument("--name", default="performance", help="result file benchmarks/results/NAME.json")
    p.add_argument("--results-dir", type=Path, help="write the result there instead")
    p.add_argument("--in-process", action="store_true", help="no worker processes (tests)")
    p.add_argument("--markdown", type=Path, metavar="RESULT_JSON", help="only print its table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=[OURS, PEER], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rows = args.rows.split(",") if args.rows else list(ROWS)
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"unknown row(s) {','.join(bad)}: pick from {','.join(ROWS)}")
    if args.rounds < 1 or args.target_seconds <= 0:
        p.error("--rounds must be >= 1 and --target-seconds > 0")
    if not args.name.startswith("performance"):
        p.error(f"--name {args.name!r} must start with 'performance' (results/performance*.json)")
    args.rows = rows
    return args


def run(args: argparse.Namespace) -> Path:
    """Measure the rows, write the result file, print its table; returns its path."""
    sizes = SMOKE if args.smoke else SIZES
    load_start = load_average()
    print(f"load average at the start: {load_start} ({os.cpu_count()} cores)", flush=True)
    figures, series = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        refs = resolve_references(args, args.rows, Path(tmp))
        sides = open_sides(args.rows, refs, args.in_process)
        try:
            for row in args.rows:
                group = PEERS[row][0]
                m = measure_row(
                    row, sides[OURS], sides[group], sizes, args.rounds, args.target_seconds
                )
                series[row], figures[row] = m, row_figures(row, m)
                if sides[group] is None:
                    figures[row]["peer"] = f"reference missing ({refs[group]['missing']})"
                g = figures[row]
                print(f"{row}: ours {_fmt(g['ours_per_cpu_s'])} {g['unit']}/CPU-s, peer "
                      f"{_fmt(g.get('peer_per_cpu_s'))}, ratio {_fmt(g.get('ratio'))}; "
                      f"load {m['load_average']}", flush=True)  # fmt: skip
        finally:
            for side in sides.values():
                if side is not None:
                    side.close()
    if args.results_dir:
        common.RESULTS_DIR = args.results_dir
    path = write_result(
        args.name,
        {"rows": figures, "load_average_start": load_start, "load_average_end": load_average()},
        series,
        references={k: {x: y for x, y in v.items() if x != "dir"} for k, v in refs.items()},
        rounds=args.rounds, target_seconds=args.target_seconds, sizes=sizes, smoke=args.smoke,
        torch_threads=1, in_process=args.in_process,
    )  # fmt: skip
    print(markdown(path))
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker, args.side)
    if args.markdown:
        return print(markdown(args.markdown))
    return run(args)


if __name__ == "__main__":
    main()
