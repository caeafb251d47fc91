"""Offline runs (Q-learners and diffusion BC) continue a killed run with ``resume``."""

from __future__ import annotations

import json

import pytest

from rllib_diffusion.algorithms import offline_run
from rllib_diffusion.algorithms.diffusion_ql import OfflineSettings, train_offline
from rllib_diffusion.checkpoints import CheckpointError, read_checkpoint_meta
from rllib_diffusion.cli import build_parser, settings_from_args

from ..conftest import use_data_root

MID = "default_policy"


class Killed(Exception):
    """Stands in for SIGKILL: raised inside the training loop."""


def idql_settings(dataset_id: str, out, **kw) -> OfflineSettings:
    return OfflineSettings(
        dataset=dataset_id,
        out_dir=str(out),
        algo="idql",
        gradient_steps=80,
        steps_per_iteration=20,
        batch_size=32,
        hidden_dims=(16, 16),
        num_candidates=4,
        checkpoint_interval=2,
        **{"eval_episodes": 1, **kw},
    )


def _kill_at_iteration(monkeypatch, iteration: int) -> None:
    real = offline_run.offline_progress_line

    def line_or_kill(result, it, **kw):
        if it == iteration:
            raise Killed(f"killed in iteration {it}")
        return real(result, it, **kw)

    monkeypatch.setattr(offline_run, "offline_progress_line", line_or_kill)


def test_killed_offline_run_resumes_from_its_checkpoint(
    tiny_dataset, ray_session, tmp_path, monkeypatch
):
    """Kill in iteration 4 (checkpoint at 2): --resume restores the learner state of
    iteration 2 and trains 3 and 4 again, so the run ends with exactly the budget."""
    from rllib_diffusion.algorithms import registry

    root, dataset_id = tiny_dataset
    use_data_root(monkeypatch, root)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_at_iteration(m, 4)
        with pytest.raises(Killed):
            train_offline(idql_settings(dataset_id, out))
    meta = read_checkpoint_meta(out / "checkpoint")
    assert meta["iteration"] == 2 and meta["train_seconds"] > 0
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in progress] == [1, 2, 3]

    # Resuming with other training settings or as another algorithm is refused.
    with pytest.raises(CheckpointError, match=r"other settings: gamma: checkpoint 0.99"):
        train_offline(idql_settings(dataset_id, out, resume=True, gamma=0.9))
    fql = OfflineSettings(
        dataset=dataset_id, out_dir=str(out), algo="fql", resume=True, hidden_dims=(16, 16)
    )
    with pytest.raises(CheckpointError, match="not a fql run checkpoint"):
        train_offline(fql)

    summary = train_offline(idql_settings(dataset_id, out, resume=True))
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in progress] == [1, 2, 3, 4]
    assert [x["gradient_steps"] for x in progress] == [20, 40, 60, 80]
    # Time keeps counting from the checkpoint's.
    assert progress[2]["seconds"] > meta["train_seconds"]
    assert summary["gradient_steps"] == 80
    final = registry.get("idql").config_class().algo_class.from_checkpoint(summary["checkpoint"])
    try:
        # 40 restored steps + iterations 3 and 4 (a fresh start would give 40, a
        # repeated iteration 100), and the restored iteration counter.
        assert int(final.learner_group._learner.module[MID].train_step) == 80
        assert final.iteration == 4
    finally:
        final.stop()


def test_cli_offline_and_pretrain_take_resume():
    parser = build_parser()
    args = parser.parse_args(["offline", "--dataset", "d", "--algo", "idql", "--resume"])
    assert settings_from_args(OfflineSettings, args).resume is True
    args = parser.parse_args(["pretrain", "--dataset", "d"])
    assert args.resume is False


@pytest.mark.slow  # ≈ 1–2 min: two short offline runs with an evaluation every iteration
def test_periodic_evaluations_are_fresh_before_and_after_a_resume(
    tiny_dataset, ray_session, tmp_path, monkeypatch
):
    """Each periodic ``eval_return_mean`` is the mean of that evaluation's own episodes,
    not RLlib's window over earlier evaluations, also in a resumed process's first
    evaluation (the checkpoint restores RLlib's metrics)."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    root, dataset_id = tiny_dataset
    use_data_root(monkeypatch, root)
    episodes: list[float] = []
    per_iteration: dict[int, list[float]] = {}
    log_episode = SingleAgentEnvRunner._log_episode_metrics
    real_line = offline_run.offline_progress_line

    def record_episode(self, length, ret, sec):
        episodes.append(float(ret))
        return log_episode(self, length, ret, sec)

    def line(result, it, **kw):
        per_iteration[it] = episodes[:]
        episodes.clear()
        return real_line(result, it, **kw)

    monkeypatch.setattr(SingleAgentEnvRunner, "_log_episode_metrics", record_episode)
    monkeypatch.setattr(offline_run, "offline_progress_line", line)
    evals = {"eval_interval": 1, "eval_episodes": 2}
    with monkeypatch.context() as m:
        _kill_at_iteration(m, 3)
        with pytest.raises(Killed):
            train_offline(idql_settings(dataset_id, tmp_path / "run", **evals))
    episodes.clear()  # the killed iteration's evaluation
    train_offline(idql_settings(dataset_id, tmp_path / "run", resume=True, **evals))
    progress = [
        json.loads(x) for x in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()
    ]
    assert [p["iteration"] for p in progress] == [1, 2, 3, 4]
    for p in progress:
        fresh = per_iteration[p["iteration"]]
        assert len(fresh) == 2, (p["iteration"], fresh)
        assert p["eval_return_mean"] == pytest.approx(sum(fresh) / 2), (p, fresh)
