"""Benchmark: gradient steps per second of the learners, current code against a baseline
checkout, side by side, through RLlib's ``Learner.update`` as the algorithms call it.

Cases (Hopper dims: Do 11, Da 3):

* ``bc``: diffusion BC (``DiffusionBCTorchLearner``), batch 256, Ta 4, K 20, MLP 3×512
  Mish; 20 gradient steps per ``update()``;
* ``diffusion_ql``, ``idql``, ``dac``, ``fql``: the offline Q-learners with their
  default networks and batch 256 (built by ``build_offline_config`` as ``rllib-diffusion
  offline`` does); 10 gradient steps per ``update()``;
* ``dppo``: the DPPO learner on 20,000 (env step, denoising step) pairs of random chains,
  minibatch 10,000 (its default), one epoch: 2 gradient steps per ``update()``;
  the figure is pairs per second.

Each ``update()`` gets one batch of ``steps × batch`` rows (numpy, as the offline data
iterator yields them) and slices it into minibatches (RLlib's ``MiniBatchCyclicIterator``),
reduces the metrics at the end, as in an iteration. The modules' gradient-step counters
start at ``STEADY_STATE_STEP``, so EMA updates run at their steady-state rate (every
``ema_update_every`` steps), not at the every-step copy of the first ``ema_start`` steps. Each code tree runs in its own worker
process (its root first on ``sys.path``, the editable-install finder removed, torch on 1
thread); the parent alternates the order of the trees each round. CPU time of the worker
is the primary figure (the machine is shared); wall time is stored too. Before timing,
each case is built in both trees from the same seed and trained for 2 ``update()`` calls
on the same batch: ``max_param_diff`` is the largest absolute difference of any weight
afterwards (0 when the math is bit-identical).

Example (``git worktree add /tmp/perf_base <commit before the change>`` first)::

    OMP_NUM_THREADS=1 python benchmarks/learner_speed.py --baseline /tmp/perf_base
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Tree, git_sha, import_from, load_average, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OBS_DIM, ACTION_DIM = 11, 3
MID = "default_policy"
#: Gradient-step counters start here, past every EMA warm-up (``ema_start`` ≤ 1000), so
#: the EMA/target updates run at the rate of most of a long run.
STEADY_STATE_STEP = 10_000
#: case -> (gradient steps per update(), rows per gradient step, unit per row)
CASES = {
    "bc": (20, 256, "gradient steps"),
    "diffusion_ql": (10, 256, "gradient steps"),
    "idql": (10, 256, "gradient steps"),
    "dac": (10, 256, "gradient steps"),
    "fql": (10, 256, "gradient steps"),
    "dppo": (2, 10_000, "pairs"),
}


# ------------------------------------------------------------------ worker side
def _precision(precision: str) -> dict:
    """``training()`` args of ``precision`` (none for fp32: a baseline tree may predate
    the knob)."""
    return {} if precision == "fp32" else {"precision": precision}


def _bc_learner(batch: int = 256, precision: str = "fp32", **policy):
    """The BC learner (``policy``: ``DiffusionPolicyConfig`` fields other than the dims)."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    pol = DiffusionPolicyConfig(obs_dim=OBS_DIM, action_dim=ACTION_DIM, **policy)
    obs_space, act_space = chunk_spaces(OBS_DIM, pol.horizon, ACTION_DIM)
    config = (
        DiffusionBCConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(train_batch_size_per_learner=batch, **_precision(precision))
        .rl_module(model_config=pol.to_dict())
    )
    return config.build_learner(), (pol.horizon * ACTION_DIM,)


def _offline_q_learner(algo: str, precision: str = "fp32"):
    from rllib_diffusion.algorithms.diffusion_ql import OfflineSettings
    from rllib_diffusion.algorithms.diffusion_ql.train import build_offline_config

    settings = OfflineSettings(dataset="unused", algo=algo, batch_size=256)
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS_DIM, ACTION_DIM)
    return config.training(**_precision(precision)).build_learner(), (ACTION_DIM,)


def _dppo_learner(**training):
    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    pol = DiffusionPolicyConfig(obs_dim=OBS_DIM, action_dim=ACTION_DIM)
    obs_space, act_space = chunk_spaces(OBS_DIM, pol.horizon, ACTION_DIM)
    config = (
        DPPOConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(**training)
        .rl_module(model_config=DPPOModelConfig(policy=pol.to_dict()).to_dict())
    )
    return config.build_learner(), (pol.horizon, ACTION_DIM)


