"""The bulk arrow reader (``minari_arrow.read_arrow_episodes``, used by ``load_minari``):
the same episodes as Minari's own reader for datasets written by Minari itself and by the
bulk writer, Minari's reader for what it does not cover, one-line errors for bad files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pyarrow as pa
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer

from rllib_diffusion.data import (
    DatasetError,
    EpisodeDataset,
    load_minari,
    minari_arrow,
    minari_io,
    write_minari,
)
from rllib_diffusion.data.minari_arrow import EPISODE_FILE
from rllib_diffusion.data.transitions import transition_episodes

DATASET_ID = "rllib-diffusion/bulk-read/test-v0"
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is set to None:UserWarning"),
    pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning"),
]


def _refuse(*_: object, **__: object) -> None:
    raise AssertionError("this reader must not be used here")


def _both_readers(
    dataset: str | Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[EpisodeDataset, EpisodeDataset]:
    """``load_minari(dataset)`` through the bulk reader only (Minari's episode iteration
    refused) and through Minari's reader only (the bulk reader ruled out)."""
    with monkeypatch.context() as patch:
        patch.setattr(minari.MinariDataset, "iterate_episodes", _refuse)
        bulk = load_minari(dataset)
    with monkeypatch.context() as patch:
        patch.setattr(minari_io, "can_read_in_bulk", lambda _: False)
        slow = load_minari(dataset)
    return bulk, slow


def _assert_same_dataset(
    bulk: EpisodeDataset, slow: EpisodeDataset, assert_same_episodes: Callable
) -> None:
    """Every array, dtype and dataset field equal."""
    assert_same_episodes(bulk, slow)
    for field in ("env_id", "name", "ref_min_score", "ref_max_score", "env_kwargs"):
        assert getattr(bulk, field) == getattr(slow, field), field


