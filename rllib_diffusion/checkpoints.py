"""Checkpoint helpers: atomic saves, typed metadata, and loading policies with clear errors.

Every checkpoint written by this package is an RLlib ``Algorithm`` checkpoint plus
``rllib_diffusion.json``, a :class:`CheckpointMeta` (algorithm name, env, policy/model
config incl. normalisation, run settings and metadata), which lets loaders check what
they are given before unpickling. ``CheckpointMeta`` is the one place that writes and
reads that file; checkpoints written before it was versioned (version 0) still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META_FILE = "rllib_diffusion.json"
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"

#: Version of the ``rllib_diffusion.json`` layout written by this code. 0: the unversioned
#: files of the first releases (same keys, no ``version``); up to 1 DPPO and ReinFlow
#: stored their model config under :data:`LEGACY_CHAIN_MODEL_KEY`, now ``model_config``;
#: 3 added ``synthetic_pool`` (absent, i.e. None, in earlier files).
META_VERSION = 3
LEGACY_CHAIN_MODEL_KEY = "dppo_model_config"


#: Errors of reading a truncated or overwritten pickle / file.
_UNREADABLE = (pickle.UnpicklingError, EOFError, OSError, ValueError, IndexError)
_DAMAGED = (
    "checkpoint '{path}' is damaged: '{file}' {reason}; use an earlier checkpoint or "
    "re-run the training that wrote it."
)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, damaged or of the wrong kind."""


