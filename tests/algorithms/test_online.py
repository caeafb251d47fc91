"""Offline → online fine-tuning of IDQL and FQL: buffer, episode conversion, a short run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_diffusion.algorithms.offline_q.offline_q import REPLAY_STATE
from rllib_diffusion.algorithms.online import dataset_transitions, episode_transitions
from rllib_diffusion.algorithms.replay import TransitionReplay


def test_episode_transitions_pair_observations_and_mark_only_true_terminations():
    obs = np.arange(8, dtype=np.float32).reshape(4, 2)
    done = SingleAgentEpisode(
        observations=list(obs),
        actions=[np.array([0.1]), np.array([0.2]), np.array([0.3])],
        rewards=[1.0, 2.0, 3.0],
        terminated=True,
        len_lookback_buffer=0,
    )
    cut = SingleAgentEpisode(
        observations=list(obs[:3] + 100),
        actions=[np.array([0.4]), np.array([0.5])],
        rewards=[4.0, 5.0],
        truncated=True,
        len_lookback_buffer=0,
    )
    t = episode_transitions([done, cut])
    np.testing.assert_array_equal(t[Columns.OBS], np.r_[obs[:3], obs[:2] + 100])
    np.testing.assert_array_equal(t[Columns.NEXT_OBS], np.r_[obs[1:], obs[1:3] + 100])
    np.testing.assert_allclose(t[Columns.ACTIONS][:, 0], [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_array_equal(t[Columns.REWARDS], [1, 2, 3, 4, 5])
    # Bootstrapping stops only where the MDP terminated, not at the time limit.
    np.testing.assert_array_equal(t[Columns.TERMINATEDS], [0, 0, 1, 0, 0])


def test_replay_buffer_is_fifo_and_samples_stored_rows():
    """The online phase's buffer is the shared ``TransitionReplay``, filled by columns."""
    buf = TransitionReplay(capacity=5, seed=0)

    def rows(start, n):
        x = np.arange(start, start + n, dtype=np.float32)
        return {
            Columns.OBS: x[:, None],
            Columns.ACTIONS: x[:, None],
            Columns.REWARDS: x,
            Columns.NEXT_OBS: x[:, None] + 1,
            Columns.TERMINATEDS: np.zeros(n, np.float32),
        }

    assert buf.add_columns(rows(0, 3)) == 3
    assert buf.add_columns(rows(3, 4)) == 4  # wraps: 0 and 1 are overwritten
    assert buf.size == 5 and buf.capacity == 5
    sample = buf.sample(200)
    assert set(sample[Columns.REWARDS].tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}
    np.testing.assert_array_equal(sample[Columns.NEXT_OBS][:, 0], sample[Columns.OBS][:, 0] + 1)
    with pytest.raises(ValueError, match="empty"):
        TransitionReplay(3).sample(1)


def _tiny_offline_run(tmp_path, algo: str, num_episodes: int, **settings):
    """A tiny offline run on toy reach data: ``(dataset path, train_offline summary)``."""
    from rllib_diffusion.algorithms.diffusion_ql.train import OfflineSettings, train_offline
    from rllib_diffusion.data import save_npz

    from .test_dppo_learning import biased_dataset

    path = save_npz(biased_dataset(num_episodes=num_episodes, bias=0.3), tmp_path / "reach.npz")
    summary = train_offline(
        OfflineSettings(
            dataset=str(path),
            algo=algo,
            out_dir=str(tmp_path / "offline"),
            steps_per_iteration=20,
            batch_size=32,
            hidden_dims=(16, 16),
            num_candidates=4 if algo == "idql" else None,
            **settings,
        )
    )
    return path, summary


