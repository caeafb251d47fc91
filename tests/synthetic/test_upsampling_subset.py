"""The episode subset and the union's real ratio of ``benchmarks/synthetic_upsampling.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rllib_diffusion.data import load_dataset
from rllib_diffusion.data.episodes import Episode, EpisodeDataset
from rllib_diffusion.data.npz_io import save_npz
from tests.benchmark_scripts import load_benchmark


def _script():
    return load_benchmark("synthetic_upsampling")


def test_select_episodes_is_exact_and_deterministic() -> None:
    s = _script()
    a = s.select_episodes(200, 0.1, seed=0)
    assert len(a) == 20 and len(set(a.tolist())) == 20
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 200
    np.testing.assert_array_equal(a, s.select_episodes(200, 0.1, seed=0))
    assert not np.array_equal(a, s.select_episodes(200, 0.1, seed=1))
    # the same draw as numpy's generator, sorted
    np.testing.assert_array_equal(
        a, np.sort(np.random.default_rng(0).choice(200, size=20, replace=False))
    )
    assert len(s.select_episodes(7, 0.01, seed=0)) == 1
    np.testing.assert_array_equal(s.select_episodes(5, 1.0, seed=3), np.arange(5))
    with pytest.raises(ValueError, match="--fraction"):
        s.select_episodes(10, 0.0, seed=0)


def test_union_real_ratio_is_whole_rows() -> None:
    s = _script()
    # 6,191 real of 61,915 in a batch of 256: 25.6 rows -> 26 rows
    assert s.union_real_ratio(6191, 61915, 256) == 26 / 256
    assert s.union_real_ratio(50, 100, 4) == 0.5
    assert s.union_real_ratio(1, 10_000, 256) == 1 / 256  # at least one real row
    assert s.union_real_ratio(9_999, 10_000, 256) == 255 / 256  # and one synthetic


def _episode(i: int, length: int) -> Episode:
    obs = np.full((length + 1, 2), float(i), dtype=np.float32)
    return Episode(
        observations=obs,
        actions=np.zeros((length, 1), dtype=np.float32),
        rewards=np.full(length, float(i), dtype=np.float32),
        terminations=np.r_[np.zeros(length - 1), 1.0].astype(bool),
        truncations=np.zeros(length, dtype=bool),
    )


def test_write_subset_keeps_the_chosen_episodes(tmp_path: Path) -> None:
    s = _script()
    full = EpisodeDataset(
        episodes=[_episode(i, 3 + i) for i in range(10)],
        env_id="Hopper-v5",
        name="toy",
        ref_min_score=-1.0,
        ref_max_score=2.0,
    )
    src = save_npz(full, tmp_path / "toy.npz")
    info = s.write_subset(src, 0.3, 0, tmp_path / "toy-30pct.npz")
    idx = info["episode_indices"]
    assert idx == s.select_episodes(10, 0.3, 0).tolist()
    sub = load_dataset(tmp_path / "toy-30pct.npz")
    assert [int(e.rewards[0]) for e in sub.episodes] == idx
    assert sub.num_transitions == sum(3 + i for i in idx) == info["subset"]["num_transitions"]
    assert (sub.env_id, sub.ref_min_score, sub.ref_max_score) == ("Hopper-v5", -1.0, 2.0)
    assert info["full"]["num_transitions"] == full.num_transitions


def test_terminals_is_passed_to_synthesize_only_when_given(tmp_path: Path) -> None:
    s = _script()

    def command(*argv: str) -> list[str]:
        args = s.parse_args(["--out", str(tmp_path), *argv])
        return s.generator_command(s.Plan(args, tmp_path, tmp_path / "sub.npz", 10, 2))

    assert "--terminals" not in command()  # synthesize's own default
    cmd = command("--terminals", "env-rule")
    assert cmd[cmd.index("--terminals") + 1] == "env-rule"
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "result.json").write_text("{}")  # trained: sampling only
    cmd = command("--terminals", "env-rule")
    assert "--generator" in cmd and cmd[cmd.index("--terminals") + 1] == "env-rule"
