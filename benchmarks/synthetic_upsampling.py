"""Benchmark (issue #16, a): SynthER upsampling of 10% of the Hopper-v5 medium data.

Stages (each skipped when its output exists, so the same command resumes; the result file
is rewritten after every stage with what has finished):

1. ``subset``: a fixed-seed ``--fraction`` of the EPISODES of ``--dataset``, written
   atomically as ``OUT/<stem>-<pct>pct.npz`` (a dataset every command reads).
2. ``generator``: ``rllib-diffusion synthesize`` trains the SynthER generator on the subset
   only and writes ``N_full − N_subset`` synthetic transitions (so that subset + synthetic
   has the full dataset's transition count) as the Minari id ``--synthetic-id`` under
   ``OUT/minari`` (``MINARI_DATASETS_PATH``).
3. Three offline arms with the SAME algorithm, networks, batch and gradient budget:
   ``full`` (all real data), ``subset`` (the subset alone), ``upsampled`` (subset +
   synthetic, every batch drawn from the union in proportion to its size: real ratio
   = N_subset / N_full rounded to whole rows of the batch).

Each arm's final checkpoint is evaluated by the offline run itself (``--eval-episodes``
deterministic episodes). Writes ``benchmarks/results/synthetic_upsampling_<tag>.json`` and
a PNG of the evaluation curves beside it. ``--parallel 2`` runs two stages at once
(``full`` needs no generator, so it runs beside it).

Example (the run reported in docs/synthetic.md; FQL with the settings of the README's
figure, see there why; ``--eval-every`` is rounded down to whole iterations: 2k steps)::

    python benchmarks/synthetic_upsampling.py --gradient-steps 10000 --eval-every 2500 \
        --hidden-dims 256 256 256 --generator-steps 10000 --ddim-steps 10 --parallel 2 \
        --variant readme_fql "--algo-args=--normalize-q-loss true --q-agg min --alpha 30"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("rllib-diffusion"))
#: Arm names, in the order they are reported.
FULL, SUBSET, UPSAMPLED = "full", "subset", "upsampled"
ARMS = (FULL, SUBSET, UPSAMPLED)
GENERATOR = "generator"


# ------------------------------------------------------------------- pure helpers
def select_episodes(num_episodes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``round(fraction × num_episodes)`` episodes (at least one), drawn
    without replacement by ``numpy.random.default_rng(seed)``: the same arguments give the
    same episodes."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}; e.g. --fraction 0.1.")
    k = max(1, int(round(fraction * num_episodes)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_episodes, size=k, replace=False))


def union_real_ratio(n_real: int, n_total: int, batch_size: int) -> float:
    """Real share of a batch drawn uniformly from a union of ``n_real`` real rows among
    ``n_total``: ``round(batch × n_real / n_total) / batch`` (a whole number of rows, at
    least one real and one synthetic row)."""
    rows = int(round(batch_size * n_real / n_total))
    return min(max(rows, 1), batch_size - 1) / batch_size


def write_subset(dataset_path: str, fraction: float, seed: int, out: Path) -> dict[str, Any]:
    """Write the episode subset of ``dataset_path`` as ``out`` (npz, atomic); returns its
    summary with the chosen episode indices."""
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.episodes import EpisodeDataset
    from rllib_diffusion.data.npz_io import save_npz

    full = load_dataset(dataset_path)
    idx = select_episodes(full.num_episodes, fraction, seed)
    sub = EpisodeDataset(
        episodes=[full.episodes[i] for i in idx],
        env_id=full.env_id,
        name=out.stem,
        ref_min_score=full.ref_min_score,
        ref_max_score=full.ref_max_score,
    )
    save_npz(sub, out)
    return {
        "path": str(out),
        "episode_indices": idx.tolist(),
        "subset": sub.summary(),
        "full": full.summary(),
    }


# ------------------------------------------------------------------- stage commands
@dataclass
class Plan:
    """Paths, commands and dependencies of every stage of one benchmark run."""

    args: argparse.Namespace
    out: Path
    subset_path: Path
    n_full: int = 0
    n_subset: int = 0
    commands: dict[str, list[str]] = field(default_factory=dict)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        """``OUT/<name>``; an arm of a ``--variant`` V: ``OUT/<name>_V``."""
        variant = self.args.variant if name in ARMS and self.args.variant else ""
        return self.out / (f"{name}_{variant}" if variant else name)

    def summary_path(self, name: str) -> Path | None:
        """The finished stage's summary file, or None."""
        d = self.stage_dir(name)
        names = ("synthesize.json", "sample/synthesize.json") if name == GENERATOR else ()
        for path in [d / n for n in names] or [d / "result.json"]:
            if path.exists():
                return path
        return None


