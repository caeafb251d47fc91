"""Benchmark record of the datasets made here: runs one ``rllib-diffusion collect`` or
``concat-datasets`` command (in this process, exactly as typed after ``--``) and adds its
figures to ``benchmarks/results/datasets_<task>.json``: episodes, transitions, return
mean ± std, normalised score, wall time and the load average before and after (the
machine is shared), plus the policies it came from. ``--behavior RUN_DIR`` instead
records a ``train-behavior`` run (its return curve and checkpoints); ``--docs`` rebuilds
the table of datasets in ``docs/datasets.md`` from those files.

Examples::

    python benchmarks/datasets.py --task walker2d -- collect --env Walker2d-v5 \\
        --dataset-id rllib-diffusion/walker2d/medium-replay-v0 \\
        --policy-sequence runs/behavior/walker2d --until-return 1500 --num-steps 1000000
    python benchmarks/datasets.py --task hopper --behavior runs/behavior/hopper
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, git_sha, load_average, write_result  # noqa: E402

#: Summary keys copied into the result (as the command's ``--json`` names them).
FIGURES = (
    "episodes",
    "transitions",
    "return_mean",
    "return_std",
    "normalized_score_mean",
    "ref_min_score",
    "ref_max_score",
    "seconds",
)


def _stages(dataset_id: str) -> list[dict[str, Any]] | None:
    """Where the data came from: per policy (checkpoint, training return, size) or per
    source of a concatenation."""
    from rllib_diffusion.collect.collect import PROVENANCE_KEY
    from rllib_diffusion.data.minari_io import read_extra_metadata

    prov = read_extra_metadata(dataset_id, PROVENANCE_KEY) or {}
    keep = ("policy", "source", "iteration", "env_steps", "training_return", "episodes",
            "transitions", "return_mean")  # fmt: skip
    rows = prov.get("stages") or prov.get("sources") or []
    return [{k: row[k] for k in keep if k in row} for row in rows]


def run_command(argv: list[str]) -> tuple[dict[str, Any], str]:
    """Run ``rllib-diffusion <argv>`` here; its figures, wall time and load averages."""
    from rllib_diffusion.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        load_before, t0 = load_average(), time.perf_counter()
        if main([*argv, "--json", str(out)]) != 0:
            raise SystemExit(f"`rllib-diffusion {shlex.join(argv)}` failed")
        wall, load_after = time.perf_counter() - t0, load_average()
        summary = json.loads(out.read_text())
    return {
        "command": f"rllib-diffusion {shlex.join(argv)}",
        "commit": git_sha(Path(__file__).resolve().parents[1]),
        **{k: summary.get(k) for k in FIGURES},
        "wall_seconds": wall,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "stages": _stages(summary["dataset_id"]),
    }, summary["dataset_id"]


def behavior_figures(run_dir: Path) -> dict[str, Any]:
    """A train-behavior run: final return, budget, checkpoints (name, env steps, return)."""
    progress = [json.loads(x) for x in (run_dir / "progress.jsonl").read_text().splitlines()]
    index = json.loads((run_dir / "checkpoints.json").read_text())
    last = progress[-1]
    return {
        "run_dir": str(run_dir),
        "env_id": index["env_id"],
        "iterations": last["iteration"],
        "env_steps": last["env_steps"],
        "minutes": last["minutes"],
        "final_training_return": last["return"],
        "best_checkpoint": max(index["checkpoints"], key=lambda c: c["return"]),
        "settings": index["settings"],
        "checkpoints": [
            {"name": Path(c["path"]).name, "env_steps": c["env_steps"], "return": c["return"]}
            for c in index["checkpoints"]
        ],
    }


#: docs/datasets.md lines between these markers are rebuilt by ``--docs``.
DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
BEGIN, END = "<!-- datasets table: benchmarks/datasets.py --docs -->", "<!-- end datasets table -->"


def _source_text(stages: list[dict[str, Any]]) -> str:
    if stages and "source" in stages[0]:
        return " + ".join(f"`{s['source']}`" for s in stages)
    if len(stages) == 1:
        s = stages[0]
        ret = s.get("training_return")
        return f"{s['policy']}" + (f" (training return {ret:,.0f})" if ret is not None else "")
    first, last = stages[0], stages[-1]
    return (
        f"{len(stages)} checkpoints in training order, {first['policy']} … {last['policy']} "
        f"(training return {first['training_return']:,.0f} → {last['training_return']:,.0f})"
    )


def docs_table() -> list[str]:
    """One row per dataset recorded in ``benchmarks/results/datasets_*.json``."""
    rows = [
        "| dataset | made from | episodes | transitions | return | normalised | wall | load "
        "(1-min, before → after) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS_DIR.glob("datasets_*.json")):
        for dataset_id, e in json.loads(path.read_text())["figures"].get("datasets", {}).items():
            score = e.get("normalized_score_mean")
            rows.append(
                f"| `{dataset_id}` | {_source_text(e.get('stages') or [])} | {e['episodes']:,} | "
                f"{e['transitions']:,} | {e['return_mean']:,.0f} ± {e['return_std']:,.0f} | "
                f"{'' if score is None else f'{score:.1f}'} | {e['wall_seconds'] / 60:.1f} min | "
                f"{e['load_average_before'][0]} → {e['load_average_after'][0]} |"
            )
    return rows


def write_docs() -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(head + BEGIN + "\n" + "\n".join(docs_table()) + "\n" + END + tail)
    tmp.replace(DOCS)
    print(f"wrote {DOCS}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", help="hopper | walker2d | halfcheetah (file name)")
    p.add_argument("--docs", action="store_true", help="rebuild the table in docs/datasets.md")
    p.add_argument("--behavior", type=Path, help="record this train-behavior run instead")
    p.add_argument("--note", default="", help="stored with the entry (e.g. what else ran)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- collect|concat-datasets ...")
    args = p.parse_args()
    if args.docs:
        return write_docs()
    if not args.task:
        p.error("--task is required (unless --docs)")
    name = f"datasets_{args.task}"
    path = RESULTS_DIR / f"{name}.json"
    figures = json.loads(path.read_text())["figures"] if path.is_file() else {}
    if args.behavior is not None:
        figures.setdefault("behavior", {})[args.behavior.name] = behavior_figures(
            args.behavior.resolve()
        )
    else:
        argv = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not argv or argv[0] not in ("collect", "concat-datasets"):
            p.error("give `-- collect ...` or `-- concat-datasets ...` (or --behavior)")
        entry, dataset_id = run_command(argv)
        entry["note"] = args.note
        figures.setdefault("datasets", {})[dataset_id] = entry
        print(json.dumps(entry, indent=1, default=str))
    print(f"wrote {write_result(name, figures)}")


if __name__ == "__main__":
    main()
