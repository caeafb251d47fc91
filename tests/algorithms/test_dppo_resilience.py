"""DPPO fine-tuning on clusters: resource flags, EnvRunner crashes, killed-and-resumed runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.finetune import (
    FinetuneSettings,
    dppo_config_from_pretrained,
    finetune,
)
from rllib_diffusion.algorithms.pretrained_weights import policy_module as _single
from rllib_diffusion.checkpoints import (
    CheckpointError,
    load_policy_module,
    progress_up_to,
    resume_checkpoint_meta,
)
from rllib_diffusion.cli import build_parser, finetune_settings_from_args
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.run_loop import runner_health

REPO = Path(__file__).resolve().parents[2]

#: Tiny fine-tuning settings (as in test_dppo_tune.py); a few seconds per iteration.
TINY_FT = dict(
    num_envs_per_env_runner=2,
    decisions_per_iteration=40,
    pair_minibatch_size=80,
    num_epochs=1,
    ft_denoising_steps=2,
    eval_interval=0,
    eval_episodes=1,
)


def _tiny_flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def test_cluster_flags_reach_the_rllib_config(pretrained):
    ckpt = str(pretrained[0] / "checkpoint")
    args = build_parser().parse_args(
        [
            "finetune",
            "--checkpoint",
            ckpt,
            "--env-runner-resources",
            '{"rollout": 1}',
            "--learner-resources",
            '{"learner": 0.5}',
            "--num-learners",
            "2",
            "--num-env-runners",
            "3",
            "--resume",
            "--ft-denoising-steps",
            "2",
        ]
    )
    s = finetune_settings_from_args(args)
    assert s.env_runner_resources == {"rollout": 1.0}
    assert s.learner_resources == {"learner": 0.5}
    assert s.resume is True
    config = dppo_config_from_pretrained(ckpt, s)
    assert config.custom_resources_per_env_runner == {"rollout": 1.0}
    assert config.custom_resources_per_learner == {"learner": 0.5}
    assert (config.num_env_runners, config.num_learners) == (3, 2)
    assert config.restart_failed_env_runners is True
    assert config.max_num_env_runner_restarts >= 100
    # Defaults: no custom resources, no resume.
    d = finetune_settings_from_args(build_parser().parse_args(["finetune", "--checkpoint", ckpt]))
    assert (d.env_runner_resources, d.learner_resources, d.resume) == (None, None, False)
    d = replace(d, knobs={"ft_denoising_steps": 2})
    assert dppo_config_from_pretrained(ckpt, d).custom_resources_per_env_runner == {}


def test_bad_resource_settings_are_rejected(pretrained, capsys):
    ckpt = str(pretrained[0] / "checkpoint")
    for bad in ("rollout", "[1]", '{"rollout": "one"}'):
        with pytest.raises(SystemExit):
            build_parser().parse_args(
                ["finetune", "--checkpoint", ckpt, "--env-runner-resources", bad]
            )
    assert "--env-runner-resources" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="num_learners >= 1"):
        dppo_config_from_pretrained(
            ckpt, FinetuneSettings.of(checkpoint=ckpt, learner_resources={"learner": 1})
        )
    with pytest.raises(ConfigError, match="num_cpus"):
        dppo_config_from_pretrained(
            ckpt, FinetuneSettings.of(checkpoint=ckpt, env_runner_resources={"CPU": 1})
        )
    with pytest.raises(ConfigError, match="positive"):
        dppo_config_from_pretrained(
            ckpt, FinetuneSettings.of(checkpoint=ckpt, env_runner_resources={"rollout": 0})
        )


def test_progress_is_cut_back_to_the_checkpoint(tmp_path):
    path = tmp_path / "progress.jsonl"
    lines = [{"iteration": i, "env_steps": 10 * i} for i in range(5)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"iteration": 5, "env_')
    assert progress_up_to(path, 3) == lines[:4]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines if x["iteration"] != 2))
    with pytest.raises(CheckpointError, match=r"lacks iterations \[2\]"):
        progress_up_to(path, 3)


def _actor_ft_sum(module) -> float:
    """Sum of the fine-tuned denoiser's weights (runs on EnvRunners: package code only)."""
    return float(sum(t.double().sum() for t in _single(module).actor_ft.state_dict().values()))


