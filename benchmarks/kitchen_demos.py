"""Gather the scripted Franka Kitchen figures into one result JSON.

Reads what the runs wrote (nothing is re-run): the collection summaries of
``python -m rllib_diffusion.collect.kitchen_demos ... --json <file>``, the ``result.json``
of ``rllib-diffusion pretrain`` runs and the ``--json`` of ``rllib-diffusion evaluate``::

    python benchmarks/kitchen_demos.py \
        --collect runs/kitchen/collect_microwave.json runs/kitchen/collect_all3.json \
        --pretrain runs/kitchen/bc_microwave runs/kitchen/bc_all3 \
        --evaluate runs/kitchen/eval_microwave.json \
        --out benchmarks/results/kitchen_scripted_demos.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_EVAL_KEYS = ("num_episodes", "success_rate", "episode_return_mean", "env_steps", "seconds")


def _read(path: str) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        file = file / "result.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read {file}: {err}") from None


def _pretrain_row(path: str) -> dict[str, Any]:
    """The figures of one pretraining run (its settings, time and final evaluation)."""
    run = _read(path)
    settings = run.get("settings", {})
    evaluation = run.get("evaluation") or {}
    return {
        "run": path,
        "dataset": settings.get("dataset"),
        "env_kwargs": run.get("policy_config", {}).get("env_kwargs"),
        "gradient_steps": run.get("gradient_steps"),
        "horizon": settings.get("horizon"),
        "act_steps": settings.get("act_steps"),
        "train_seconds": run.get("train_seconds"),
        "evaluation": {k: evaluation.get(k) for k in _EVAL_KEYS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", nargs="*", default=[], help="collection summaries (--json)")
    parser.add_argument("--pretrain", nargs="*", default=[], help="pretrain output dirs")
    parser.add_argument("--evaluate", nargs="*", default=[], help="evaluate --json files")
    parser.add_argument("--note", default="", help="free text: machine, load average")
    parser.add_argument("--out", required=True, help="result JSON to write")
    args = parser.parse_args(argv)
    result = {
        "collection": [_read(p) for p in args.collect],
        "pretrain": [_pretrain_row(p) for p in args.pretrain],
        "evaluate": [
            {"file": p, **{k: _read(p).get(k) for k in (*_EVAL_KEYS, "checkpoint", "command")}}
            for p in args.evaluate
        ],
        "note": args.note,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
