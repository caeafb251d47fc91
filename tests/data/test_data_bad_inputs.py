"""Damaged or wrong dataset inputs are one clear error naming the file and the fix.

Truncated / non-npz / empty ``.npz`` files, damaged Minari episode stores, damaged
window-cache entries (rebuilt), and actions far outside the env's bounds.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rllib_diffusion.data import (
    DatasetError,
    EpisodeDataset,
    load_dataset,
    save_npz,
    validate_dataset,
    write_minari,
)
from rllib_diffusion.data.offline import META_FILE, prepare_offline_data

DATASET_ID = "rllib-diffusion/hopper/damaged-v0"
BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------------- npz
def _npz(tmp_path: Path, make_dataset: Callable[..., EpisodeDataset]) -> Path:
    return Path(save_npz(make_dataset(), tmp_path / "train.npz"))


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_npz_is_one_error_naming_the_file(
    tmp_path: Path, make_dataset: Callable[..., EpisodeDataset], keep: float
) -> None:
    path = _npz(tmp_path, make_dataset)
    _truncate(path, keep)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and "not a readable .npz" in msg and "re-download" in msg
    assert "\n" not in msg


def test_npz_with_a_corrupted_member_is_one_error(
    tmp_path: Path, make_dataset: Callable[..., EpisodeDataset]
) -> None:
    path = _npz(tmp_path, make_dataset)
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(60)  # inside the first (compressed) array
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset(path)


def test_text_file_named_npz_is_not_a_pickle_message(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("states,actions\n1,2\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and "not a readable .npz" in msg
    assert "pickle" not in msg.lower()


def test_npz_without_episodes_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(
        path,
        states=np.zeros((0, 11), np.float32),
        actions=np.zeros((0, 3), np.float32),
        traj_lengths=np.zeros(0, np.int64),
    )
    with pytest.raises(DatasetError, match=r"empty\.npz' holds no transitions"):
        load_dataset(path)


def test_file_named_hdf5_that_is_not_hdf5_is_one_error(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    path = tmp_path / "low_dim.hdf5"
    path.write_bytes(b"\x89HDF\r\n" + bytes(10))  # a cut-off HDF5 signature
    with pytest.raises(DatasetError, match=r"low_dim\.hdf5' is not a readable \.hdf5"):
        load_dataset(path)


# ------------------------------------------------------------------------------ Minari
@pytest.fixture
def minari_dataset(make_dataset: Callable[..., EpisodeDataset]) -> Path:
    """A 3-episode arrow dataset; returns its directory (the one holding ``data/``)."""
    return Path(write_minari(make_dataset(env_id="Hopper-v5"), DATASET_ID))


def test_truncated_minari_arrow_file_is_one_error_naming_it(minari_dataset: Path) -> None:
    arrow = minari_dataset / "data" / "1" / "part-0.arrow"
    _truncate(arrow)
    with pytest.raises(DatasetError) as err:
        load_dataset(DATASET_ID)
    msg = str(err.value)
    assert "damaged" in msg and str(arrow) in msg and f"delete {minari_dataset} " in msg
    assert "\n" not in msg


def test_minari_dataset_missing_an_episode_is_not_silently_shorter(minari_dataset: Path) -> None:
    (minari_dataset / "data" / "2" / "part-0.arrow").unlink()
    with pytest.raises(DatasetError, match="lists 3 episodes but 2 could be read"):
        load_dataset(minari_dataset)  # by path, too
    shutil.rmtree(minari_dataset / "data" / "1")
    with pytest.raises(DatasetError, match=r"damaged.*data/1"):
        load_dataset(DATASET_ID)


# ------------------------------------------------------------------------ window cache
def test_damaged_window_cache_entry_is_rebuilt(
    tmp_path: Path, make_dataset: Callable[..., EpisodeDataset], capsys: pytest.CaptureFixture
) -> None:
    import pyarrow.parquet as pq

    ds = make_dataset(lengths=(30, 20, 25))
    first = prepare_offline_data(ds, horizon=4, cache_dir=tmp_path, rows_per_file=20)
    parts = sorted(Path(first.path).glob("part-*.parquet"))
    assert not first.cached and len(parts) > 1
    _truncate(parts[1])

    again = prepare_offline_data(ds, horizon=4, cache_dir=tmp_path, rows_per_file=20)
    out = capsys.readouterr().out
    assert not again.cached and again.path == first.path
    assert f"cache entry '{first.path}' was damaged" in out and parts[1].name in out
    rows = sum(pq.read_metadata(p).num_rows for p in Path(again.path).glob("part-*.parquet"))
    assert rows == again.num_samples == first.num_samples
    assert prepare_offline_data(ds, horizon=4, cache_dir=tmp_path, rows_per_file=20).cached
    # Nothing left beside the entry (the damaged copy is deleted).
    assert [p.name for p in Path(first.path).parent.iterdir()] == [Path(first.path).name]


def test_window_cache_entry_with_damaged_meta_is_rebuilt(
    tmp_path: Path, make_dataset: Callable[..., EpisodeDataset], capsys: pytest.CaptureFixture
) -> None:
    ds = make_dataset()
    first = prepare_offline_data(ds, horizon=2, cache_dir=tmp_path)
    (Path(first.path) / META_FILE).write_text('{"num_samp')
    again = prepare_offline_data(ds, horizon=2, cache_dir=tmp_path)
    assert not again.cached and META_FILE in capsys.readouterr().out
    assert json.loads((Path(again.path) / META_FILE).read_text())["num_samples"] > 0


# ---------------------------------------------------------------- out-of-bounds actions
def _scaled(make_dataset: Callable[..., EpisodeDataset], factor: float) -> EpisodeDataset:
    ds = make_dataset(name="scaled")
    for ep in ds.episodes:
        ep.actions *= factor
    return ds


def test_actions_far_outside_the_bounds_are_an_error_naming_the_override(
    make_dataset: Callable[..., EpisodeDataset],
) -> None:
    ds = _scaled(make_dataset, 100.0)
    max_abs = max(float(np.abs(ep.actions).max()) for ep in ds.episodes)
    with pytest.raises(DatasetError) as err:
        validate_dataset(ds, action_space=BOX, env_id="Hopper-v5")
    msg = str(err.value)
    assert "'scaled'" in msg and f"{max_abs:.4g}" in msg and "[-1, 1]" in msg
    assert "--allow-out-of-bounds-actions" in msg and "Hopper-v5" in msg


def test_the_override_accepts_them_with_a_warning(
    make_dataset: Callable[..., EpisodeDataset], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        validate_dataset(
            _scaled(make_dataset, 100.0), action_space=BOX, allow_out_of_bounds_actions=True
        )
    assert "outside the action space bounds" in caplog.text


def test_small_overshoot_is_still_only_a_warning(
    make_dataset: Callable[..., EpisodeDataset], caplog: pytest.LogCaptureFixture
) -> None:
    ds = make_dataset()
    ds.episodes[0].actions[0, 0] = 1.0 + 1e-7  # rounding: silent
    validate_dataset(ds, action_space=BOX)
    ds.episodes[0].actions[0, 0] = 1.05  # recorded before the env's clipping: warned
    with caplog.at_level(logging.WARNING):
        validate_dataset(ds, action_space=BOX)
    assert "outside the action space bounds" in caplog.text
