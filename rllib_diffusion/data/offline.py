"""Conversion of episode datasets to the parquet form RLlib's offline API reads.

Each row is one training sample: ``obs`` (To*Do,) normalised observation window,
flattened, and ``actions`` (Ta*Da,) normalised action chunk, flattened. Rows are
shuffled once at write time. The result is cached by a fingerprint of the data and
the windowing/normalisation settings, so the conversion happens once per dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rllib_diffusion import columns as C
from rllib_diffusion.data.episodes import EpisodeDataset
from rllib_diffusion.data.normalization import DatasetNormalization
from rllib_diffusion.data.windows import make_windows

logger = logging.getLogger(__name__)

#: Bump when the on-disk layout changes, so stale caches are not reused.
FORMAT_VERSION = 1
META_FILE = "rllib_diffusion_windows.json"


@dataclass
class OfflineDataInfo:
    """Where the parquet samples are and what they hold."""

    path: str
    normalization: DatasetNormalization
    num_samples: int
    obs_dim: int  # To * Do
    action_shape: tuple[int, int]  # (Ta, Da)
    cached: bool


def default_cache_dir() -> Path:
    root = os.environ.get("RLLIB_DIFFUSION_CACHE", os.path.join("~", ".cache", "rllib_diffusion"))
    return Path(root).expanduser() / "windows"


def _fingerprint(
    dataset: EpisodeDataset, horizon: int, obs_history: int, norm: DatasetNormalization
) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([FORMAT_VERSION, horizon, obs_history, norm.to_dict()]).encode())
    for ep in dataset.episodes:
        h.update(np.ascontiguousarray(ep.observations).tobytes())
        h.update(np.ascontiguousarray(ep.actions).tobytes())
    return h.hexdigest()[:20]


def prepare_offline_data(
    dataset: EpisodeDataset,
    *,
    horizon: int,
    obs_history: int = 1,
    normalization: DatasetNormalization | None = None,
    cache_dir: str | os.PathLike | None = None,
    rows_per_file: int = 200_000,
    seed: int = 0,
) -> OfflineDataInfo:
    """Window, normalise, shuffle and write ``dataset`` as parquet (cached).

    Args:
        dataset: the episodes.
        horizon: Ta, action-chunk length.
        obs_history: To, stacked observations.
        normalization: statistics to use (default: min-max fit on ``dataset``).
        cache_dir: where converted datasets live (default ``$RLLIB_DIFFUSION_CACHE`` or
            ``~/.cache/rllib_diffusion``; the parquet goes to ``<cache_dir>/windows/<key>``).
        rows_per_file: parquet rows per file (RLlib's readers parallelise over files).
        seed: seed of the write-time shuffle.

    Returns:
        :class:`OfflineDataInfo`; ``path`` is a directory for ``offline_data(input_=[path])``.
    """
    norm = normalization or DatasetNormalization.fit(dataset)
    root = Path(cache_dir).expanduser() / "windows" if cache_dir else default_cache_dir()
    key = _fingerprint(dataset, horizon, obs_history, norm)

    def build() -> tuple[dict[str, np.ndarray], dict]:
        windows = make_windows(dataset, horizon=horizon, obs_history=obs_history)
        n = len(windows)
        obs = norm.obs.normalize(windows.obs).reshape(n, -1).astype(np.float32)
        act = norm.action.normalize(windows.actions).astype(np.float32)
        meta = {
            "obs_dim": int(obs.shape[1]),
            "action_shape": [int(act.shape[1]), int(act.shape[2])],
            "horizon": horizon,
            "obs_history": obs_history,
            "normalization": norm.to_dict(),
        }
        return {C.OBS: obs, C.ACTIONS: act.reshape(n, -1)}, meta

    meta, cached = write_cached_parquet(
        root / key, build, dataset=dataset, rows_per_file=rows_per_file, seed=seed
    )
    return OfflineDataInfo(
        path=str(root / key),
        normalization=norm,
        num_samples=int(meta["num_samples"]),
        obs_dim=int(meta["obs_dim"]),
        action_shape=tuple(meta["action_shape"]),
        cached=cached,
    )


def prepare_transition_data(
    dataset: EpisodeDataset,
    *,
    cache_dir: str | os.PathLike | None = None,
    rows_per_file: int = 200_000,
    seed: int = 0,
) -> tuple[str, int]:
    """Write ``dataset``'s transitions (raw units) as shuffled parquet for offline RL (cached).

    Columns: ``obs`` (Do,), ``actions`` (Da,), ``rewards``, ``new_obs`` (Do,),
    ``terminateds`` (1.0 only at true terminations; truncated ends bootstrap).

    Returns:
        ``(directory, num_transitions)``.
    """
    root = (
        Path(cache_dir).expanduser() / "transitions"
        if cache_dir
        else default_cache_dir().parent / "transitions"
    )
    h = hashlib.sha1(json.dumps([FORMAT_VERSION, "transitions"]).encode())
    for ep in dataset.episodes:
        for arr in (ep.observations, ep.actions, ep.rewards, ep.terminations):
            h.update(np.ascontiguousarray(arr).tobytes())
    key = h.hexdigest()[:20]

    def build() -> tuple[dict[str, np.ndarray], dict]:
        eps = dataset.episodes
        cols = {
            C.OBS: np.concatenate([e.observations[:-1] for e in eps]).astype(np.float32),
            C.ACTIONS: np.concatenate([e.actions for e in eps]).astype(np.float32),
            C.REWARDS: np.concatenate([e.rewards for e in eps]).astype(np.float32),
            C.NEXT_OBS: np.concatenate([e.observations[1:] for e in eps]).astype(np.float32),
            C.TERMINATEDS: np.concatenate([e.terminations for e in eps]).astype(np.float32),
        }
        return cols, {"obs_dim": dataset.obs_dim, "action_dim": dataset.action_dim}

    meta, _ = write_cached_parquet(
        root / key, build, dataset=dataset, rows_per_file=rows_per_file, seed=seed
    )
    return str(root / key), int(meta["num_samples"])


def write_cached_parquet(
    final: Path,
    build,
    *,
    dataset: EpisodeDataset,
    rows_per_file: int,
    seed: int,
) -> tuple[dict, bool]:
    """Write ``build()``'s columns, shuffled, to ``final`` unless already there.

    ``build() -> (columns, meta)``; 2-D columns become fixed-size list columns. Written
    into a temp directory and renamed, so a cache entry is complete or absent.

    A cache entry that cannot be read back (a truncated part file, a damaged meta file,
    rows missing) is moved aside and rebuilt, with one line saying so.

    Returns:
        ``(meta, cached)``.
    """
    if final.exists():
        meta, problem = read_cache_entry(final)
        if meta is not None:
            return meta, True
        _discard_cache_entry(final, problem)
    columns, meta = build()
    n = len(next(iter(columns.values())))
    order = np.random.default_rng(seed).permutation(n)
    columns = {k: v[order] for k, v in columns.items()}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _write_parts(tmp, columns, n, rows_per_file)
        meta = {
            **meta,
            "format_version": FORMAT_VERSION,
            "num_samples": n,
            "dataset": dataset.name,
            "env_id": dataset.env_id,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        _rename_into_place(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    logger.info("Wrote %d rows to %s", n, final)
    return meta, False


def _write_parts(tmp: Path, columns: dict[str, np.ndarray], n: int, rows_per_file: int) -> None:
    """Write ``columns`` into ``tmp`` as parquet part files of ``rows_per_file`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part, start in enumerate(range(0, n, rows_per_file)):
        sl = slice(start, start + rows_per_file)
        table = pa.table(
            {k: _fixed_list(v[sl]) if v.ndim == 2 else pa.array(v[sl]) for k, v in columns.items()}
        )
        pq.write_table(table, tmp / f"part-{part:05d}.parquet")


def _rename_into_place(tmp: Path, final: Path) -> None:
    """Rename the complete entry ``tmp`` to ``final``, keeping one another process finished."""
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process finished the same conversion first: keep theirs.
        if not (final / META_FILE).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def read_cache_entry(final: Path) -> tuple[dict | None, str]:
    """``(meta, "")`` of a complete, readable cache entry, else ``(None, what is wrong)``.

    Reads the meta file and every parquet footer (cheap: no row data), and checks that
    the part files hold ``num_samples`` rows in all.
    """
    import pyarrow.parquet as pq

    meta_path = final / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        expected = int(meta["num_samples"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{meta_path.name} unreadable ({type(err).__name__})"
    rows = 0
    for part in sorted(final.glob("part-*.parquet")):
        try:
            rows += pq.read_metadata(part).num_rows
        except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
            return None, f"{part.name} unreadable ({type(err).__name__})"
    if rows != expected:
        return None, f"{rows} rows in its parquet files, {expected} expected"
    return meta, ""


def _discard_cache_entry(final: Path, problem: str) -> None:
    """Move a damaged cache entry aside (atomic) and delete it, saying so in one line."""
    trash = final.parent / f".{final.name}.damaged-{os.getpid()}"
    shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):  # another process discarded it first
        os.replace(final, trash)
    shutil.rmtree(trash, ignore_errors=True)
    print(f"[data] cache entry '{final}' was damaged ({problem}); rebuilding it.", flush=True)


def _fixed_list(arr: np.ndarray):
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
