"""write_minari / load_minari round trips, atomicity, and error messages."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import minari
import numpy as np
import pytest

from rllib_diffusion.data import (
    DatasetError,
    EpisodeDataset,
    load_dataset,
    load_minari,
    write_minari,
)

DATASET_ID = "rllib-diffusion/hopper/test-v0"


def _dirs_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def test_round_trip_by_id_and_path(
    make_dataset: Callable[..., EpisodeDataset],
    assert_same_episodes,
    minari_root: Path,
    tmp_path: Path,
) -> None:
    ds = make_dataset(env_id="Hopper-v5", name="mine", ref_min_score=-20.0, ref_max_score=3000.0)
    path = write_minari(ds, DATASET_ID, algorithm_name="random", author="tests", description="d")
    assert Path(path) == minari_root / DATASET_ID
    assert (Path(path) / "data" / "metadata.json").is_file()

    by_id = load_minari(DATASET_ID)
    assert_same_episodes(ds, by_id)
    assert by_id.env_id == "Hopper-v5"
    assert by_id.name == DATASET_ID
    assert (by_id.ref_min_score, by_id.ref_max_score) == (-20.0, 3000.0)

    # A copy outside MINARI_DATASETS_PATH loads by path (dataset dir or its data/ dir).
    elsewhere = tmp_path / "elsewhere" / "copy"
    shutil.copytree(path, elsewhere)
    shutil.rmtree(path)
    for p in (elsewhere, elsewhere / "data", str(elsewhere)):
        by_path = load_minari(p)
        assert_same_episodes(ds, by_path)
        assert by_path.env_id == "Hopper-v5"
        assert by_path.ref_max_score == 3000.0


def test_minari_sees_a_normal_dataset(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(env_id="Hopper-v5", ref_min_score=0.0, ref_max_score=200.0)
    write_minari(ds, DATASET_ID)
    assert DATASET_ID in minari.list_local_datasets()
    assert "rllib-diffusion/hopper" in minari.namespace.list_local_namespaces()
    mds = minari.load_dataset(DATASET_ID)
    assert mds.total_episodes == ds.num_episodes
    assert mds.total_steps == ds.num_transitions
    # Minari's own normaliser returns a fraction; ours is ×100.
    returns = ds.episode_returns()
    np.testing.assert_allclose(
        100 * minari.get_normalized_score(mds, returns), ds.normalized_score(returns)
    )


@pytest.mark.parametrize("data_format", ["arrow", "hdf5"])
def test_write_without_env_and_from_episode_list(
    make_dataset: Callable[..., EpisodeDataset], assert_same_episodes, data_format: str
) -> None:
    if data_format == "hdf5":
        pytest.importorskip("h5py")
    ds = make_dataset(lengths=(4, 5), obs_dim=2, action_dim=1)
    write_minari(
        ds.episodes, "local/toy-v1", env_id=None, ref_min_score=1.0, data_format=data_format
    )
    back = load_minari("local/toy-v1")
    assert_same_episodes(ds, back)
    assert back.env_id is None
    # A lone ref_min_score is kept (Minari itself would drop it).
    assert (back.ref_min_score, back.ref_max_score) == (1.0, None)


def test_refuses_overwrite_then_overwrites(make_dataset: Callable[..., EpisodeDataset]) -> None:
    first = make_dataset(lengths=(3,), seed=1, env_id="Hopper-v5")
    second = make_dataset(lengths=(5, 6), seed=2, env_id="Hopper-v5")
    write_minari(first, DATASET_ID)
    with pytest.raises(DatasetError, match=r"add --overwrite \(overwrite=True from Python\)"):
        write_minari(second, DATASET_ID)
    assert load_minari(DATASET_ID).num_episodes == 1
    write_minari(second, DATASET_ID, overwrite=True)
    assert load_minari(DATASET_ID).num_transitions == 11


def test_failed_write_leaves_nothing_behind(
    make_dataset: Callable[..., EpisodeDataset], minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = minari.create_dataset_from_buffers

    def write_then_crash(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # files really are written before the failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", write_then_crash)
    ds = make_dataset(env_id="Hopper-v5")
    with pytest.raises(RuntimeError, match="disk full"):
        write_minari(ds, DATASET_ID)
    assert not (minari_root / DATASET_ID).exists()
    assert not any(name.startswith(".rllib-diffusion-tmp") for name in _dirs_under(minari_root))
    with pytest.raises(DatasetError, match="not found locally"):
        load_minari(DATASET_ID)


def test_failed_overwrite_keeps_old_dataset(
    make_dataset: Callable[..., EpisodeDataset], minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_minari(make_dataset(lengths=(3,), env_id="Hopper-v5"), DATASET_ID)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash)
    with pytest.raises(RuntimeError):
        write_minari(make_dataset(lengths=(9,), env_id="Hopper-v5"), DATASET_ID, overwrite=True)
    assert load_minari(DATASET_ID).num_transitions == 3
    assert {p.name for p in minari_root.iterdir()} == {"rllib-diffusion"}


def test_dims_must_match_env(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(obs_dim=5, env_id="Hopper-v5")
    with pytest.raises(DatasetError, match=r"observation dims \[5\].*Hopper-v5"):
        write_minari(ds, DATASET_ID)


def test_missing_dataset_messages(minari_root: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_minari("mujoco/hopper/medium-v0")
    msg = str(err.value)
    assert "not found locally" in msg and str(minari_root) in msg
    assert "add --download" in msg and "network" in msg

    with pytest.raises(DatasetError) as err:
        load_minari("rllib-diffusion/hopper/medium-v0")
    assert "--download will not help" in str(err.value)
    assert "rllib-diffusion collect" in str(err.value)

    with pytest.raises(DatasetError, match="-v<N>"):
        load_minari("hopper-medium")
    with pytest.raises(DatasetError, match="does not exist"):
        load_minari(minari_root / "nope")


def test_not_a_minari_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Minari dataset directory"):
        load_minari(tmp_path / "empty")


def test_load_dataset_dispatch(
    make_dataset: Callable[..., EpisodeDataset], assert_same_episodes, tmp_path: Path
) -> None:
    from rllib_diffusion.data import save_npz

    ds = make_dataset(env_id="Hopper-v5")
    write_minari(ds, DATASET_ID)
    assert_same_episodes(ds, load_dataset(DATASET_ID))
    npz = save_npz(ds, tmp_path / "d.npz")
    assert load_dataset(npz).num_transitions == ds.num_transitions
    for missing in ("missing.npz", "missing.hdf5", "missing.h5"):
        with pytest.raises(DatasetError, match="not found"):
            load_dataset(str(tmp_path / missing))
    with pytest.raises(DatasetError, match="not found locally"):
        load_dataset("mujoco/walker2d/medium-v0")


def test_write_measures_size_once(
    make_dataset: Callable[..., EpisodeDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Minari re-measures the directory after every episode (quadratic in episodes);
    # write_minari must not, and must still record the true size.
    from minari.dataset.minari_storage import MinariStorage

    calls = []
    real = MinariStorage.get_size

    def counting(self: MinariStorage) -> float:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(MinariStorage, "get_size", counting)
    ds = make_dataset(lengths=[2] * 40, env_id="Hopper-v5")
    write_minari(ds, DATASET_ID)
    assert len(calls) <= 2
    mds = minari.load_dataset(DATASET_ID)
    assert mds.total_episodes == 40 and mds.total_steps == 80
    assert mds.storage.metadata["dataset_size"] == real(mds.storage)


def test_write_and_load_under_a_relative_minari_root(
    make_dataset: Callable[..., EpisodeDataset],
    assert_same_episodes,
    minari_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MINARI_DATASETS_PATH=runs/kitchen/minari: Minari joined the relative staging root
    # onto itself (FileNotFoundError); the root is made absolute first.
    monkeypatch.chdir(minari_root.parent)
    monkeypatch.setenv("MINARI_DATASETS_PATH", minari_root.name)
    ds = make_dataset(lengths=(3, 4), env_id="Hopper-v5")
    path = write_minari(ds, DATASET_ID)
    assert Path(path) == minari_root / DATASET_ID
    assert_same_episodes(ds, load_minari(DATASET_ID))
