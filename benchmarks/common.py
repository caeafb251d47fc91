"""Helpers shared by benchmark scripts: result files as described in shared/design/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that produces the result (``--summarize-only`` only rebuilds it, and a
    ``--note`` is stored beside the command)."""
    args, rest = [], iter(sys.argv[1:])
    for a in rest:
        if a == "--note":
            next(rest, None)
        elif a != "--summarize-only" and not a.startswith("--note="):
            args.append(a)
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *args])


def write_result(
    name: str, figures: dict[str, Any], series: dict[str, Any] | None = None, **extra: Any
) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically; returns its path."""
    from rllib_diffusion.utils.runtime import run_metadata

    meta = run_metadata()
    payload = {
        "name": name,
        "command": command_line(),
        "machine": meta.pop("machine"),
        "versions": meta,
        "figures": figures,
        "series": series or {},
        **extra,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)
    return path
