"""`concat-datasets` (D4RL's medium-expert = medium + expert): every episode kept, in
order, with each source's provenance; bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

import rllib_diffusion.collect.concat as concat_mod
from rllib_diffusion.cli import main
from rllib_diffusion.collect.collect import PROVENANCE_KEY, collect_dataset
from rllib_diffusion.data import load_minari
from rllib_diffusion.data.minari_io import read_extra_metadata

MEDIUM, EXPERT, OUT = "t/hopper/medium-v0", "t/hopper/expert-v0", "t/hopper/medium-expert-v0"


@pytest.fixture
def two_sources(isolated_dirs):
    collect_dataset("Hopper-v5", MEDIUM, num_episodes=3, num_envs=2, seed=1)
    collect_dataset("Hopper-v5", EXPERT, num_episodes=2, num_envs=2, seed=50)
    return isolated_dirs


def _concat(*extra: str) -> list[str]:
    return ["concat-datasets", "--dataset-id", OUT, *extra]


def test_every_episode_kept_in_order_with_provenance(two_sources):
    summary = two_sources / "summary.json"
    assert main(_concat("--sources", MEDIUM, EXPERT, "--json", str(summary))) == 0
    medium, expert, joined = load_minari(MEDIUM), load_minari(EXPERT), load_minari(OUT)
    originals = medium.episodes + expert.episodes
    assert joined.num_episodes == 5 and len(originals) == 5
    for got, want in zip(joined.episodes, originals):
        np.testing.assert_array_equal(got.observations, want.observations)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.rewards, want.rewards)
        np.testing.assert_array_equal(got.terminations, want.terminations)
    assert (joined.ref_min_score, joined.ref_max_score) == (16.7, 3234.3)
    prov = read_extra_metadata(OUT, PROVENANCE_KEY)
    assert prov["kind"] == "concat"
    assert [s["source"] for s in prov["sources"]] == [MEDIUM, EXPERT]
    assert [s["first_episode"] for s in prov["sources"]] == [0, 3]
    assert [s["transitions"] for s in prov["sources"]] == [
        medium.num_transitions,
        expert.num_transitions,
    ]
    # Each source's own provenance (how it was collected) travels with it.
    assert [s["provenance"]["seed"] for s in prov["sources"]] == [1, 50]
    assert summary.is_file()


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_one_source_is_refused(two_sources, capsys):
    assert "at least two datasets" in _one_line_error(_concat("--sources", MEDIUM), capsys)


def test_sources_of_different_envs_are_refused(two_sources, capsys):
    collect_dataset("Pendulum-v1", "t/pendulum/random-v0", num_episodes=1, num_envs=1)
    err = _one_line_error(_concat("--sources", MEDIUM, "t/pendulum/random-v0"), capsys)
    assert "must come from one env" in err and "Pendulum-v1" in err
    assert not (two_sources / "minari" / OUT).exists()


def test_existing_output_is_refused_before_loading(two_sources, capsys, monkeypatch):
    assert main(_concat("--sources", MEDIUM, EXPERT)) == 0

    def never(source):
        raise AssertionError("loaded although the output exists")

    monkeypatch.setattr(concat_mod, "load_dataset", never)
    assert "already exists" in _one_line_error(_concat("--sources", MEDIUM, EXPERT), capsys)


def test_missing_source_is_one_line(two_sources, capsys):
    err = _one_line_error(_concat("--sources", MEDIUM, "t/hopper/nope-v0"), capsys)
    assert "t/hopper/nope-v0" in err
