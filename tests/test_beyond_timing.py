"""``benchmarks/beyond_timing.py``: per-arm medians from progress lines and the wall time
to a return from ``beyond.py`` curves (no runs started)."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark

timing = load_benchmark("beyond_timing")


def _rows(samples: list[float], learns: list[float], steps: int = 8000) -> list[dict]:
    return [
        {"env_steps": steps * (i + 1), "sample_seconds": s, "learn_seconds": learn}
        for i, (s, learn) in enumerate(zip(samples, learns))
    ]


def test_arm_figures_drop_the_first_iteration_and_take_medians():
    """The first iteration (warm-up: 100 s) is left out; medians of the rest."""
    fig = timing.arm_figures(_rows([100.0, 2.0, 4.0, 3.0], [100.0, 6.0, 5.0, 7.0]))
    assert fig["iterations"] == 3
    assert (fig["sample_seconds"], fig["learn_seconds"]) == (3.0, 6.0)
    assert fig["env_steps_per_iteration"] == 8000
    assert fig["seconds_per_1k_env_steps"] == pytest.approx(1000 * 9.0 / 8000)


def test_time_to_threshold_costs_each_arms_runs_at_its_own_rate(tmp_path, monkeypatch):
    """The first evaluation at or above the threshold, times the arm's seconds per env
    step; runs of other algorithms in the same result are skipped."""
    monkeypatch.setattr(timing, "RESULTS_DIR", tmp_path)
    series = {
        "dppo_s0": {"eval_env_steps": [0, 100_000, 200_000], "eval_return_mean": [900, 1999, 2100]},
        "reinflow_s0": {"eval_env_steps": [0, 50_000], "eval_return_mean": [900, 2500]},
    }
    (tmp_path / "curves.json").write_text(json.dumps({"series": series}))
    arms = {"d": {"algo": "dppo"}, "r": {"algo": "reinflow"}}
    out = timing.time_to_threshold(
        ["d=curves", "r=curves"], arms, {"d": 6.0, "r": 1.2}, threshold=2000
    )
    assert out["d:curves:dppo_s0"] == {
        "env_steps_to_threshold": 200_000,
        "minutes_at_equal_load": 20.0,
    }
    assert out["r:curves:reinflow_s0"]["minutes_at_equal_load"] == pytest.approx(1.0)
    assert set(out) == {"d:curves:dppo_s0", "r:curves:reinflow_s0"}
    never = timing.time_to_threshold(["d=curves"], arms, {"d": 6.0}, threshold=3000)
    assert never["d:curves:dppo_s0"] == {
        "env_steps_to_threshold": None,
        "minutes_at_equal_load": None,
    }