def generator_command(p: Plan) -> list[str]:
    """``rllib-diffusion synthesize`` on the subset (resumes training, or samples from a
    finished generator)."""
    a, d = p.args, p.stage_dir(GENERATOR)
    cmd = [CLI, "synthesize", "--dataset", str(p.subset_path), "--out", str(d)]
    cmd += ["--dataset-id", a.synthetic_id, "--num-transitions", str(p.n_full - p.n_subset)]
    cmd += ["--seed", str(a.seed), "--sample-batch-size", str(a.sample_batch_size)]
    cmd += ["--terminals", a.terminals] if a.terminals else []
    if (d / "result.json").exists():  # trained earlier, interrupted while sampling
        cmd[cmd.index("--out") + 1] = str(d / "sample")
        return [*cmd, "--generator", str(d / "checkpoint"), "--overwrite"]
    cmd += ["--gradient-steps", str(a.generator_steps), "--steps-per-iteration", "500"]
    cmd += ["--checkpoint-interval", "4", "--ddim-steps", str(a.ddim_steps)]
    cmd += ["--width", str(a.generator_width), "--depth", str(a.generator_depth)]
    return [*cmd, "--resume"] if (d / "checkpoint").exists() else cmd


def arm_command(p: Plan, arm: str) -> list[str]:
    """``rllib-diffusion offline`` for one arm; the same flags in every arm but the data."""
    a, d = p.args, p.stage_dir(arm)
    data = a.dataset if arm == FULL else str(p.subset_path)
    cmd = [CLI, "offline", "--algo", a.algo, "--dataset", data, "--out", str(d)]
    cmd += ["--gradient-steps", str(a.gradient_steps), "--batch-size", str(a.batch_size)]
    cmd += ["--steps-per-iteration", str(a.steps_per_iteration), "--seed", str(a.seed)]
    cmd += ["--eval-interval", str(a.eval_every // a.steps_per_iteration)]
    cmd += ["--eval-episodes", str(a.eval_episodes), "--checkpoint-interval", "1"]
    if a.hidden_dims:
        cmd += ["--hidden-dims", *map(str, a.hidden_dims)]
    cmd += shlex.split(a.algo_args)
    if arm == UPSAMPLED:
        ratio = a.real_ratio or union_real_ratio(p.n_subset, p.n_full, a.batch_size)
        cmd += ["--synthetic-dataset", a.synthetic_id, "--real-ratio", repr(ratio)]
    return [*cmd, "--resume"] if (d / "checkpoint").exists() else cmd


def make_plan(args: argparse.Namespace) -> Plan:
    """Stage 1 (the subset, written unless it exists) and the commands of the others."""
    out = Path(args.out)
    stem = Path(args.dataset).stem
    p = Plan(args, out, out / f"{stem}-{round(100 * args.fraction)}pct.npz")
    info_path = out / "subset.json"
    if not info_path.exists():
        from rllib_diffusion.utils.io import write_json_atomic

        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            info_path, write_subset(args.dataset, args.fraction, args.subset_seed, p.subset_path)
        )
    info = json.loads(info_path.read_text())
    p.n_full = info["full"]["num_transitions"]
    p.n_subset = info["subset"]["num_transitions"]
    print(
        f"[upsampling] subset {info['subset']['num_episodes']}/{info['full']['num_episodes']} "
        f"episodes, {p.n_subset}/{p.n_full} transitions -> {p.subset_path}",
        flush=True,
    )
    p.commands[GENERATOR] = generator_command(p)
    p.deps = {GENERATOR: (), FULL: (), SUBSET: (), UPSAMPLED: (GENERATOR,)}
    for arm in ARMS:
        p.commands[arm] = arm_command(p, arm)
    return p


# ------------------------------------------------------------------------ running
def run_stages(p: Plan, names: list[str], parallel: int, on_done) -> None:
    """Run the unfinished stages as subprocesses, at most ``parallel`` at once, each after
    its dependencies; ``on_done(name)`` after each (stdout to ``OUT/<name>.log``)."""
    pending = [n for n in names if p.summary_path(n) is None]
    running: dict[str, subprocess.Popen] = {}
    while pending or running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"[upsampling] {name} exited with {proc.returncode}", flush=True)
                if proc.returncode != 0:
                    sys.exit(f"stage {name} failed; see {p.stage_dir(name).with_suffix('.log')}")
                on_done(name)
        ready = [n for n in pending if all(p.summary_path(d) for d in p.deps[n])]
        while ready and len(running) < parallel:
            name = ready.pop(0)
            pending.remove(name)
            print(f"[upsampling] start {name}: {' '.join(p.commands[name])}", flush=True)
            log = open(p.stage_dir(name).with_suffix(".log"), "a")  # noqa: SIM115 (kept open by the child)
            running[name] = subprocess.Popen(
                p.commands[name], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        time.sleep(5)


def arm_figures(p: Plan, arm: str) -> dict[str, Any]:
    """One finished arm's figures (format of ``benchmarks/offline.py``'s results)."""
    from offline import train_step_rate

    summary = json.loads(p.summary_path(arm).read_text())
    ev = summary["evaluation"]
    progress = summary["progress"]
    curve = [
        (x["gradient_steps"], x["eval_return_mean"]) for x in progress if "eval_return_mean" in x
    ]
    curve = [c for c in curve if c[0] < summary["gradient_steps"]]
    settings = summary["settings"]
    return {
        "return_mean": ev["episode_return_mean"],
        "return_std": ev["episode_return_std"],
        "eval_episodes": ev["num_episodes"],
        "normalized_score": ev.get("normalized_score"),
        "final_episode_returns": ev["episode_returns"],
        "real_transitions": summary["dataset"]["num_transitions"],
        "synthetic_transitions": p.n_full - p.n_subset if arm == UPSAMPLED else 0,
        "real_ratio": settings.get("real_ratio", 1.0),
        "dataset_return_mean": summary["dataset_return_mean"],
        "gradient_steps": summary["gradient_steps"],
        "train_seconds": summary["train_seconds"],
        "gradient_steps_per_second": train_step_rate(progress, p.args.steps_per_iteration),
        "eval_gradient_steps": [c[0] for c in curve] + [summary["gradient_steps"]],
        "eval_return_mean": [c[1] for c in curve] + [ev["episode_return_mean"]],
        "command": " ".join(p.commands[arm]).replace(CLI, "rllib-diffusion"),
    }


def generator_figures(p: Plan) -> dict[str, Any]:
    """Fidelity, sampling and writing figures of the generator stage."""
    from rllib_diffusion.algorithms.synther.synthesize import (
        RULE_TERMINALS_KEY,
        TERMINALS_KEY,
    )

    syn = json.loads(p.summary_path(GENERATOR).read_text())
    train = json.loads((p.stage_dir(GENERATOR) / "result.json").read_text())
    prov = syn["provenance"]
    labelling = {k: prov[k] for k in (TERMINALS_KEY, RULE_TERMINALS_KEY) if k in prov}
    return {
        **labelling,
        "fidelity": train["evaluation"],
        "gradient_steps": train["gradient_steps"],
        "train_seconds": train["train_seconds"],
        "model": syn["provenance"]["generator_model"],
        "num_transitions": syn["provenance"]["num_transitions"],
        "terminal_rate": syn["provenance"]["terminal_rate"],
        "sample_seconds": syn["sample_seconds"],
        "write_seconds": syn["write_seconds"],
        "dataset_id": syn["dataset_id"],
        "command": " ".join(p.commands[GENERATOR]).replace(CLI, "rllib-diffusion"),
    }


def report(p: Plan) -> Path:
    """Write the results file (and plot) from the stages finished so far."""
    subset = json.loads((p.out / "subset.json").read_text())
    figures: dict[str, Any] = {
        "algorithm": p.args.algo,
        "algo_args": p.args.algo_args,
        "hidden_dims": p.args.hidden_dims,
        "gradient_steps": p.args.gradient_steps,
        "batch_size": p.args.batch_size,
        "subset_episodes": subset["subset"]["num_episodes"],
        "subset_transitions": p.n_subset,
        "subset_return_mean": subset["subset"]["return_mean"],
        "full_transitions": p.n_full,
        "full_return_mean": subset["full"]["return_mean"],
        "upsampled_real_ratio": p.args.real_ratio
        or union_real_ratio(p.n_subset, p.n_full, p.args.batch_size),
        "finished": [n for n in (GENERATOR, *ARMS) if p.summary_path(n)],
    }
    if p.summary_path(GENERATOR):
        figures[GENERATOR] = generator_figures(p)
    for arm in ARMS:
        if p.summary_path(arm):
            figures[arm] = arm_figures(p, arm)
    name = result_name(p.args)
    path = write_result(
        name,
        figures,
        {"subset_episode_indices": subset["episode_indices"]},
        env_id=subset["full"]["env_id"],
        dataset=subset["full"],
        minari_datasets_path=os.environ["MINARI_DATASETS_PATH"],
    )
    plot(figures, path.with_suffix(".png"))
    print(f"[upsampling] wrote {path}", flush=True)
    return path


def plot(figures: dict[str, Any], path: Path) -> None:
    """Evaluation return against gradient steps, one line per finished arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = {FULL: "full real", SUBSET: "10% real", UPSAMPLED: "10% real + synthetic"}
    for arm in ARMS:
        if arm in figures:
            f = figures[arm]
            ax.plot(f["eval_gradient_steps"], f["eval_return_mean"], marker="o", label=labels[arm])
    ax.axhline(figures["full_return_mean"], color="grey", ls=":", label="data mean (full)")
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("eval return (mean)")
    ax.set_title(f"{figures['algorithm']} on Hopper-v5 medium: SynthER upsampling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def result_name(args: argparse.Namespace) -> str:
    """``synthetic_upsampling_<tag>[_<variant>]``."""
    return "_".join(["synthetic_upsampling", args.tag] + ([args.variant] if args.variant else []))


def markdown_table(figures: dict[str, Any]) -> str:
    """The docs table of the finished arms (``--print-table``; docs/synthetic.md)."""
    labels = {
        FULL: "full real data",
        SUBSET: f"{figures['subset_episodes']} episodes alone (10%)",
        UPSAMPLED: "10% + synthetic (to full size)",
    }
    steps = next((figures[a]["eval_gradient_steps"] for a in ARMS if a in figures), [])
    at = ", ".join(f"{x // 1000}k" for x in steps)
    rows = [
        "| arm | real / synthetic transitions | real share of a batch | return (mean ± std) "
        f"| normalised | eval return at {at} steps | mean of the last 4 | train time | steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        if arm not in figures:
            rows.append(f"| {labels[arm]} | not finished | | | | | | | |")
            continue
        f = figures[arm]
        curve = ", ".join(f"{r:,.0f}" for r in f["eval_return_mean"])
        rows.append(
            f"| {labels[arm]} | {f['real_transitions']:,} / {f['synthetic_transitions']:,} "
            f"| {f['real_ratio']:.3f} | {f['return_mean']:,.1f} ± {f['return_std']:,.1f} "
            f"| {f['normalized_score']:.1f} | {curve} | {np.mean(f['eval_return_mean'][-4:]):,.0f} "
            f"| {f['train_seconds'] / 60:.0f} min "
            f"| {f['gradient_steps_per_second']:.1f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="data/hopper-medium-v5-small.npz")
    p.add_argument("--tag", default="hopper_medium", help="result name suffix")
    p.add_argument("--out", default="runs/synthetic_upsampling")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the episodes kept")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--synthetic-id", default="local/hopper/synther-upsampling-v0")
    p.add_argument("--generator-steps", type=int, default=10_000)
    p.add_argument("--generator-width", type=int, default=512)
    p.add_argument("--generator-depth", type=int, default=4)
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--sample-batch-size", type=int, default=10_000)
    p.add_argument(
        "--terminals",
        help="passed on to `rllib-diffusion synthesize --terminals` (its --help lists the "
        "choices; default: synthesize's, SynthER's generated flag). A finished generator "
        "stage is not redone: give another choice its own --out and --tag",
    )
    p.add_argument(
        "--real-ratio",
        type=float,
        help="real share of every upsampled batch (default: the union's, N_subset / N_full; "
        "SynthER's online runs use 0.5)",
    )
    p.add_argument("--algo", default="fql")
    p.add_argument("--hidden-dims", type=int, nargs="+", help="default: the algorithm's")
    p.add_argument(
        "--algo-args", default="", help="more `offline` flags for every arm, e.g. '--alpha 30'"
    )
    p.add_argument(
        "--variant", default="", help="name of an --algo-args setting: arm dirs and result name"
    )
    p.add_argument("--gradient-steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps-per-iteration", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=5000, help="gradient steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", type=int, default=1, help="stages run at once")
    p.add_argument("--stages", nargs="+", default=[GENERATOR, *ARMS])
    p.add_argument(
        "--print-table", action="store_true", help="print the docs table of the results file"
    )
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    if args.print_table:
        path = ROOT / "benchmarks" / "results" / f"{result_name(args)}.json"
        print(markdown_table(json.loads(path.read_text())["figures"]))
        return
    os.environ.setdefault("MINARI_DATASETS_PATH", str(Path(args.out).resolve() / "minari"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    plan = make_plan(args)
    report(plan)
    run_stages(plan, list(args.stages), args.parallel, lambda _: report(plan))
    report(plan)


if __name__ == "__main__":
    main()