@pytest.mark.parametrize("algo", ["idql", "fql"])
def test_offline_then_online_continues_training_from_the_offline_checkpoint(
    algo, ray_session, tmp_path
):
    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online
    from rllib_diffusion.checkpoints import load_policy_module, read_checkpoint_meta
    from rllib_diffusion.data import load_dataset

    path, offline = _tiny_offline_run(tmp_path, algo, 20, gradient_steps=40, eval_episodes=2)
    online = finetune_online(
        OnlineSettings(
            # Relative, as users type it (RLlib's restore needs it made absolute).
            checkpoint=os.path.relpath(offline["checkpoint"]),
            out_dir=str(tmp_path / "online"),
            env_steps=60,
            env_steps_per_iteration=30,
            updates_per_env_step=0.5,
            eval_interval=0,
            eval_episodes=2,
        )
    )
    n_offline = len(dataset_transitions(load_dataset(str(path)))[Columns.REWARDS])
    progress = [json.loads(x) for x in (tmp_path / "online" / "progress.jsonl").open()]
    assert [p["iteration"] for p in progress] == [1, 2]
    assert online["env_steps"] >= 60
    # The buffer starts with the offline data and grows by what the EnvRunners sampled.
    assert progress[0]["replay_size"] == n_offline + progress[0]["env_steps"]
    assert progress[1]["replay_size"] == n_offline + progress[1]["env_steps"]
    # The critic's diagnostics are in every line (issue 12): Q on data, target, |TD|.
    assert all({"critic_loss", "q_mean", "target_mean"} <= set(p) for p in progress)
    meta = read_checkpoint_meta(online["checkpoint"])
    assert meta["algorithm"] == algo and meta["phase"] == "online"
    before, _ = load_policy_module(offline["checkpoint"])
    after, _ = load_policy_module(online["checkpoint"])
    b, a = before.state_dict(), after.state_dict()
    assert b.keys() == a.keys()
    assert any(not torch.equal(b[k], a[k]) for k in b if b[k].is_floating_point())
    # The checkpoint holds the replay: the offline data and every sampled transition.
    state = _algorithm_state(online["checkpoint"])
    assert state[REPLAY_STATE]["size"] == progress[-1]["replay_size"]
    restored = TransitionReplay(state[REPLAY_STATE]["capacity"])
    restored.set_state(state[REPLAY_STATE])
    np.testing.assert_array_equal(
        restored.data[Columns.REWARDS][:n_offline],
        dataset_transitions(load_dataset(str(path)))[Columns.REWARDS],
    )
    # Offline step counter (40) carried on, plus 0.5 update per env step.
    assert int(a["train_step"]) == 40 + sum(
        max(1, round(0.5 * (p["env_steps"] - q)))
        for p, q in zip(progress, [0, progress[0]["env_steps"]])
    )


def _algorithm_state(checkpoint: str) -> dict:
    """The algorithm's own state in an RLlib checkpoint (``Algorithm.get_state`` less its
    components)."""
    import pickle
    from pathlib import Path

    with open(Path(checkpoint) / "algorithm_state.pkl", "rb") as f:
        return pickle.load(f)


