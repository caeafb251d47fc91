"""Code-shape figures quoted in issue closing notes: lines of the CLI and tuning code and
the functions longer than 60 lines (``python scripts/code_stats.py``)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60


def long_functions(root: Path) -> list[tuple[str, int]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LIMIT:
                    out.append((f"{path}:{node.lineno} {node.name}", n))
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "rllib_diffusion")
    for rel in ("cli.py", "tuning.py", "tuning", "cli"):
        p = root / rel
        files = [p] if p.is_file() else sorted(p.rglob("*.py")) if p.is_dir() else []
        if files:
            print(f"lines {rel}: {sum(len(f.read_text().splitlines()) for f in files)}")
    longs = long_functions(root)
    print(f"functions over {LIMIT} lines in {root}: {len(longs)}")
    for name, n in sorted(longs, key=lambda x: -x[1]):
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
