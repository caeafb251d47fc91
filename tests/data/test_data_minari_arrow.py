"""The bulk arrow writer (minari_arrow): the same files as Minari's own writer, read back
identically by ``minari.load_dataset`` and ``load_minari``, provenance kept, atomic."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer

from rllib_diffusion import columns as C
from rllib_diffusion.data import EpisodeDataset, load_minari, minari_io, write_minari
from rllib_diffusion.data.minari_arrow import EPISODE_FILE, can_write_in_bulk
from rllib_diffusion.data.synthetic import PROVENANCE_KEY, write_synthetic_transitions
from rllib_diffusion.data.transitions import transition_episodes

BULK_ID = "rllib-diffusion/bulk/test-v0"
MINARI_ID = "rllib-diffusion/minari/test-v0"
# Minari warns for every unset optional field of the datasets written here directly.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is set to None:UserWarning"),
    pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning"),
]
N_TRANSITIONS = 300
# Keys of the dataset's metadata.json that both writers must agree on.
_SAME_KEYS = (
    "total_episodes",
    "total_steps",
    "dataset_size",
    "data_format",
    "observation_space",
    "action_space",
    "env_spec",
)


def _transitions(n: int = N_TRANSITIONS, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` random transitions of Hopper's dims, about one in five terminal."""
    rng = np.random.default_rng(seed)
    return {
        C.OBS: rng.standard_normal((n, 11)).astype(np.float32),
        C.ACTIONS: rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        C.REWARDS: rng.standard_normal(n).astype(np.float32),
        C.NEXT_OBS: rng.standard_normal((n, 11)).astype(np.float32),
        C.TERMINATEDS: (rng.random(n) < 0.2).astype(np.float32),
    }


def _write_with_minari(episodes: list, env_id: str | None) -> Path:
    """The same episodes written by Minari's own ``ArrowStorage.update_episodes`` (the
    slow path; ``_fill_storage`` only skips its per-episode re-measuring of the size)."""
    obs_space, act_space = minari_io._spaces_for(env_id, 11, 3)
    buffers = minari_io._episode_buffers(EpisodeBuffer, episodes, obs_space, act_space)
    mds = minari.create_dataset_from_buffers(
        MINARI_ID,
        [],
        env=env_id,
        observation_space=obs_space,
        action_space=act_space,
        algorithm_name="a",
        author="t",
        description="d",
        data_format="arrow",
    )
    minari_io._fill_storage(mds.storage, buffers)
    return Path(mds.storage.data_path)


def _files(data_dir: Path) -> dict[str, bytes]:
    """Every file under ``data_dir`` but the dataset's metadata.json, by relative path."""
    return {
        p.relative_to(data_dir).as_posix(): p.read_bytes()
        for p in data_dir.rglob("*")
        if p.is_file() and p != data_dir / "metadata.json"
    }


@pytest.mark.parametrize("env_id", ["Hopper-v5", None])
def test_bulk_files_are_minaris(env_id: str | None, make_dataset: Callable) -> None:
    # Single-step transitions (terminal and not) and longer episodes, in one dataset.
    episodes = transition_episodes(_transitions()) + list(make_dataset(lengths=(7, 1, 12)).episodes)
    path = write_minari(
        episodes, BULK_ID, env_id=env_id, algorithm_name="a", author="t", description="d"
    )
    bulk_dir = Path(path) / "data"
    minari_dir = _write_with_minari(episodes, env_id)
    bulk_files, minari_files = _files(bulk_dir), _files(minari_dir)
    assert sorted(bulk_files) == sorted(minari_files)
    assert f"0/{EPISODE_FILE}" in bulk_files and len(bulk_files) == 2 * len(episodes)
    assert bulk_files == minari_files  # byte for byte, episode metadata.json included
    bulk_meta = json.loads((bulk_dir / "metadata.json").read_text())
    minari_meta = json.loads((minari_dir / "metadata.json").read_text())
    assert {k: bulk_meta.get(k) for k in _SAME_KEYS} == {k: minari_meta.get(k) for k in _SAME_KEYS}


def test_bulk_round_trip_matches_minari_path(assert_same_episodes: Callable) -> None:
    episodes = transition_episodes(_transitions())
    write_minari(episodes, BULK_ID, env_id="Hopper-v5")
    _write_with_minari(episodes, "Hopper-v5")
    bulk, slow = load_minari(BULK_ID), load_minari(MINARI_ID)
    assert_same_episodes(bulk, slow)
    assert bulk.env_id == slow.env_id == "Hopper-v5"
    terminal = _transitions()[C.TERMINATEDS] >= 0.5
    assert terminal.any() and (~terminal).any()
    assert [bool(e.terminations[0]) for e in bulk.episodes] == terminal.tolist()
    assert [bool(e.truncations[0]) for e in bulk.episodes] == (~terminal).tolist()
    for a, b in zip(minari.load_dataset(BULK_ID), minari.load_dataset(MINARI_ID), strict=True):
        assert a.id == b.id
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert a.infos == b.infos == {}


def test_synthetic_provenance_and_scores_kept() -> None:
    provenance = {"generator": "/ckpt", "n": N_TRANSITIONS}
    write_synthetic_transitions(
        _transitions(),
        BULK_ID,
        env_id="Hopper-v5",
        source={"ref_min_score": -1.0, "ref_max_score": 2.0},
        algorithm_name="synther",
        description="d",
        provenance=provenance,
    )
    assert minari_io.read_extra_metadata(BULK_ID, PROVENANCE_KEY) == provenance
    ds = load_minari(BULK_ID)
    assert (ds.ref_min_score, ds.ref_max_score) == (-1.0, 2.0)
    assert len(ds.episodes) == N_TRANSITIONS and ds.num_transitions == N_TRANSITIONS
    mds = minari.load_dataset(BULK_ID)
    assert mds.total_episodes == mds.total_steps == N_TRANSITIONS
    assert mds.storage.metadata["dataset_size"] == mds.storage.get_size()


def test_failed_bulk_write_leaves_nothing_behind(
    minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = minari_io.write_arrow_episodes

    def write_then_crash(*args: object) -> None:
        real(*args)  # the episode files really are written before the failure
        raise OSError("disk full")

    monkeypatch.setattr(minari_io, "write_arrow_episodes", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_minari(transition_episodes(_transitions(20)), BULK_ID, env_id="Hopper-v5")
    assert [p.name for p in minari_root.iterdir()] == []


def test_other_formats_and_extras_use_minaris_writer(make_dataset: Callable) -> None:
    ds: EpisodeDataset = make_dataset(lengths=(3, 4), env_id="Hopper-v5")
    write_minari(ds, BULK_ID, data_format="parquet")
    mds = minari.load_dataset(BULK_ID)
    assert mds.storage.metadata["data_format"] == "parquet" and mds.total_steps == 7
    box = mds.storage
    plain = EpisodeBuffer(
        observations=np.zeros((2, 11)),
        actions=np.zeros((1, 3)),
        rewards=np.zeros(1),
        terminations=[True],
        truncations=[False],
    )
    assert can_write_in_bulk(box, [plain], "arrow")
    assert not can_write_in_bulk(box, [plain], "parquet")
    with_info = EpisodeBuffer(**{**plain.__dict__, "infos": {"x": np.zeros(2)}})
    assert not can_write_in_bulk(box, [with_info], "arrow")
