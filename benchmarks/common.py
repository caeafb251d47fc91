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


# ------------------------------------------------- code trees measured side by side
def import_from(root: str) -> None:
    """In a tree worker: make ``import rllib_diffusion`` resolve to the code tree
    ``root`` (a ``git worktree`` of a baseline commit), not the editable install."""
    sys.path.insert(0, root)
    sys.meta_path[:] = [
        f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()
    ]


class Tree:
    """A worker process (``script --worker ROOT [args]``) importing ``rllib_diffusion``
    from one code tree, answering one JSON line per JSON request line; its first line
    carries ``package``, where it imported the package from."""

    def __init__(self, label: str, script: str, root: Path, *args: str, timeout: float = 120):
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.label, self.timeout = label, timeout
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", str(root), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.package = self._read()["package"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker died (see its stderr above)")
        return json.loads(line)

    def ask(self, **req: Any) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=self.timeout)


def git_sha(root: Path) -> str | None:
    """Short commit of the tree at ``root`` (None outside git)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]
