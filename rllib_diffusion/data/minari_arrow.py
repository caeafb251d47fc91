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

Reading back, Minari's ``ArrowStorage.get_episodes`` opens a ``pyarrow.dataset`` per
episode directory (≈ 0.7–0.9 ms per single-step episode). :func:`read_arrow_episodes` reads
the same files with ``pyarrow.ipc`` directly and concatenates them, for ``load_minari``
(:func:`can_read_in_bulk` says when it applies). It relies on the same layout: episode
``i`` of ``0 .. total_episodes - 1`` is the one record batch of ``data/<i>/part-0.arrow``
(``write_dataset``'s only file per partition, also for datasets written by Minari itself,
e.g. with ``minari.DataCollector``); Minari drops each column's last row (the padding) on
reading, and so does this reader. Columns other than :data:`ARROW_COLUMNS` (Minari's
``infos``) are not read. Whatever does not fit this layout (several record batches in a
file, other column types in some file, rows that disagree with ``total_steps``) raises
:class:`BulkReadUnsupported`, and the caller reads with Minari's own reader instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
# Key of the dataset's metadata.json naming the storage format (written by Minari).
_DATA_FORMAT_KEY = "data_format"
#: Episode files read before their batches are concatenated (bounds the memory held by
#: the files' own buffers; 1M single-step files are ≈ 1.5 GB as read).
READ_CHUNK = 4096
_COLUMN_LIST = list(ARROW_COLUMNS)


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


class BulkReadUnsupported(Exception):
    """The dataset's files are not in the layout :func:`read_arrow_episodes` reproduces
    Minari's reading of; read the dataset with Minari's own reader instead."""