def test_training_survives_a_killed_env_runner(pretrained, ray_session):
    """SIGKILL the EnvRunner process in the middle of an iteration: Ray restarts it, the
    algorithm re-syncs it and every requested iteration still trains on fresh samples."""
    settings = FinetuneSettings.of(checkpoint=str(pretrained[0] / "checkpoint"), **TINY_FT)
    config = dppo_config_from_pretrained(settings.checkpoint, settings)
    algo = config.build_algo()
    try:
        algo.train()
        group = algo.env_runner_group
        (pid,) = group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        steps = [algo._env_steps_lifetime]
        killer.start()  # lands inside the next train() call (sampling takes ~1 s)
        for _ in range(3):
            result = algo.train()
            steps.append(algo._env_steps_lifetime)
        killer.join()
        # Ray brings the actor back asynchronously (after RLlib's 5 s restart delay); on
        # a loaded machine that can outlast three short iterations: train on (bounded).
        deadline = time.monotonic() + 180
        while algo._counters["total_num_restored_workers"] < 1 and time.monotonic() < deadline:
            result = algo.train()
            steps.append(algo._env_steps_lifetime)
        assert algo.iteration == len(steps) >= 4
        # Every iteration after the kill sampled (no empty iteration was counted).
        assert all(b > a for a, b in zip(steps, steps[1:])), steps
        assert algo._counters["total_num_restored_workers"] >= 1
        # The restart is in the result the run loop's progress lines are made of.
        health = runner_health(algo, result)
        assert health == {M.ENV_RUNNERS_HEALTHY: 1, M.ENV_RUNNER_RESTARTS: 1}, health
        (new_pid,) = group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert new_pid != pid
        # The replacement acts with the learner's current weights.
        group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            inference_only=True,
            timeout_seconds=60.0,
        )
        (runner_sum,) = group.foreach_env_runner(
            lambda r: float(
                sum(t.double().sum() for t in _single(r.module).actor_ft.state_dict().values())
            ),
            local_env_runner=False,
        )
        learner_sum = _actor_ft_sum(algo.learner_group._learner.module["default_policy"])
        assert runner_sum == pytest.approx(learner_sum, rel=1e-9)
    finally:
        algo.stop()


def _read_meta(ckpt: Path) -> dict | None:
    try:
        return json.loads((ckpt / "rllib_diffusion.json").read_text())
    except (OSError, ValueError):
        return None  # not there yet, or mid-rename


def _module_sums(ckpt: Path) -> dict[str, float]:
    module, _ = load_policy_module(ckpt)
    return {k: float(v.double().sum()) for k, v in module.state_dict().items()}


def test_killed_run_resumes_from_its_checkpoint(pretrained, ray_session, tmp_path):
    """Kill a CLI run (SIGKILL) once checkpoint iteration >= 2 is on disk; ``resume``
    continues its iteration counter, env-step count, progress file and weights."""
    pretrained_ckpt = str(pretrained[0] / "checkpoint")
    out = tmp_path / "ft"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "experiments/finetune.py", "--checkpoint", pretrained_ckpt]
    cmd += ["--out", str(out), "--env-steps", "1000000", "--checkpoint-interval", "1"]
    cmd += _tiny_flags(TINY_FT)
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                meta = _read_meta(out / "checkpoint")
                if meta and meta["iteration"] >= 2:
                    break
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint >= 2 within 10 min"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ckpt = out / "checkpoint"
    k = _read_meta(ckpt)["iteration"]
    before = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    ckpt_sums = _module_sums(ckpt)
    settings = FinetuneSettings.of(
        checkpoint=pretrained_ckpt,
        out_dir=str(out),
        env_steps=before[k]["env_steps"] + 1,  # one more iteration
        checkpoint_interval=1,
        **TINY_FT,
    )
    with pytest.raises(CheckpointError, match="--resume"):
        finetune(settings)
    summary = finetune(replace(settings, resume=True))

    assert summary["resumed"]["from_iteration"] == k
    # Weights right after the restore are the checkpoint's, tensor by tensor; they are
    # not the pretrained ones the algorithm is built with (the frozen copy keeps those).
    restored = summary["resumed"]["restored_weight_sums"]
    actor_keys = [key for key in ckpt_sums if key.startswith("actor_ft.")]
    assert actor_keys and set(ckpt_sums) <= set(restored)
    for key, value in ckpt_sums.items():
        assert restored[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    frozen = {key: "actor" + key[len("actor_ft") :] for key in actor_keys}  # = pretrained
    assert any(abs(ckpt_sums[key] - ckpt_sums[frozen[key]]) > 1e-6 for key in actor_keys)
    # Iterations continue from the checkpoint's; lines up to it are kept as they were.
    after = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in after] == list(range(k + 2))
    assert after[: k + 1] == before[: k + 1]
    assert summary["iterations"] == k + 1 == _read_meta(ckpt)["iteration"]
    # The env-step budget counts on from the restored state, not from zero.
    per_iteration = before[k]["env_steps"] - before[k - 1]["env_steps"]
    gained = after[k + 1]["env_steps"] - after[k]["env_steps"]
    assert 0 < gained <= 2 * per_iteration
    assert after[k + 1]["decisions"] > after[k]["decisions"]
    assert summary["env_steps"] == after[k + 1]["env_steps"]
    assert list((out / "tensorboard").glob("events.out.tfevents*"))


def test_interrupted_checkpoint_save_is_recovered(tmp_path):
    dppo = dict(algorithms=("DPPO",), tag="finetune")
    for name, it in (
        (".checkpoint.old-7", 2),
        (".checkpoint.tmp-7", 3),
        (".checkpoint.tmp-8", None),
    ):
        (tmp_path / name).mkdir()
        if it is not None:  # tmp-8: killed before its metadata was written (incomplete)
            meta = {"algorithm": "DPPO", "iteration": it}
            (tmp_path / name / "rllib_diffusion.json").write_text(json.dumps(meta))
    assert resume_checkpoint_meta(tmp_path / "checkpoint", False, **dppo) is None
    assert resume_checkpoint_meta(tmp_path / "checkpoint", True, **dppo)["iteration"] == 3
    assert not (tmp_path / ".checkpoint.tmp-7").exists()