def test_online_flags_map_to_settings_and_wrong_checkpoint_is_one_line_error(tmp_path, capsys):
    from rllib_diffusion.algorithms.online_run import OnlineSettings
    from rllib_diffusion.checkpoints import META_FILE
    from rllib_diffusion.cli import build_parser, main, settings_from_args

    args = build_parser().parse_args(
        [
            "online",
            "--checkpoint",
            "c",
            "--out",
            "o",
            "--env-steps",
            "500",
            "--updates-per-env-step",
            "2",
        ]
    )
    s = settings_from_args(OnlineSettings, args)
    assert (s.checkpoint, s.out_dir, s.env_steps, s.updates_per_env_step) == ("c", "o", 500, 2.0)
    (tmp_path / META_FILE).write_text(json.dumps({"algorithm": "DiffusionBC"}))
    assert main(["online", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rllib-diffusion offline" in err[0] and "DiffusionBC" in err[0]


def test_online_iteration_without_samples_is_skipped_not_fatal(ray_session, tmp_path, monkeypatch):
    """A sample that returns nothing (timeout, restarting runner) costs one iteration
    without updates; the run goes on and records the unchanged buffer."""
    from rllib_diffusion.algorithms.offline_q import offline_q
    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online

    _, offline = _tiny_offline_run(tmp_path, "fql", 10, gradient_steps=20, eval_episodes=1)
    real, calls = offline_q.synchronous_parallel_sample, []

    def second_call_empty(**kw):
        calls.append(1)
        return ([], []) if len(calls) == 2 else real(**kw)

    monkeypatch.setattr(offline_q, "synchronous_parallel_sample", second_call_empty)
    finetune_online(
        OnlineSettings(
            checkpoint=offline["checkpoint"],
            out_dir=str(tmp_path / "online"),
            env_steps=60,
            env_steps_per_iteration=30,
            eval_interval=0,
            eval_episodes=1,
        )
    )
    progress = [json.loads(x) for x in (tmp_path / "online" / "progress.jsonl").open()]
    assert [p["iteration"] for p in progress] == [1, 2, 3]
    assert progress[1]["env_steps"] == progress[0]["env_steps"]
    assert progress[1]["replay_size"] == progress[0]["replay_size"]
    assert progress[2]["replay_size"] > progress[1]["replay_size"]


# ------------------------------------------------------------------------------ resume
def _online(offline_ckpt: str, out, env_steps: int, **kw) -> dict:
    """A tiny online phase from ``offline_ckpt`` into ``out``: iterations of 30 env steps,
    0.5 gradient steps per env step, one evaluation episode at the end, seed 5; ``kw``
    (``resume``, ``knobs``, ...) over those. Its summary."""
    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online

    return finetune_online(
        OnlineSettings(
            checkpoint=offline_ckpt,
            out_dir=str(out),
            env_steps=env_steps,
            env_steps_per_iteration=30,
            updates_per_env_step=0.5,
            eval_interval=0,
            eval_episodes=1,
            seed=5,
            **kw,
        )
    )


def _fake_online_run(tmp_path, **online):
    """Metadata files only (no Ray): an offline FQL checkpoint and an online run's
    checkpoint at iteration 2 with ``online`` settings; returns (offline, out)."""
    from dataclasses import asdict
    from pathlib import Path

    from rllib_diffusion.algorithms.online_run import OnlineSettings
    from rllib_diffusion.checkpoints import META_FILE, CheckpointMeta

    offline = tmp_path / "offline" / "checkpoint"
    offline.mkdir(parents=True)
    (offline / META_FILE).write_text(CheckpointMeta("fql", env_id="X-v0", settings={}).to_json())
    out = tmp_path / "online"
    (out / "checkpoint").mkdir(parents=True)
    settings = asdict(OnlineSettings(checkpoint=str(offline), out_dir=str(out), **online))
    meta = CheckpointMeta(
        "fql",
        phase="online",
        offline_checkpoint=str(Path(offline).resolve()),
        settings={"online": settings},
        iteration=2,
    )
    (out / "checkpoint" / META_FILE).write_text(meta.to_json())
    return offline, out


def test_online_resume_with_other_settings_is_refused_in_one_line(tmp_path, capsys):
    from rllib_diffusion.cli import main

    offline, out = _fake_online_run(tmp_path, updates_per_env_step=0.5, seed=3)
    argv = ["online", "--checkpoint", str(offline), "--out", str(out), "--resume"]
    # Budget and cadence may change; updates per env step and seed may not.
    assert main([*argv, "--env-steps", "90", "--updates-per-env-step", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "updates_per_env_step: checkpoint 0.5 vs now 2.0" in err[0]
    assert "seed: checkpoint 3 vs now 0" in err[0]
    assert "env_steps" not in err[0] and "Pass the original flags" in err[0]


def test_online_resume_checks_what_it_continues(tmp_path, monkeypatch, capsys):
    """The same settings (a larger budget, another checkpoint cadence, the offline
    checkpoint spelled another way) pass to the build; an offline run's checkpoint in
    --out is refused, and --resume without a checkpoint says so and starts fresh."""
    from rllib_diffusion.algorithms import online_run
    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online
    from rllib_diffusion.checkpoints import META_FILE, CheckpointError

    class Built(Exception):
        pass

    def build(self):
        raise Built(self.resuming)

    monkeypatch.setattr(online_run.OnlineFamily, "build", build)
    offline, out = _fake_online_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    same = OnlineSettings(
        checkpoint="offline/checkpoint",
        out_dir=str(out),
        env_steps=500_000,
        checkpoint_interval=1,
        resume=True,
    )
    with pytest.raises(Built, match="True"):
        finetune_online(same)

    meta = json.loads((out / "checkpoint" / META_FILE).read_text())
    (out / "checkpoint" / META_FILE).write_text(json.dumps({**meta, "phase": None}))
    with pytest.raises(CheckpointError, match="offline` run's checkpoint, not an online run's"):
        finetune_online(same)

    fresh = tmp_path / "fresh"
    capsys.readouterr()
    with pytest.raises(Built, match="False"):
        finetune_online(OnlineSettings(checkpoint=str(offline), out_dir=str(fresh), resume=True))
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [
        f"[online] --resume: no checkpoint at '{fresh / 'checkpoint'}' yet; starting fresh."
    ]
    assert not fresh.exists()  # nothing written before the build failed


@pytest.mark.slow
def test_online_resume_continues_counters_and_replay_exactly(ray_session, tmp_path):
    """Two iterations, then --resume with a larger budget: the third iteration starts
    from the checkpoint's replay (rows, write slot, sampling RNG), env-step count,
    gradient-step counter and iteration."""
    import shutil

    from rllib_diffusion.checkpoints import load_policy_module

    _, offline = _tiny_offline_run(tmp_path, "fql", 10, gradient_steps=20, eval_episodes=1)
    out = tmp_path / "online"

    def run(env_steps: int, **kw) -> dict:
        return _online(offline["checkpoint"], out, env_steps, **kw)

    first = run(60)
    shutil.copytree(first["checkpoint"], tmp_path / "at2")
    resumed = run(90, resume=True)
    progress = [json.loads(x) for x in (out / "progress.jsonl").open()]
    assert [p["iteration"] for p in progress] == [1, 2, 3]
    assert progress[:2] == first["progress"]
    new = progress[2]["env_steps"] - progress[1]["env_steps"]
    assert new > 0 and resumed["env_steps"] == progress[2]["env_steps"] >= 90
    assert resumed["resumed"] == {
        "from_iteration": 2,
        "env_steps": progress[1]["env_steps"],
        "replay_size": progress[1]["replay_size"],
    }
    assert resumed["start_evaluation"] == first["start_evaluation"]
    # The replay continues: the checkpoint's rows, then the new ones; its sampling RNG
    # went on from the checkpoint's state by exactly the third iteration's draw.
    before = _algorithm_state(tmp_path / "at2")[REPLAY_STATE]
    after = _algorithm_state(resumed["checkpoint"])[REPLAY_STATE]
    assert after["size"] == before["size"] + new == progress[2]["replay_size"]
    for key, rows in before["data"].items():
        np.testing.assert_array_equal(after["data"][key][: before["size"]], rows)
    updates = max(1, round(0.5 * new))
    replay = TransitionReplay(before["capacity"])
    replay.set_state(before)
    replay.rng.integers(0, after["size"], size=updates * 32)
    assert replay.rng.bit_generator.state == after["rng"]
    # The gradient-step counter goes on from the checkpoint's.
    at2, _ = load_policy_module(tmp_path / "at2")
    end, _ = load_policy_module(resumed["checkpoint"])
    assert int(end.state_dict()["train_step"]) == int(at2.state_dict()["train_step"]) + updates