class EpisodeFileError(ValueError):
    """An episode file cannot be read (missing, half-written or corrupt): one line naming
    the file and what pyarrow found wrong with it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(" ".join(reason.split()))  # one line


def _missing_files(paths: Sequence[str]) -> EpisodeFileError:
    """The error for episode files that do not exist, counted as Minari's reader would
    miss them (it silently skips an episode directory without files)."""
    missing = [path for path in paths if not os.path.exists(path)]
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return EpisodeFileError(
        missing[0],
        f"metadata.json lists {len(paths)} episodes but {len(paths) - len(missing)} could be "
        f"read; missing: {missing[0]}{more}",
    )


@dataclass(frozen=True)
class ArrowEpisodeColumns:
    """Every episode of a dataset, concatenated in episode-id order, in the stored dtypes.

    Attributes:
        observations: ``(sum(T_i + 1), Do)``: every episode's T_i + 1 observations.
        actions: ``(sum(T_i), Da)``; ``rewards``, ``terminations``, ``truncations``:
            ``(sum(T_i),)``: the steps only (each episode's padding row dropped).
        steps: ``(E,)``: T_i, the number of steps of each episode.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    steps: np.ndarray


def can_read_in_bulk(storage: Any) -> bool:
    """Whether :func:`read_arrow_episodes` may read this Minari storage (the mirror of
    :func:`can_write_in_bulk`): arrow format per its ``metadata.json``, and Box observation
    and action spaces stored as fixed-size lists (not JPEG-encoded images)."""
    from minari.dataset.minari_storage import is_image_space

    if storage.metadata.get(_DATA_FORMAT_KEY) != BULK_FORMAT:
        return False
    spaces = (storage.observation_space, storage.action_space)
    return all(
        isinstance(space, gym.spaces.Box) and not (storage.jpeg_encoding and is_image_space(space))
        for space in spaces
    )


def read_arrow_episodes(
    data_path: str | Path, total_episodes: int, total_steps: int
) -> ArrowEpisodeColumns:
    """Episodes ``0 .. total_episodes - 1`` of an arrow dataset's ``data/`` directory, as
    Minari's reader returns them (see the module doc), read with ``pyarrow.ipc``.

    Raises:
        EpisodeFileError: an episode file is missing or cannot be parsed.
        BulkReadUnsupported: the files are readable but not in the expected layout.
    """
    if total_episodes <= 0:
        raise BulkReadUnsupported("the dataset has no episodes")
    data_path = str(data_path)
    paths = [os.path.join(data_path, str(i), EPISODE_FILE) for i in range(total_episodes)]
    table, rows = _read_episode_files(paths)
    steps = rows - 1
    if np.any(steps < 0) or int(steps.sum()) != total_steps:
        raise BulkReadUnsupported(
            f"the episode files hold {int(steps.sum())} steps, metadata.json {total_steps}"
        )
    keep = np.ones(int(rows.sum()), dtype=bool)
    keep[np.cumsum(rows) - 1] = False  # each episode's last row pads the step columns
    obs, act, *step_columns = (_column_numpy(table.column(name)) for name in ARROW_COLUMNS)
    return ArrowEpisodeColumns(
        obs, act[keep], *(column[keep] for column in step_columns), steps=steps
    )


def _read_episode_files(paths: Sequence[str]) -> tuple[Any, np.ndarray]:
    """The :data:`ARROW_COLUMNS` of every file in ``paths`` as one table (one chunk per
    column), and each file's number of rows. All files must share the first's columns."""
    import pyarrow as pa

    chunks, pending, rows, schema = [], [], np.empty(len(paths), dtype=np.int64), None
    for i, path in enumerate(paths):
        try:
            batch = _read_episode_file(path)
        except FileNotFoundError:
            raise _missing_files(paths) from None
        if schema is None:
            schema = _checked_schema(batch.schema, path)
        elif not batch.schema.equals(schema):
            raise BulkReadUnsupported(f"{path} has other column types than {paths[0]}")
        rows[i] = batch.num_rows
        pending.append(batch)
        if len(pending) == READ_CHUNK or i == len(paths) - 1:
            # Copies the rows out of the files' buffers, which are then released.
            chunks.append(pa.Table.from_batches(pending, schema=schema).combine_chunks())
            pending = []
    return pa.concat_tables(chunks).combine_chunks(), rows


def _read_episode_file(path: str) -> Any:
    """The :data:`ARROW_COLUMNS` of one episode file's single record batch. The file is
    read whole, not memory-mapped: for files of a few KB, ``mmap`` costs more than one
    ``read``, and a million live maps would exceed Linux's ``vm.max_map_count``."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(pa.py_buffer(_file_bytes(path)))
        if reader.num_record_batches != 1:
            raise BulkReadUnsupported(f"{path} holds {reader.num_record_batches} record batches")
        batch = reader.get_batch(0)
        batch.validate()
        return batch.select(_COLUMN_LIST)  # KeyError: a column is missing
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        raise EpisodeFileError(
            path, f"cannot read episode file {path} ({type(err).__name__}: {err})"
        ) from None


def _file_bytes(path: str) -> bytes:
    """The whole file, with ``os``-level calls (a third cheaper than ``open()`` per file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size:  # a short read (files over 2 GB on Linux)
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def _checked_schema(schema: Any, path: str) -> Any:
    """``schema`` if observations and actions are fixed-size lists (Box spaces as Minari
    stores them) and the step columns are flat; else :class:`BulkReadUnsupported`."""
    import pyarrow as pa

    lists = [schema.field(name).type for name in ARROW_COLUMNS[:2]]
    flat = [schema.field(name).type for name in ARROW_COLUMNS[2:]]
    if not all(pa.types.is_fixed_size_list(t) for t in lists) or any(
        pa.types.is_nested(t) for t in flat
    ):
        raise BulkReadUnsupported(f"{path} has columns {schema.types}, not Box rows")
    return schema


def _column_numpy(column: Any) -> np.ndarray:
    """One concatenated column as numpy: ``(rows, list_size)`` for fixed-size lists."""
    import pyarrow as pa

    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if array.null_count:  # Minari never writes nulls into these columns
        raise BulkReadUnsupported(f"{array.null_count} null rows in a column")
    if pa.types.is_fixed_size_list(array.type):
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(array), array.type.list_size)
    return array.to_numpy(zero_copy_only=False)