@dataclass
class CheckpointMeta(Mapping):
    """What this package records next to RLlib's checkpoint files.

    Attributes:
        algorithm: the algorithm's name ("DiffusionBC", "DPPO", "GaussianBC",
            "GaussianPPO", or an offline algorithm's registry name such as "idql").
        env_id: the gymnasium env the policy acts in.
        env_config: config of the (chunked) evaluation env, where not derived from
            ``policy_config``.
        policy_config: ``DiffusionPolicyConfig`` dict (DiffusionBC, DPPO).
        model_config: the RLModule's model config (offline and fine-tuning algorithms,
            e.g. ``DPPOModelConfig``, Gaussian).
        settings: the run's settings (knobs and run control) as given.
        hyperparameters: resolved values the run used (e.g. per-task defaults).
        dataset: summary of the training dataset.
        pretrained_checkpoint: the DiffusionBC checkpoint a DPPO run started from.
        bc_checkpoint: the GaussianBC checkpoint a Gaussian PPO run started from.
        offline_checkpoint: the offline checkpoint an online run started from.
        phase: "online" for the online phase of an offline algorithm.
        run: package version, git SHA, host, ... (``utils.runtime.run_metadata``).
        iteration: training iterations done when saved (run checkpoints).
        env_steps: env steps done when saved (fine-tuning runs).
        train_seconds: training wall time up to this checkpoint.
        start_evaluation: evaluation of the starting policy (DPPO).
        synthetic_pool: the regenerated synthetic pool saved in this checkpoint (offline
            runs with ``--dydiff-model``; a
            :class:`~rllib_diffusion.algorithms.synthetic_pool.PoolRecord` dict: its file,
            rows, checksum, regeneration and the model/dataset it was generated from).
        tune: the Tune trial an exported best checkpoint came from.
        version: layout version (:data:`META_VERSION`).

    Also a read-only ``Mapping`` of its non-None fields (``meta["env_id"]``), the view
    the first releases' callers and scripts used; the package reads attributes.
    """

    algorithm: str
    env_id: str | None = None
    env_config: dict[str, Any] | None = None
    policy_config: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    pretrained_checkpoint: str | None = None
    bc_checkpoint: str | None = None
    offline_checkpoint: str | None = None
    phase: str | None = None
    run: dict[str, Any] | None = None
    iteration: int | None = None
    env_steps: int | None = None
    train_seconds: float | None = None
    start_evaluation: dict[str, Any] | None = None
    synthetic_pool: dict[str, Any] | None = None
    tune: dict[str, Any] | None = None
    version: int = META_VERSION

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "checkpoint") -> CheckpointMeta:
        """Parse a stored (any version) or freshly built meta dict; unknown keys are an
        error naming them."""
        d = dict(d)
        version = int(d.pop("version", 0))
        if version > META_VERSION:
            raise CheckpointError(
                f"'{where}' was written by a newer rllib-diffusion (meta version {version} > "
                f"{META_VERSION}); upgrade the package to load it."
            )
        if version < 2 and LEGACY_CHAIN_MODEL_KEY in d:
            d["model_config"] = d.pop(LEGACY_CHAIN_MODEL_KEY)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown or "algorithm" not in d:
            raise CheckpointError(
                f"'{where}' has unreadable metadata ({META_FILE}): "
                + (f"unknown keys {unknown}" if unknown else "no 'algorithm'")
                + "; was it written by rllib-diffusion?"
            )
        return cls(**d, version=META_VERSION)

    def replace(self, **changes: Any) -> CheckpointMeta:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (None fields are left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(self.to_dict(), indent=1, default=str)

    # Mapping view (for scripts and tests written against the first releases).
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def save_algorithm_checkpoint(
    algo: Any,
    path: str | os.PathLike,
    meta: CheckpointMeta | Mapping[str, Any],
    *,
    files: Callable[[Path], Mapping[str, Any]] | None = None,
) -> str:
    """Save ``algo`` to ``path`` atomically (temp dir, then rename) with our metadata.

    ``files(tmp)`` writes more files into the checkpoint (``tmp``: its temp dir, so they
    are saved atomically with it) and returns the :class:`CheckpointMeta` fields that
    record them. An existing checkpoint at ``path`` is replaced only once the new one is
    complete.
    """
    if not isinstance(meta, CheckpointMeta):
        meta = CheckpointMeta.from_dict(meta, where=str(path))
    added: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        algo.save_to_path(str(tmp))
        if files is not None:
            added.update(files(tmp))

    return write_checkpoint_dir(path, fill, lambda: meta.replace(**added).to_json())


def write_checkpoint_dir(
    path: str | os.PathLike, fill: Callable[[Path], Any], meta_text: str | Callable[[], str]
) -> str:
    """Atomically create the checkpoint directory ``path``: ``fill(tmp)`` writes its files
    into a temp dir next to it, our meta file (``meta_text``, or its value when called
    after ``fill``) is added, then the temp dir
    is renamed into place; an existing ``path`` is replaced only once the new one is
    complete."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        (tmp / META_FILE).write_text(meta_text() if callable(meta_text) else meta_text)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return str(path)


def read_checkpoint_meta(path: str | os.PathLike) -> CheckpointMeta:
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
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(
            _DAMAGED.format(path=path, file=meta_path, reason=f"is not valid JSON ({err})")
        ) from None
    if not isinstance(raw, dict):
        reason = f"holds a JSON {type(raw).__name__}, not an object"
        raise CheckpointError(_DAMAGED.format(path=path, file=meta_path, reason=reason))
    return CheckpointMeta.from_dict(raw, where=str(path))


def restore_component(component_cls: Any, directory: Path, checkpoint: str | os.PathLike) -> Any:
    """``component_cls.from_checkpoint(directory)`` (an RLlib ``Checkpointable``: RLModule,
    connector pipeline) with a :class:`CheckpointError` naming the damaged file of
    ``checkpoint`` instead of a bare unpickling error."""
    try:
        return component_cls.from_checkpoint(str(directory))
    except _UNREADABLE as err:
        file = _damaged_file(directory)
        if file is None:
            if not isinstance(err, FileNotFoundError):
                raise  # every file loads: not damage (e.g. a bad config), keep the error
            file = directory  # a state file is missing; the error names it
        reason = " ".join(f"cannot be read ({type(err).__name__}: {err})".split())
        raise CheckpointError(_DAMAGED.format(path=checkpoint, file=file, reason=reason)) from None


def _damaged_file(directory: Path) -> Path | None:
    """The first pickle of an RLlib component directory that is missing or does not load,
    or None if each one loads."""
    ctor = directory / "class_and_ctor_args.pkl"
    others = sorted(p for p in directory.glob("*.pkl") if p != ctor)
    for file in (ctor, *others):
        try:
            with open(file, "rb") as f:
                pickle.load(f)
        except Exception:  # noqa: BLE001 - any failure means this is the file to name
            return file
    return None


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
    algo = meta.algorithm
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
    module = restore_component(RLModule, module_dir, path)
    module.eval()
    return module, meta


# ---------------------------------------------------------------------------- resume
def field_diffs(theirs: Mapping[str, Any], ours: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``name: checkpoint X vs now Y`` for every leaf field (nested dicts as ``a.b``) whose
    value differs as JSON reads it back; a field one side lacks counts as None (a knob
    added since, off)."""
    from rllib_diffusion.utils.io import jsonable

    diffs = []
    for key in sorted(set(theirs) | set(ours)):
        a, b, name = theirs.get(key), ours.get(key), f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += field_diffs(a, b, f"{name}.")
        elif jsonable(a) != jsonable(b):
            diffs.append(f"{name}: checkpoint {jsonable(a)!r} vs now {jsonable(b)!r}")
    return diffs


def check_resume_settings(
    theirs: Mapping[str, Any], ours: Mapping[str, Any], where: str | os.PathLike
) -> None:
    """A resumed run must train what its checkpoint trained: raise one
    :class:`CheckpointError` naming every field of ``ours`` that differs from the
    checkpoint's ``theirs`` (:func:`field_diffs`) and the fix."""
    diffs = field_diffs(theirs, ours)
    if diffs:
        raise CheckpointError(
            f"Cannot resume '{where}' with other settings: "
            + "; ".join(diffs)
            + ". Pass the original flags, or use another --out."
        )


def resume_checkpoint_meta(
    ckpt_dir: str | os.PathLike,
    resume: bool,
    *,
    algorithms: tuple[str, ...],
    tag: str,
    existing_is_error: bool = True,
) -> CheckpointMeta | None:
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
    if meta.algorithm not in algorithms or meta.iteration is None:
        raise CheckpointError(
            f"Cannot resume from '{ckpt_dir}': it is not a {'/'.join(algorithms)} run "
            f"checkpoint (algorithm {meta.algorithm!r}); use another --out."
        )
    return meta


def recover_interrupted_save(ckpt_dir: str | os.PathLike, *, tag: str) -> None:
    """A kill between the two renames of ``write_checkpoint_dir`` leaves no checkpoint
    but a complete ``.checkpoint.tmp-PID`` (new; its metadata is written last) or
    ``.checkpoint.old-PID`` (previous): put the newest complete one in place."""
    ckpt_dir = Path(ckpt_dir)

    def iteration(p: Path) -> int:
        try:
            it = read_checkpoint_meta(p).iteration
        except (OSError, ValueError):  # CheckpointError is a ValueError
            return -1
        return -1 if it is None else int(it)

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
