"""Bulk writing of Minari's arrow episode layout (many short episodes, e.g. SynthER's
single-step transitions).

Minari 0.5's ``ArrowStorage.update_episodes`` writes one episode per
``pyarrow.dataset.write_dataset`` call (a thread pool, a partitioner and a directory scan
each time) and rewrites the dataset's ``metadata.json`` after each; that costs ≈ 2.4–4 ms
per single-step episode on this project's 2-core machine. The layout it produces is simple:

* ``data/<episode_id>/part-0.arrow``: one Arrow IPC file holding one record batch with the
  columns :data:`ARROW_COLUMNS`; Box observations and actions are fixed-size lists of the
  space's dtype, and every column except the observations is padded with zero rows to the
  observations' length (an episode of T steps has T + 1 rows);
* ``data/<episode_id>/metadata.json``: ``{"id": ..., "total_steps": ...}``.

:func:`write_arrow_episodes` builds all episodes as one record batch and writes each
episode's file by slicing it, with ``pyarrow.ipc`` directly, and each episode's
``metadata.json`` with ``json``: the layout is Minari's (not a public API of it), so
``tests/data/test_data_minari_arrow.py`` checks every file byte for byte against Minari's
own writer and reads the result back with ``minari.load_dataset``. The dataset's
``metadata.json`` goes through Minari's public ``MinariStorage.update_metadata``, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

#: Columns of an episode file, in Minari's order (``ArrowStorage.update_episodes``).
ARROW_COLUMNS = ("observations", "actions", "rewards", "terminations", "truncations")
#: The name ``pyarrow.dataset.write_dataset`` gives the single file of a partition.
EPISODE_FILE = "part-0.arrow"
#: An episode's own metadata file, next to :data:`EPISODE_FILE`.
EPISODE_METADATA_FILE = "metadata.json"
#: The only ``data_format`` written in bulk (parquet files embed writer details).
BULK_FORMAT = "arrow"
# Keys of an episode's own metadata.json, as ArrowStorage writes them.
_EPISODE_ID_KEY = "id"
_EPISODE_STEPS_KEY = "total_steps"
# Keys of the dataset's metadata.json updated after the episodes are written.
_TOTAL_STEPS_KEY = "total_steps"
_TOTAL_EPISODES_KEY = "total_episodes"
_SIZE_KEY = "dataset_size"


def can_write_in_bulk(storage: Any, buffers: Sequence[Any], data_format: str) -> bool:
    """Whether :func:`write_arrow_episodes` reproduces Minari's layout for these episodes:
    arrow format, Box spaces, and buffers without ids, seeds, options or infos (which
    Minari would store and this writer does not)."""
    if data_format != BULK_FORMAT:
        return False
    spaces = (storage.observation_space, storage.action_space)
    if not all(isinstance(space, gym.spaces.Box) for space in spaces):
        return False
    return all(
        b.id is None and b.seed is None and b.options is None and not b.infos for b in buffers
    )


def write_arrow_episodes(storage: Any, buffers: Sequence[Any]) -> None:
    """Append ``buffers`` (Minari ``EpisodeBuffer``s, see :func:`can_write_in_bulk`) to an
    empty arrow ``MinariStorage`` as episodes ``0 .. len(buffers) - 1``, exactly as
    ``storage.update_episodes(buffers)`` would, then update the dataset's metadata once."""
    import pyarrow as pa

    if storage.total_episodes != 0:
        raise ValueError("write_arrow_episodes appends to an empty storage only")
    batch, row_starts, steps = episode_batch(
        buffers, storage.observation_space, storage.action_space
    )
    row_ends = [*row_starts[1:], batch.num_rows]
    data_path = str(storage.data_path)  # str paths: pathlib costs more than the writes
    for episode_id, (start, end) in enumerate(zip(row_starts, row_ends)):
        episode_dir = os.path.join(data_path, str(episode_id))
        os.mkdir(episode_dir)
        with (
            pa.OSFile(os.path.join(episode_dir, EPISODE_FILE), "wb") as sink,
            pa.ipc.new_file(sink, batch.schema) as writer,
        ):
            writer.write_batch(batch.slice(int(start), int(end - start)))
        # The episode's metadata.json, byte-identical to ArrowStorage's json.dump (the public
        # update_episode_metadata would re-read each file and re-measure the whole dataset).
        meta = {_EPISODE_ID_KEY: episode_id, _EPISODE_STEPS_KEY: int(steps[episode_id])}
        with open(os.path.join(episode_dir, EPISODE_METADATA_FILE), "w") as file:
            file.write(json.dumps(meta))
    storage.update_metadata(
        {
            _TOTAL_STEPS_KEY: int(steps.sum()),
            _TOTAL_EPISODES_KEY: len(buffers),
            _SIZE_KEY: dataset_size(data_path),
        }
    )


def dataset_size(data_path: str | Path) -> float:
    """``MinariStorage.get_size()`` (MB, rounded to 0.1) of ``data_path``: the ``st_size``
    of every file and directory below it, measured with ``os.scandir`` (Minari's
    ``Path.glob("**/*")`` takes ≈ 0.3 ms per episode, longer than writing one)."""
    total, pending = 0, [str(data_path)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                total += entry.stat(follow_symlinks=False).st_size
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return float(np.round(total / 1_000_000, 1))


def episode_batch(
    buffers: Sequence[Any], obs_space: gym.Space, act_space: gym.Space
) -> tuple[Any, np.ndarray, np.ndarray]:
    """All episodes as one record batch with :data:`ARROW_COLUMNS`, plus each episode's
    first row and its number of steps. Per episode, the rows are those of Minari's
    (``_encode_space`` for Box spaces, ``np.pad`` with zeros for the step columns)."""
    import pyarrow as pa

    obs = [np.asarray(b.observations, dtype=obs_space.dtype) for b in buffers]
    rows = np.array([len(o) for o in obs], dtype=np.int64)
    steps = np.array([np.asarray(b.rewards).size for b in buffers], dtype=np.int64)
    if np.any(rows < steps):
        raise ValueError("an episode has fewer observations than steps")
    row_starts = np.cumsum(rows) - rows
    # Row of every step in the batch: its episode's first row plus its index in the episode.
    step_rows = np.repeat(row_starts - (np.cumsum(steps) - steps), steps) + np.arange(steps.sum())
    total_rows = int(rows.sum())

    def padded(values: list[np.ndarray]) -> np.ndarray:
        flat = np.concatenate(values)
        out = np.zeros((total_rows, *flat.shape[1:]), dtype=flat.dtype)
        out[step_rows] = flat
        return out

    actions = [np.asarray(b.actions, dtype=act_space.dtype) for b in buffers]
    columns = [
        _fixed_size_list(np.concatenate(obs), obs_space),
        _fixed_size_list(padded(actions), act_space),
        *(
            pa.array(padded([np.asarray(getattr(b, name)).reshape(-1) for b in buffers]))
            for name in ARROW_COLUMNS[2:]
        ),
    ]
    return pa.RecordBatch.from_arrays(columns, names=list(ARROW_COLUMNS)), row_starts, steps


def _fixed_size_list(values: np.ndarray, space: gym.Space) -> Any:
    """Rows of a Box space as Minari stores them: a fixed-size list of the space's dtype."""
    import pyarrow as pa

    if values.shape[1:] != space.shape:
        raise ValueError(f"rows of shape {values.shape[1:]} do not fit the space {space}")
    flat = values.reshape(len(values), -1)
    item = pa.list_(pa.from_numpy_dtype(space.dtype), list_size=flat.shape[1])
    return pa.FixedSizeListArray.from_arrays(flat.reshape(-1), type=item)
