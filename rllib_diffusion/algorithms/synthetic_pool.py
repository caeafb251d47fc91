"""The regenerated synthetic pool as part of a run's checkpoint (``offline --dydiff-model``).

A checkpoint of a run that regenerates rollouts holds :data:`POOL_FILE`: the pool's
columns exactly as the Learner's batches take them (an
:class:`~rllib_diffusion.algorithms.mixed_offline_data.ArrayStream`'s, after the
pre-learner), and its ``CheckpointMeta.synthetic_pool`` is a :class:`PoolRecord`: the
file's checksum, the regeneration and gradient step the pool was generated at, the
stream's seed and the batches it had served, and the model and dataset it was generated
from (sha256 fingerprints). Both are written inside the checkpoint's temp dir, so they
are saved atomically with it. ``--resume`` rebuilds the stream from them: the batches go
on exactly as the interrupted run's would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rllib_diffusion.checkpoints import CheckpointError

#: The pool's file in a checkpoint directory.
POOL_FILE = "synthetic_pool.npz"
#: The ``CheckpointMeta`` field that records it.
POOL_FIELD = "synthetic_pool"
#: Fields of a :class:`PoolRecord` that must match the resuming run, and what they name.
PROVENANCE = {
    "model_sha256": ("model", "--dydiff-model"),
    "dataset_sha256": ("dataset", "--dataset"),
}


@dataclass
class PoolRecord:
    """What a checkpoint records about the pool in its :data:`POOL_FILE`.

    Attributes:
        file: the file's name in the checkpoint directory.
        columns: the Learner batch columns (flattened ``module/column`` keys), in order.
        rows: rows of the pool.
        sha256: checksum of the columns (:func:`columns_sha256`).
        regeneration: the regeneration index ``k`` that generated the pool.
        at_step: the gradient step it was generated at.
        seed: the stream's seed (its batch order).
        served: batches the stream had served when the checkpoint was taken.
        model: ``--dydiff-model`` of the run (for messages).
        model_sha256: fingerprint of the model's weights.
        dataset: ``--dataset`` of the run (for messages).
        dataset_sha256: fingerprint of the states the rollouts start from.
    """

    file: str
    columns: list[str]
    rows: int
    sha256: str
    regeneration: int
    at_step: int
    seed: int
    served: int
    model: str | None
    model_sha256: str
    dataset: str | None
    dataset_sha256: str

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> PoolRecord:
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or set(d) != set(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise CheckpointError(
                f"checkpoint '{where}' is damaged: its {POOL_FIELD} record {got} is not "
                f"{names}; use an earlier checkpoint or another --out."
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def array_sha256(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def columns_sha256(columns: dict[str, np.ndarray]) -> str:
    """sha256 of named columns (names included, in order)."""
    h = hashlib.sha256()
    for name, a in columns.items():
        h.update(name.encode() + b"\0" + array_sha256(a).encode())
    return h.hexdigest()


def save_pool(directory: str | os.PathLike, stream: Any, **provenance: Any) -> PoolRecord:
    """Write ``stream``'s columns (an ``ArrayStream``) to ``directory/POOL_FILE``
    (``directory``: the checkpoint's temp dir, renamed into place as a whole, so the file
    needs no temp name of its own); its record, with ``provenance`` (``regeneration``,
    ``at_step``, ``model``, ``model_sha256``, ``dataset``, ``dataset_sha256``)."""
    names = list(stream.columns)
    np.savez(
        Path(directory) / POOL_FILE, **{f"c{i}": stream.columns[k] for i, k in enumerate(names)}
    )
    return PoolRecord(
        file=POOL_FILE,
        columns=names,
        rows=stream.num_rows,
        sha256=columns_sha256(stream.columns),
        seed=stream.seed,
        served=stream.served,
        **provenance,
    )


def load_pool(
    checkpoint: str | os.PathLike, record: Any, *, step: int, expect: dict[str, Any]
) -> tuple[dict[str, np.ndarray], PoolRecord]:
    """The columns and record of the pool saved in ``checkpoint`` (``record``: its
    ``CheckpointMeta.synthetic_pool``) taken at gradient step ``step``, after checking
    the record's provenance against ``expect`` (the resuming run's ``model_sha256``,
    ``dataset_sha256``, ``model``, ``dataset``) and the file against the record;
    one-line :class:`CheckpointError`s naming the field or file."""
    rec = PoolRecord.from_dict(record, where=str(checkpoint))
    for field, (name, flag) in PROVENANCE.items():
        if getattr(rec, field) != expect[field]:
            raise CheckpointError(
                f"Cannot resume from '{checkpoint}': its regenerated pool comes from another "
                f"{name} ({POOL_FIELD}.{field} {getattr(rec, field)[:12]}… of {name} "
                f"'{getattr(rec, name)}', {flag} '{expect[name]}' has "
                f"{expect[field][:12]}…); pass the {name} it was generated from, or use "
                "another --out."
            )
    if rec.at_step > step:
        late = f"was generated at step {rec.at_step}, after the checkpoint's step {step}"
        raise _damaged(checkpoint, rec.file, f"{late} ({POOL_FIELD}.at_step)")
    return _read_columns(checkpoint, rec), rec


def _read_columns(checkpoint: str | os.PathLike, rec: PoolRecord) -> dict[str, np.ndarray]:
    path = Path(checkpoint) / rec.file
    if not path.is_file():
        raise CheckpointError(
            f"Cannot resume from '{checkpoint}': its regenerated pool '{rec.file}' is missing "
            f"(the checkpoint's {POOL_FIELD} records {rec.rows} rows); use an earlier "
            "checkpoint or another --out."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            columns = {k: npz[f"c{i}"] for i, k in enumerate(rec.columns)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = " ".join(f"cannot be read ({type(err).__name__}: {err})".split())
        raise _damaged(checkpoint, rec.file, reason) from None
    if columns_sha256(columns) != rec.sha256:
        raise _damaged(checkpoint, rec.file, f"does not match its checksum ({POOL_FIELD}.sha256)")
    return columns


def _damaged(checkpoint: Any, file: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint '{checkpoint}' is damaged: its regenerated pool '{file}' {reason}; use "
        "an earlier checkpoint or another --out."
    )
