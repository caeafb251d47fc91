"""DPPO npz and robomimic HDF5 import."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rllib_diffusion.data import (
    DatasetError,
    EpisodeDataset,
    load_npz,
    load_robomimic_hdf5,
    save_npz,
)
from rllib_diffusion.data.robomimic_io import read_env_name


def _dppo_file(
    path: Path, lengths: list[int], *, rewards: bool = True, terminals: bool = True
) -> dict:
    n = sum(lengths)
    arrays = {
        "states": np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        "actions": -np.arange(n, dtype=np.float32).reshape(n, 1),
        "traj_lengths": np.array(lengths),
    }
    if rewards:
        arrays["rewards"] = np.linspace(0, 1, n, dtype=np.float32)
    if terminals:
        t = np.zeros(n, dtype=bool)
        t[lengths[0] - 1] = True  # only the first trajectory terminates
        arrays["terminals"] = t
    np.savez(path, **arrays)
    return arrays


def test_load_dppo_npz_splits_trajectories(tmp_path: Path) -> None:
    arrays = _dppo_file(tmp_path / "train.npz", [3, 4, 2])
    ds = load_npz(tmp_path / "train.npz", env_id="Hopper-v5")
    assert [ep.length for ep in ds.episodes] == [3, 4, 2]
    assert ds.name == "train" and ds.env_id == "Hopper-v5"
    second = ds.episodes[1]
    np.testing.assert_array_equal(second.observations[:-1], arrays["states"][3:7])
    # DPPO stores no final observation: the last state is repeated.
    np.testing.assert_array_equal(second.observations[-1], arrays["states"][6])
    np.testing.assert_array_equal(second.actions, arrays["actions"][3:7])
    np.testing.assert_array_equal(second.rewards, arrays["rewards"][3:7])
    assert ds.episodes[0].terminations.tolist() == [False, False, True]
    assert ds.episodes[0].truncations.tolist() == [False, False, False]
    assert second.truncations.tolist() == [False, False, False, True]


def test_npz_without_rewards_fills_zeros(tmp_path: Path) -> None:
    _dppo_file(tmp_path / "a.npz", [2, 2], rewards=False, terminals=False)
    ds = load_npz(tmp_path / "a.npz")
    assert all((ep.rewards == 0).all() and not ep.terminations.any() for ep in ds.episodes)


def test_save_load_round_trip_keeps_final_obs(
    make_dataset: Callable[..., EpisodeDataset], assert_same_episodes, tmp_path: Path
) -> None:
    ds = make_dataset(lengths=(5, 1, 8))
    out = save_npz(ds, tmp_path / "sub" / "rt.npz")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["rt.npz"]  # no temp files
    with np.load(out) as f:
        assert f["traj_lengths"].tolist() == [5, 1, 8]
        assert f["states"].shape == (14, 11)
    assert_same_episodes(ds, load_npz(out))


def test_npz_round_trip_keeps_env_and_reference_scores(
    make_dataset: Callable[..., EpisodeDataset], tmp_path: Path
) -> None:
    ds = make_dataset(lengths=(3, 4))
    ds.env_id, ds.ref_min_score, ds.ref_max_score = "Hopper-v5", 16.7, 3234.3
    back = load_npz(save_npz(ds, tmp_path / "m.npz"))
    assert (back.env_id, back.ref_min_score, back.ref_max_score) == ("Hopper-v5", 16.7, 3234.3)
    assert load_npz(tmp_path / "m.npz", env_id="Walker2d-v5").env_id == "Walker2d-v5"
    ds.env_id, ds.ref_min_score, ds.ref_max_score = None, None, None
    bare = load_npz(save_npz(ds, tmp_path / "b.npz"))
    assert (bare.env_id, bare.ref_min_score, bare.ref_max_score) == (None, None, None)


def test_npz_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_npz(tmp_path / "nope.npz")

    np.savez(tmp_path / "keys.npz", observations=np.zeros((3, 2)), actions=np.zeros((3, 1)))
    with pytest.raises(DatasetError, match=r"\['states', 'traj_lengths'\]"):
        load_npz(tmp_path / "keys.npz")

    np.savez(
        tmp_path / "sum.npz",
        states=np.zeros((5, 2)),
        actions=np.zeros((5, 1)),
        traj_lengths=np.array([2, 2]),
    )
    with pytest.raises(DatasetError, match=r"sum\(traj_lengths\) = 4 but there are 5"):
        load_npz(tmp_path / "sum.npz")

    np.savez(
        tmp_path / "rew.npz",
        states=np.zeros((4, 2)),
        actions=np.zeros((4, 1)),
        traj_lengths=np.array([2, 2]),
        rewards=np.zeros(3),
    )
    with pytest.raises(DatasetError, match="'rewards' has 3 entries"):
        load_npz(tmp_path / "rew.npz")


def _robomimic_file(path: Path, lengths: list[int]) -> dict[str, np.ndarray]:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1})
        # Written out of order: demo_10 must load after demo_2.
        for name, t in sorted(zip([f"demo_{i}" for i in (0, 2, 10)], lengths), reverse=True):
            g = data.create_group(name)
            full = {
                "robot0_eef_pos": rng.standard_normal((t + 1, 3)),
                "robot0_eef_quat": rng.standard_normal((t + 1, 4)),
                "object": rng.standard_normal((t + 1, 5)),
                "agentview_image": rng.integers(0, 255, (t + 1, 8, 8, 3)),
            }
            for key, arr in full.items():
                g.create_dataset(f"obs/{key}", data=arr[:-1])
                g.create_dataset(f"next_obs/{key}", data=arr[1:])
            g.create_dataset("actions", data=rng.uniform(-1, 1, (t, 7)))
            g.create_dataset("rewards", data=np.arange(t, dtype=np.float64))
            dones = np.zeros(t, dtype=np.int64)
            dones[-1] = name != "demo_2"
            g.create_dataset("dones", data=dones)
            expected[name] = np.concatenate(
                [full["robot0_eef_pos"], full["robot0_eef_quat"], full["object"]], axis=1
            ).astype(np.float32)
    return expected


def test_robomimic_tiny_file(tmp_path: Path) -> None:
    expected = _robomimic_file(tmp_path / "low_dim.hdf5", [4, 6, 3])
    ds = load_robomimic_hdf5(tmp_path / "low_dim.hdf5")
    assert ds.name == "low_dim" and ds.env_id == "robomimic/Lift-v0"  # from env_args
    assert [ep.length for ep in ds.episodes] == [4, 6, 3]  # demo_0, demo_2, demo_10
    for ep, name in zip(ds.episodes, ("demo_0", "demo_2", "demo_10")):
        # Default keys in robomimic order; final observation from next_obs.
        np.testing.assert_array_equal(ep.observations, expected[name])
    assert ds.episodes[0].terminations[-1] and not ds.episodes[0].truncations[-1]
    assert ds.episodes[1].truncations[-1] and not ds.episodes[1].terminations.any()
    assert ds.action_dim == 7
    assert read_env_name(tmp_path / "low_dim.hdf5") == "Lift"

    only = load_robomimic_hdf5(tmp_path / "low_dim.hdf5", obs_keys=["object", "robot0_eef_pos"])
    np.testing.assert_array_equal(
        only.episodes[0].observations, expected["demo_0"][:, [7, 8, 9, 10, 11, 0, 1, 2]]
    )


def test_robomimic_errors(tmp_path: Path) -> None:
    _robomimic_file(tmp_path / "f.hdf5", [2, 2, 2])
    with pytest.raises(DatasetError, match=r"\['nope'\] not in the file; available keys"):
        load_robomimic_hdf5(tmp_path / "f.hdf5", obs_keys=["nope"])
    with pytest.raises(DatasetError, match="not low-dimensional"):
        load_robomimic_hdf5(tmp_path / "f.hdf5", obs_keys=["agentview_image"])
    with pytest.raises(DatasetError, match="not found"):
        load_robomimic_hdf5(tmp_path / "missing.hdf5")
