"""Checkpoint helpers: atomic saves, metadata, and loading policies with clear errors.

Every checkpoint written by this package is an RLlib ``Algorithm`` checkpoint plus
``rllib_diffusion.json`` (algorithm name, env, policy config incl. normalisation,
run metadata), which lets loaders check what they are given before unpickling.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

META_FILE = "rllib_diffusion.json"
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or of the wrong kind."""


def save_algorithm_checkpoint(algo: Any, path: str | os.PathLike, meta: dict[str, Any]) -> str:
    """Save ``algo`` to ``path`` atomically (temp dir, then rename) with our metadata.

    An existing checkpoint at ``path`` is replaced only once the new one is complete.
    """
    return write_checkpoint_dir(
        path,
        lambda tmp: algo.save_to_path(str(tmp)),
        json.dumps(meta, indent=1, default=str),
    )


def write_checkpoint_dir(
    path: str | os.PathLike, fill: Callable[[Path], Any], meta_text: str
) -> str:
    """Atomically create the checkpoint directory ``path``: ``fill(tmp)`` writes its files
    into a temp dir next to it, our meta file (``meta_text``) is added, then the temp dir
    is renamed into place; an existing ``path`` is replaced only once the new one is
    complete."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        (tmp / META_FILE).write_text(meta_text)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return str(path)


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a checkpoint written by this package, or a CheckpointError saying why not."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: '{path}'. Check the path (a directory).")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = (
            " It looks like a plain RLlib checkpoint (not from rllib-diffusion); "
            "`collect --policy` accepts those."
            if (path / "algorithm_state.pkl").exists() or (path / "rllib_checkpoint.json").exists()
            else ""
        )
        raise CheckpointError(
            f"'{path}' is not an rllib-diffusion checkpoint (no {META_FILE}).{hint}"
        )
    return json.loads(meta_path.read_text())


def load_policy_module(
    path: str | os.PathLike, *, expect_algorithms: tuple[str, ...] | None = None
):
    """Load the diffusion policy RLModule of a checkpoint (on CPU, inference-capable).

    Args:
        path: checkpoint directory written by this package.
        expect_algorithms: allowed ``meta["algorithm"]`` values (None: any).

    Returns:
        ``(module, meta)``.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    meta = read_checkpoint_meta(path)
    algo = meta.get("algorithm")
    if expect_algorithms is not None and algo not in expect_algorithms:
        raise CheckpointError(
            f"Checkpoint '{path}' is a {algo!r} checkpoint; expected one of "
            f"{list(expect_algorithms)}."
        )
    module_dir = Path(path).expanduser().resolve() / MODULE_SUBDIR
    if not module_dir.is_dir():
        raise CheckpointError(
            f"Checkpoint '{path}' is incomplete: '{MODULE_SUBDIR}' is missing. Re-save it."
        )
    module = RLModule.from_checkpoint(str(module_dir))
    module.eval()
    return module, meta


# ---------------------------------------------------------------------------- resume
def resume_checkpoint_meta(
    ckpt_dir: str | os.PathLike,
    resume: bool,
    *,
    algorithms: tuple[str, ...],
    tag: str,
    existing_is_error: bool = True,
) -> dict[str, Any] | None:
    """Metadata of the run checkpoint ``ckpt_dir`` to continue from, or None: start fresh.

    With ``resume``, an interrupted save is recovered first and a missing checkpoint
    means a fresh start. Without it, an existing checkpoint is an error when
    ``existing_is_error`` (else it is overwritten by the new run). The checkpoint must be
    one of ``algorithms`` and carry the ``iteration`` it was saved at.
    """
    ckpt_dir = Path(ckpt_dir)
    if resume and not ckpt_dir.exists():
        recover_interrupted_save(ckpt_dir, tag=tag)
    if not ckpt_dir.exists():
        if resume:
            print(f"[{tag}] --resume: no checkpoint at '{ckpt_dir}' yet; starting fresh.")
        return None
    if not resume:
        if existing_is_error:
            raise CheckpointError(
                f"'{ckpt_dir}' already holds a checkpoint. Pass --resume to continue that "
                "run, or use another --out."
            )
        return None
    meta = read_checkpoint_meta(ckpt_dir)
    if meta.get("algorithm") not in algorithms or "iteration" not in meta:
        raise CheckpointError(
            f"Cannot resume from '{ckpt_dir}': it is not a {'/'.join(algorithms)} run "
            f"checkpoint (algorithm {meta.get('algorithm')!r}); use another --out."
        )
    return meta


def recover_interrupted_save(ckpt_dir: str | os.PathLike, *, tag: str) -> None:
    """A kill between the two renames of ``write_checkpoint_dir`` leaves no checkpoint
    but a complete ``.checkpoint.tmp-PID`` (new; its metadata is written last) or
    ``.checkpoint.old-PID`` (previous): put the newest complete one in place."""
    ckpt_dir = Path(ckpt_dir)

    def iteration(p: Path) -> int:
        try:
            return int(json.loads((p / META_FILE).read_text())["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    leftovers = [
        p
        for pattern in (f".{ckpt_dir.name}.tmp-*", f".{ckpt_dir.name}.old-*")
        for p in ckpt_dir.parent.glob(pattern)
        if iteration(p) >= 0
    ]
    if leftovers:
        best = max(leftovers, key=iteration)
        os.replace(best, ckpt_dir)
        print(f"[{tag}] recovered checkpoint '{ckpt_dir}' from an interrupted save ({best}).")


def progress_up_to(path: str | os.PathLike, iteration: int, *, first: int = 0) -> list[dict]:
    """``progress.jsonl`` lines of iterations ``first..iteration`` (later ones were not
    checkpointed and are trained again); one line per iteration, in order."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Cannot resume: '{path}' is missing.")
    kept: dict[int, dict[str, Any]] = {}
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a line cut off by the kill
        if first <= int(line.get("iteration", -1)) <= iteration:
            kept[int(line["iteration"])] = line
    missing = sorted(set(range(first, iteration + 1)) - set(kept))
    if missing:
        raise CheckpointError(
            f"Cannot resume: '{path}' lacks iterations {missing[:10]} of the checkpoint's "
            f"{iteration}; use another --out."
        )
    return [kept[i] for i in range(first, iteration + 1)]