def _rollout(env: gym.Env, seed: int, max_steps: int) -> EpisodeBuffer:
    """One random-action episode as ``minari.DataCollector`` buffers it (which needs jax,
    not installed here): with its id, seed and per-step infos (reset info first)."""
    obs, info = env.reset(seed=seed)
    keys = sorted(info)  # the keys every step's info has too
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    infos = {key: [info[key]] for key in keys}
    for t in range(max_steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        truncated = truncated or t == max_steps - 1
        for column, value in zip(
            (observations, actions, rewards, terminations, truncations),
            (obs, action, reward, terminated, truncated),
        ):
            column.append(value)
        for key in keys:
            infos[key].append(info[key])
        if terminated or truncated:
            break
    return EpisodeBuffer(
        id=seed,
        seed=seed,
        observations=np.stack(observations),
        actions=np.stack(actions),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        infos=infos,  # lists of numpy scalars, as DataCollector's buffers hold them
    )


def _collect_with_minari(n_episodes: int = 6) -> Path:
    """Hopper-v5 episodes of 3-13 random steps, with ids, seeds and infos, written by
    Minari's own ``ArrowStorage.update_episodes``; returns the ``data/`` directory."""
    env = gym.make("Hopper-v5")
    env.action_space.seed(0)
    buffers = [_rollout(env, i, 3 + 2 * i) for i in range(n_episodes)]
    env.close()
    mds = minari.create_dataset_from_buffers(
        DATASET_ID,
        buffers,
        env="Hopper-v5",
        algorithm_name="random",
        author="t",
        description="d",
        ref_min_score=-1.5,
        ref_max_score=3.0,
        data_format="arrow",
    )
    return Path(mds.storage.data_path)


def test_dataset_collected_by_minari_reads_the_same(
    monkeypatch: pytest.MonkeyPatch, assert_same_episodes: Callable
) -> None:
    data_dir = _collect_with_minari()
    # Minari's own files: an infos column (not read), float64 observations, seeds stored.
    schema = pa.ipc.open_file(str(data_dir / "0" / EPISODE_FILE)).schema
    assert "infos" in schema.names and str(schema.field("observations").type.value_type) == "double"
    bulk, slow = _both_readers(DATASET_ID, monkeypatch)
    _assert_same_dataset(bulk, slow, assert_same_episodes)
    assert bulk.num_episodes == 6 and bulk.env_id == "Hopper-v5"
    assert (bulk.ref_min_score, bulk.ref_max_score) == (-1.5, 3.0)
    for ep, raw in zip(bulk.episodes, minari.load_dataset(DATASET_ID), strict=True):
        np.testing.assert_array_equal(ep.observations, raw.observations.astype(np.float32))
        np.testing.assert_array_equal(ep.truncations, raw.truncations)


@pytest.mark.parametrize("chunk", [3, minari_arrow.READ_CHUNK])
def test_bulk_written_dataset_reads_the_same(
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
    make_dataset: Callable,
    assert_same_episodes: Callable,
) -> None:
    rng = np.random.default_rng(1)
    columns = {
        "obs": rng.standard_normal((20, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (20, 3)).astype(np.float32),
        "rewards": rng.standard_normal(20).astype(np.float32),
        "new_obs": rng.standard_normal((20, 11)).astype(np.float32),
        "terminateds": (rng.random(20) < 0.3).astype(np.float32),
    }
    # Single-step transitions between longer episodes; with chunk 3 the files are
    # concatenated in several chunks, one of them partial.
    episodes = [*make_dataset(lengths=(7, 1)).episodes, *transition_episodes(columns)]
    write_minari(
        EpisodeDataset(episodes, env_id="Hopper-v5", ref_min_score=-2.0, ref_max_score=5.0),
        DATASET_ID,
    )
    monkeypatch.setattr(minari_arrow, "READ_CHUNK", chunk)
    bulk, slow = _both_readers(DATASET_ID, monkeypatch)
    _assert_same_dataset(bulk, slow, assert_same_episodes)
    assert bulk.num_episodes == 22 and [len(e.actions) for e in bulk.episodes[:3]] == [7, 1, 1]
    assert bulk.ref_max_score == 5.0


def test_parquet_and_dict_observations_use_minaris_reader(
    monkeypatch: pytest.MonkeyPatch, make_dataset: Callable, assert_same_episodes: Callable
) -> None:
    ds = make_dataset(lengths=(3, 4), env_id="Hopper-v5")
    write_minari(ds, DATASET_ID, data_format="parquet")
    monkeypatch.setattr(minari_io, "read_arrow_episodes", _refuse)
    assert_same_episodes(load_minari(DATASET_ID), ds)
    # An arrow dataset with a Dict observation space (Minari stores a struct column).
    obs_space = gym.spaces.Dict(
        {"a": gym.spaces.Box(-9, 9, (2,)), "b": gym.spaces.Box(-9, 9, (1,))}
    )
    mds = minari.create_dataset_from_buffers(
        "rllib-diffusion/bulk-read/dict-v0",
        [
            EpisodeBuffer(
                observations={"a": np.ones((3, 2), np.float32), "b": np.zeros((3, 1), np.float32)},
                actions=np.full((2, 3), 0.5, np.float32),
                rewards=np.ones(2),
                terminations=[False, True],
                truncations=[False, False],
            )
        ],
        observation_space=obs_space,
        action_space=gym.spaces.Box(-1, 1, (3,)),
        algorithm_name="a",
        author="t",
        description="d",
        data_format="arrow",
    )
    loaded = load_minari(Path(mds.storage.data_path))
    assert loaded.episodes[0].observations.tolist() == [[1.0, 1.0, 0.0]] * 3


def test_files_out_of_layout_fall_back_to_minaris_reader(
    minari_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_dataset: Callable,
    assert_same_episodes: Callable,
) -> None:
    ds = make_dataset(lengths=(3, 4, 2), env_id="Hopper-v5")
    data_dir = Path(write_minari(ds, DATASET_ID)) / "data"
    meta = json.loads((data_dir / "metadata.json").read_text())
    meta["total_steps"] += 1  # no longer the files' rows: the bulk reader declines
    (data_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(minari_arrow.BulkReadUnsupported, match="hold 9 steps"):
        minari_arrow.read_arrow_episodes(data_dir, 3, 10)
    assert_same_episodes(load_minari(DATASET_ID), ds)  # read by Minari's reader
    monkeypatch.setattr(minari.MinariDataset, "iterate_episodes", _refuse)
    with pytest.raises(AssertionError, match="must not be used"):
        load_minari(DATASET_ID)


def _half_written(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_arrow(path: Path) -> None:
    path.write_bytes(b"ARROW1\x00\x00" + bytes(range(256)) * 4)


def _no_rewards(path: Path) -> None:
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all().drop_columns(["rewards"])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


@pytest.mark.parametrize("damage", [_half_written, _not_arrow, _no_rewards])
def test_damaged_episode_file_is_one_line_naming_it(
    damage: Callable[[Path], None], make_dataset: Callable
) -> None:
    dataset_dir = Path(write_minari(make_dataset(env_id="Hopper-v5"), DATASET_ID))
    bad = dataset_dir / "data" / "1" / EPISODE_FILE
    damage(bad)
    with pytest.raises(DatasetError) as err:
        load_minari(DATASET_ID)
    msg = str(err.value)
    assert f"cannot read episode file {bad} (" in msg and "\n" not in msg
    assert f"delete {dataset_dir} and re-create it" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained trace
