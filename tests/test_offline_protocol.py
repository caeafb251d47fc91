"""``benchmarks/offline_protocol.py`` on hand-made run directories: start order, what
counts as done, when a run resumes, and the per-algorithm figures (mean ± std over the
finished seeds; partial runs kept apart)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark

BUDGET = 4000


@pytest.fixture(scope="module")
def proto():
    return load_benchmark("offline_protocol")


def fake_run(out: Path, steps: int, evals: dict[int, float], final: list[float] | None) -> None:
    out.mkdir(parents=True)
    lines = [
        {"gradient_steps": s, "q_mean": s / 100, "seconds": s / 10}
        | ({"eval_return_mean": evals[s]} if s in evals else {})
        for s in range(1000, steps + 1, 1000)
    ]
    (out / "progress.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if final is not None:
        ev = {"episode_returns": final, "episode_return_mean": float(np.mean(final))}
        (out / "result.json").write_text(json.dumps({"gradient_steps": steps, "evaluation": ev}))


def test_first_seed_of_every_algorithm_starts_before_any_second_seed(proto, tmp_path) -> None:
    runs = proto.protocol_runs(tmp_path)
    seeds = [r.seed for r in runs]
    first_second = seeds.index(1)
    assert all(s == 0 for s in seeds[:first_second])
    assert {r.algo for r in runs[:first_second]} == {a for a, _ in proto.PROTOCOL}
    assert len(runs) == sum(len(s) for _, s in proto.PROTOCOL)


def test_done_partial_and_resume(proto, tmp_path) -> None:
    done, partial, short = (proto.Run("dac", s, tmp_path / f"dac_s{s}") for s in (0, 1, 2))
    fake_run(done.out, BUDGET, {2000: 10.0}, [1.0, 3.0])
    fake_run(partial.out, 2000, {2000: 7.0}, None)
    fake_run(short.out, 2000, {}, [5.0])  # a result of a shorter budget is not "done"
    assert proto.run_state(done, BUDGET, "t") == ("done", BUDGET)
    assert proto.run_state(partial, BUDGET, "t") == ("partial", 2000)
    assert proto.run_state(short, BUDGET, "t") == ("partial", 2000)
    ns = argparse.Namespace(
        dataset="d.npz", gradient_steps=BUDGET, eval_every=2000, eval_episodes=2, tag="t"
    )
    assert "--resume" not in proto.run_command(partial, ns)
    (partial.out / "checkpoint").mkdir()
    cmd = proto.run_command(partial, ns)
    assert cmd[-1] == "--resume" and cmd[cmd.index("--seed") + 1] == "1"


def test_figures_average_finished_seeds_and_keep_partial_apart(proto, tmp_path) -> None:
    runs = [proto.Run("dac", s, tmp_path / f"dac_s{s}") for s in (0, 1, 2)]
    fake_run(runs[0].out, BUDGET, {2000: 10.0}, [1.0, 3.0])  # final mean 2, best 10
    fake_run(runs[1].out, BUDGET, {2000: 1.0}, [6.0, 6.0])  # final mean 6, best 6
    fake_run(runs[2].out, 3000, {2000: 4.0}, None)
    curves = {r.name: proto.run_curves(r, BUDGET, "t") for r in runs}
    assert curves["dac_s0"]["eval_gradient_steps"] == [2000, BUDGET]
    assert curves["dac_s0"]["q_mean"] == [10.0, 20.0, 30.0, 40.0]
    fig = proto.algo_figures(runs, curves)
    assert fig["seeds_done"] == [0, 1]
    assert fig["final_return_mean"] == pytest.approx(4.0)
    assert fig["final_return_std_over_seeds"] == pytest.approx(2.0)
    assert fig["best_eval_per_seed"] == [10.0, 6.0]
    assert fig["partial_runs"] == {"dac_s2": {"gradient_steps": 3000, "last_eval": 4.0}}
    one = proto.algo_figures(runs[:1], curves)  # one seed: a mean, no spread
    assert one["final_return_mean"] == pytest.approx(2.0)
    assert one["final_return_std_over_seeds"] is None


def test_a_run_finished_on_another_machine_is_not_run_again(proto, tmp_path, monkeypatch) -> None:
    """A fresh machine has no run directories: the committed summary says which runs
    finished (at this budget) and keeps their curves; a shorter budget's does not count."""
    monkeypatch.setattr(proto, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "results").mkdir()
    old = proto.Run("dac", 0, tmp_path / "elsewhere" / "dac_s0")
    fake_run(old.out, BUDGET, {2000: 10.0}, [1.0, 3.0])
    curves = proto.run_curves(old, BUDGET, "t")
    summary = {"budget_gradient_steps": BUDGET, "series": {"dac_s0": curves}}
    proto.summary_path("t").write_text(json.dumps(summary))
    fresh = proto.Run("dac", 0, tmp_path / "runs" / "dac_s0")
    other = proto.Run("dac", 1, tmp_path / "runs" / "dac_s1")
    assert proto.run_state(fresh, BUDGET, "t") == ("done (summary)", BUDGET)
    assert proto.run_curves(fresh, BUDGET, "t") == curves
    assert proto.run_state(other, BUDGET, "t") == ("not started", 0)
    assert proto.run_state(fresh, 2 * BUDGET, "t") == ("not started", 0)
    fake_run(fresh.out, 1000, {}, None)  # a local run directory wins over the summary
    assert proto.run_state(fresh, BUDGET, "t") == ("partial", 1000)


def test_data_mc_return_discounts_within_episodes(proto, tmp_path) -> None:
    rewards = np.array([1.0, 1.0, 2.0])
    obs = np.zeros((3, 11), np.float32)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        states=obs,
        actions=np.zeros((3, 3), np.float32),
        rewards=rewards,
        traj_lengths=np.array([2, 1]),
        terminals=np.array([False, True, False]),
    )
    # episode 1: G = [1 + 0.5·1, 1], episode 2: G = [2]
    assert proto.data_mc_return(str(path), gamma=0.5) == pytest.approx((1.5 + 1 + 2) / 3)