def _batch(case: str, act_shape: tuple[int, ...], rows: int, seed: int = 1):
    """One ``MultiAgentBatch`` of ``rows`` random rows (numpy) for ``case``."""
    import numpy as np
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    rng = np.random.default_rng(seed)
    f32 = np.float32
    cols = {
        Columns.OBS: rng.standard_normal((rows, OBS_DIM)).astype(f32),
        Columns.ACTIONS: rng.uniform(-1, 1, (rows, *act_shape)).astype(f32),
    }
    if case == "dppo":
        from rllib_diffusion.algorithms.dppo.dppo_connectors import (
            DENOISE_K,
            OLD_LOGP,
            X_NEXT,
            X_PREV,
        )

        cols[X_PREV] = rng.standard_normal((rows, *act_shape)).astype(f32)
        cols[X_NEXT] = rng.standard_normal((rows, *act_shape)).astype(f32)
        cols[DENOISE_K] = rng.integers(0, 10, rows)
        cols[OLD_LOGP] = rng.standard_normal(rows).astype(f32)
        cols[Postprocessing.ADVANTAGES] = rng.standard_normal(rows).astype(f32)
        cols[Postprocessing.VALUE_TARGETS] = rng.standard_normal(rows).astype(f32)
    elif case != "bc":
        cols[Columns.REWARDS] = rng.standard_normal(rows).astype(f32)
        cols[Columns.NEXT_OBS] = rng.standard_normal((rows, OBS_DIM)).astype(f32)
        cols[Columns.TERMINATEDS] = rng.uniform(size=rows) > 0.9
    return MultiAgentBatch({MID: SampleBatch(cols)}, env_steps=rows)


def _dppo_chains(module, batch) -> None:
    """Replace the random chains of a DPPO batch by the module's own fine-tuned chains of
    its observations (one pair per (state, step); ratios start at 1, as after sampling)."""
    import torch
    from ray.rllib.core.columns import Columns

    from rllib_diffusion.algorithms.dppo.dppo_connectors import (
        DENOISE_K,
        OLD_LOGP,
        X_NEXT,
        X_PREV,
    )

    cols = batch.policy_batches[MID]
    rows = len(cols[Columns.OBS])
    with torch.no_grad():
        obs = torch.as_tensor(cols[Columns.OBS][:: module.ratio_steps])
        out = module.sample(obs, deterministic=False)
    n, k_ft = out["logp"].shape
    chain = out["chain"]
    cols[Columns.OBS] = obs.repeat_interleave(k_ft, 0).numpy()[:rows]
    cols[X_PREV] = chain[:, :-1].reshape(n * k_ft, *chain.shape[2:]).numpy()[:rows]
    cols[X_NEXT] = chain[:, 1:].reshape(n * k_ft, *chain.shape[2:]).numpy()[:rows]
    cols[DENOISE_K] = torch.arange(k_ft).repeat(n).numpy()[:rows]
    cols[OLD_LOGP] = out["logp"].reshape(-1).numpy()[:rows]


class Case:
    """A built learner of one case and its batch (``steps``/``rows``: other than the
    case's gradient steps per ``update()`` and rows per step; ``policy``: BC's policy
    fields, see ``_bc_learner``; ``precision``: the learners' ``precision`` knob)."""

    def __init__(
        self,
        case: str,
        steps: int | None = None,
        rows: int | None = None,
        policy: dict | None = None,
        precision: str = "fp32",
    ) -> None:
        import torch

        torch.manual_seed(0)
        self.steps, self.rows = steps or CASES[case][0], rows or CASES[case][1]
        if case == "bc":
            self.learner, act_shape = _bc_learner(self.rows, precision, **(policy or {}))
        elif case == "dppo":
            self.learner, act_shape = _dppo_learner(**_precision(precision))
        else:
            self.learner, act_shape = _offline_q_learner(case, precision)
        self.batch = _batch(case, act_shape, self.steps * self.rows)
        module = self.learner.module[MID].unwrapped()
        for counter in ("ema_step", "train_step"):  # EMA at its steady-state rate
            if hasattr(module, counter):
                getattr(module, counter).fill_(STEADY_STATE_STEP)
        if case == "dppo":
            _dppo_chains(self.learner.module[MID].unwrapped(), self.batch)

    def update(self) -> None:
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        self.learner.update(
            batch=self.batch.copy(),
            minibatch_size=self.rows,
            num_epochs=1,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0},
        )

    def params(self):
        import torch

        module = self.learner.module[MID].unwrapped()
        return torch.cat([p.detach().reshape(-1) for p in module.state_dict().values()
                          if p.is_floating_point()])  # fmt: skip


