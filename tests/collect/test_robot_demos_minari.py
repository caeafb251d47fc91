"""Scripted robot demos written as a Minari dataset next to the robomimic HDF5 file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("robosuite", reason="needs robosuite (scripts/setup.sh installs it)")
pytest.importorskip("h5py")

from rllib_diffusion.collect.robot_demos import collect_demos  # noqa: E402
from rllib_diffusion.data import load_minari  # noqa: E402
from rllib_diffusion.data.errors import DatasetError  # noqa: E402
from rllib_diffusion.data.minari_io import read_extra_metadata  # noqa: E402
from rllib_diffusion.data.robomimic_io import load_robomimic_hdf5  # noqa: E402

DATASET_ID = "local/robomimic/lift-scripted-v0"


def test_minari_copy_holds_the_hdf5_demos(isolated_dirs):
    out = isolated_dirs / "lift.hdf5"
    summary = collect_demos("lift", 2, out, progress=False, dataset_id=DATASET_ID)
    from_hdf5 = load_robomimic_hdf5(out)
    from_minari = load_minari(DATASET_ID)
    assert from_minari.env_id == "robomimic/Lift-v0" == from_hdf5.env_id
    assert len(from_minari.episodes) == len(from_hdf5.episodes) == summary["demos"] == 2
    for a, b in zip(from_minari.episodes, from_hdf5.episodes, strict=True):
        np.testing.assert_allclose(a.observations, b.observations, rtol=1e-6)
        np.testing.assert_allclose(a.actions, b.actions, rtol=1e-6)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        assert a.terminations[-1] and a.rewards[-1] == 1.0
    meta = read_extra_metadata(DATASET_ID, "collection")
    assert meta["demos"] == 2 and meta["out"] == str(out)


def test_an_existing_dataset_id_is_refused_before_any_episode(isolated_dirs, monkeypatch):
    collect_demos("lift", 1, isolated_dirs / "a.hdf5", progress=False, dataset_id=DATASET_ID)
    import rllib_diffusion.collect.robot_demos as robot_demos

    def no_env(*args, **kwargs):
        raise AssertionError("an env was built although the output id is taken")

    monkeypatch.setattr(robot_demos, "RobosuiteTaskEnv", no_env)
    with pytest.raises(DatasetError, match="already exists.*--overwrite"):
        collect_demos("lift", 1, isolated_dirs / "b.hdf5", progress=False, dataset_id=DATASET_ID)
    assert not (isolated_dirs / "b.hdf5").exists()
