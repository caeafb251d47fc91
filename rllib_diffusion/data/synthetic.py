"""Writing and reading synthetic transition datasets (shared by every data generator).

A generator (SynthER, DyDiff, ...) hands over columns ``{obs, actions, rewards, new_obs,
terminateds}`` in data units; they are written as one single-step Minari episode per
transition (terminal: terminated, else truncated), atomically, with the generator's
provenance in the dataset's ``metadata.json`` under :data:`PROVENANCE_KEY`. Every
offline command reads such a set with ``--synthetic-dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

#: ``metadata.json`` key of a synthetic dataset's provenance.
PROVENANCE_KEY = "synthetic_provenance"


def read_provenance(dataset: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance a synthetic Minari dataset (id or path) was written with, or None
    for a dataset that is not synthetic."""
    from rllib_diffusion.data.minari_io import read_extra_metadata

    return read_extra_metadata(dataset, PROVENANCE_KEY)


def generator_checkpoint(
    given: str | None,
    train: Callable[[], dict[str, Any]],
    *,
    algorithm: str,
    dataset: str,
    flag: str,
    command: str,
) -> tuple[str, dict[str, Any]]:
    """``(checkpoint, training summary or {})``: the generator checkpoint ``given`` (as
    ``flag``), checked by :func:`checked_generator`, or the one ``train()`` trains now
    (its summary's ``checkpoint``)."""
    if given is None:
        summary = train()
        return summary["checkpoint"], summary
    path = checked_generator(
        given, algorithm=algorithm, dataset=dataset, flag=flag, command=command
    )
    return path, {}


def checked_generator(path: str, *, algorithm: str, dataset: str, flag: str, command: str) -> str:
    """The resolved path of generator checkpoint ``path`` (given as ``flag``), after
    checking it is a checkpoint of ``algorithm`` trained on ``dataset``; one-line errors
    name the fix (``command`` trains one)."""
    from pathlib import Path

    from rllib_diffusion.checkpoints import CheckpointError, read_checkpoint_meta
    from rllib_diffusion.modules.model_config import ConfigError

    meta = read_checkpoint_meta(path)
    if meta.algorithm != algorithm:
        raise CheckpointError(
            f"{flag} '{path}' is a {meta.algorithm!r} checkpoint, not a {algorithm} "
            f"generator (train one with `{command}` without {flag})."
        )
    trained_on = (meta.settings or {}).get("dataset")
    if trained_on != dataset:
        raise ConfigError(
            f"{flag} '{path}' was trained on '{trained_on}', not on --dataset "
            f"'{dataset}'; pass --dataset {trained_on}."
        )
    return str(Path(path).expanduser().resolve())


def write_synthetic_transitions(
    columns: dict[str, np.ndarray],
    dataset_id: str,
    *,
    env_id: str | None,
    source: dict[str, Any],
    algorithm_name: str,
    description: str,
    provenance: dict[str, Any],
    overwrite: bool = False,
) -> str:
    """Write ``columns`` (N transitions) as the Minari dataset ``dataset_id``; returns its
    path. ``source`` is the generator checkpoint's ``dataset`` meta (reference scores are
    copied from it); ``provenance`` goes under :data:`PROVENANCE_KEY`."""
    from rllib_diffusion.data.minari_io import write_minari
    from rllib_diffusion.data.transitions import transition_episodes

    return write_minari(
        transition_episodes(columns),
        dataset_id,
        env_id=env_id,
        ref_min_score=source.get("ref_min_score"),
        ref_max_score=source.get("ref_max_score"),
        algorithm_name=algorithm_name,
        description=description,
        overwrite=overwrite,
        extra_metadata={PROVENANCE_KEY: provenance},
    )