def inference_only_dql(num_states: int = 64):
    """``(module, states)``: the Diffusion-QL module built ``inference_only`` (as on
    EnvRunners: the EMA actor and the target critics) from the learner's config, and
    ``num_states`` fixed random Hopper states ``(N, 11)`` float32."""
    import numpy as np

    trained = Case("diffusion_ql", steps=1, rows=1).learner.module[MID].unwrapped()
    module = type(trained)(
        observation_space=trained.observation_space, action_space=trained.action_space,
        inference_only=True, model_config=trained.model_config,
    )  # fmt: skip
    states = np.random.default_rng(1).standard_normal((num_states, 11)).astype(np.float32)
    return module, states


def worker(root: str, precision: str = "fp32", rows: int | None = None) -> None:
    """Serve JSON-line requests on stdin: ``weights`` and ``time`` of a case, its learners
    built with the ``precision`` knob (``rows``: rows per gradient step other than the
    case's)."""
    import_from(root)
    import time

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import rllib_diffusion

    built: dict[str, Case] = {}
    print(json.dumps({"package": rllib_diffusion.__file__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        case = req["case"]
        if req["cmd"] == "weights":  # a fresh learner, 2 seeded updates, weights to a file
            c = Case(case, rows=rows, precision=precision)
            torch.manual_seed(3)
            for _ in range(2):
                c.update()
            np.save(req["path"], c.params().numpy())
            reply = {"n_params": int(c.params().numel())}
        else:
            if case not in built:
                built[case] = Case(case, rows=rows, precision=precision)
            c = built[case]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(req["calls"]):
                c.update()
            n = req["calls"] * c.steps
            reply = {"cpu": (time.process_time() - c0) / n, "wall": (time.perf_counter() - t0) / n}
        print(json.dumps(reply), flush=True)


# ------------------------------------------------------------------ parent side
def weight_diffs(trees: list[Tree], cases: list[str]) -> dict:
    """Per case: the largest |Δθ| between the trees after 2 seeded updates."""
    import numpy as np

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            vecs = []
            for t in trees:
                path = os.path.join(tmp, f"{case}_{t.label}.npy")
                t.ask(cmd="weights", case=case, path=path)
                vecs.append(np.load(path))
            if len(vecs) == 2 and vecs[0].shape == vecs[1].shape:
                out[case] = float(np.abs(vecs[0] - vecs[1]).max())
            elif len(vecs) == 2:
                out[case] = None  # the state dicts differ in layout
    return out


def measure(trees: list[Tree], cases: list[str], rounds: int, target_s: float) -> dict:
    """Per case and tree, CPU and wall seconds per gradient step in each round (the order
    of the trees alternates)."""
    calls = {}
    for case in cases:  # build, warm up, and size each timing to about target_s of CPU
        per_step = max(t.ask(cmd="time", case=case, calls=1)["cpu"] for t in trees)
        calls[case] = max(1, round(target_s / (per_step * CASES[case][0])))
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
        "cpu_seconds_per_step": cpu,
        "wall_seconds_per_step": wall,
        "update_calls_per_timing": calls,
        "load_per_round": loads,
    }


def summarize(series: dict, diffs: dict) -> dict:
    """Per case: rows (gradient steps, or DPPO pairs) per CPU-second and per wall-second
    of each tree (medians), and current ÷ baseline (ratio of medians, median of the
    per-round ratios, wall ratio)."""
    figures = {}
    for case, by_tree in series["cpu_seconds_per_step"].items():
        per = CASES[case][1] if case == "dppo" else 1
        w = series["wall_seconds_per_step"][case]
        cur = by_tree["current"]
        figures[f"{case}_per_cpu_s"] = per / statistics.median(cur)
        figures[f"{case}_per_wall_s"] = per / statistics.median(w["current"])
        if "baseline" not in by_tree:
            continue
        base = by_tree["baseline"]
        figures[f"{case}_baseline_per_cpu_s"] = per / statistics.median(base)
        figures[f"{case}_baseline_per_wall_s"] = per / statistics.median(w["baseline"])
        figures[f"{case}_speedup"] = statistics.median(base) / statistics.median(cur)
        figures[f"{case}_speedup_per_round_median"] = statistics.median(
            b / c for b, c in zip(base, cur)
        )
        figures[f"{case}_wall_speedup"] = statistics.median(w["baseline"]) / statistics.median(
            w["current"]
        )
        figures[f"{case}_max_param_diff"] = diffs.get(case)
    return figures


def _at(result: dict, key: str) -> str:
    """`` at bf16`` when the result names a precision other than fp32."""
    value = result.get(key) or "fp32"
    return "" if result.get("precision", "fp32") == "fp32" else f" at {value}"


def markdown(path: Path) -> str:
    """The table of ``docs/performance.md``, rebuilt from a stored result file."""
    r = json.loads(path.read_text())
    f, v = r["figures"], r["versions"]
    rows = f"{r['rows_per_step']} rows per gradient step; " if r.get("rows_per_step") else ""
    lines = [
        f"Measured by `{r['command']}` on {r['machine']} (torch {v.get('torch')}, "
        f"ray {v.get('ray')}, python {v.get('python')}); current = git {v.get('git_sha')} + "
        f"working tree{_at(r, 'precision')}, baseline = git {r.get('baseline_git_sha')}"
        f"{_at(r, 'baseline_precision')}; "
        f"{rows}torch 1 thread, "
        f"{len(r['series']['load_per_round'])} interleaved rounds; load average "
        f"{f['load_average_start']} at the start, {f['load_average_end']} at the end.",
        "",
        "| case | unit | baseline /CPU-s | current /CPU-s | speed-up (medians) "
        "| speed-up (per-round median) | baseline /wall-s | current /wall-s | wall speed-up "
        "| max \\|Δθ\\| after 2 updates |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in r["series"]["cpu_seconds_per_step"]:
        g = lambda k, c=case: f.get(f"{c}_{k}")  # noqa: E731
        diff = g("max_param_diff")
        lines.append(
            f"| `{case}` | {CASES[case][2]} | {g('baseline_per_cpu_s'):.1f} "
            f"| {g('per_cpu_s'):.1f} | {g('speedup'):.3f} "
            f"| {g('speedup_per_round_median'):.3f} | {g('baseline_per_wall_s'):.1f} "
            f"| {g('per_wall_s'):.1f} | {g('wall_speedup'):.2f} "
            f"| {'n/a' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--baseline", type=Path, help="root of a checkout to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target-seconds", type=float, default=2.0, help="CPU-s per timing")
    p.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    p.add_argument("--name", default="learner_speed")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the current tree's learners' precision knob (the baseline's stays fp32); "
        "with --baseline . this measures the knob itself",
    )
    p.add_argument(
        "--markdown", type=Path, metavar="RESULT_JSON", help="only print the docs table of a result"
    )
    p.add_argument("--rows", type=int, help="rows per gradient step (default: each case's)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.precision, args.rows)
    if args.markdown:
        return print(markdown(args.markdown))
    # DPPO refuses bf16 (docs/performance.md, "Mixed precision").
    cases = args.case or [c for c in CASES if args.precision == "fp32" or c != "dppo"]
    load_start = load_average()
    rows = ["--rows", str(args.rows)] if args.rows else []
    trees = [Tree("current", __file__, ROOT, "--precision", args.precision, *rows)]
    if args.baseline:
        trees.append(Tree("baseline", __file__, args.baseline.resolve(), *rows))
    for t in trees:
        print(f"{t.label}: rllib_diffusion from {t.package}", flush=True)
    diffs = weight_diffs(trees, cases)
    series = measure(trees, cases, args.rounds, args.target_seconds)
    for t in trees:
        t.close()
    figures = summarize(series, diffs)
    figures["load_average_start"] = load_start
    figures["load_average_end"] = load_average()
    path = write_result(
        args.name, figures, series, packages={t.label: t.package for t in trees},
        baseline=str(args.baseline) if args.baseline else None,
        baseline_git_sha=git_sha(args.baseline) if args.baseline else None,
        precision=args.precision, baseline_precision="fp32", rows_per_step=args.rows,
    )  # fmt: skip
    if args.baseline:
        print(markdown(path))
    else:
        print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
