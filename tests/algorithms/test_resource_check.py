"""Issue 20 on the shared 2-CPU local Ray: requests that can never start fail within
seconds with one line; feasible ones run; two CPU learners (DDP) stay identical."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rllib_diffusion.algorithms.dppo.finetune import FinetuneSettings, dppo_config_from_pretrained
from rllib_diffusion.algorithms.finetune_run import weight_sums
from rllib_diffusion.cli import main
from rllib_diffusion.utils.resources import read_cluster, resource_guard

REPO = Path(__file__).resolve().parents[2]
TINY_FLAGS = [
    "--env-steps", "16", "--decisions-per-iteration", "8", "--pair-minibatch-size", "16",
    "--num-epochs", "1", "--ft-denoising-steps", "2", "--eval-interval", "0",
    "--eval-episodes", "1",
]  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_issue_command_fails_fast_with_one_line(pretrained, ray_session, tmp_path):
    """The issue's command (1 EnvRunner + 2 learners on 2 CPUs), as a new process joining
    the 2-CPU cluster: non-zero exit within 30 s, one line naming needs and flags."""
    assert read_cluster().totals()["CPU"] == 2.0
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "rllib_diffusion.cli", "finetune"]
    cmd += ["--checkpoint", str(pretrained[0] / "checkpoint"), "--out", str(tmp_path / "ddp")]
    cmd += ["--num-env-runners", "1", "--num-envs-per-env-runner", "4", "--num-learners", "2"]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd + TINY_FLAGS, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - t0
    print(f"issue command failed after {elapsed:.1f}s")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f}s"
    (line,) = _error_lines(proc.stderr)
    assert line.startswith("error: [finetune] this run can never start on this Ray cluster")
    assert "3 CPU needed (1 for 1 EnvRunner + 2 for 2 learners), 2 in the cluster" in line
    assert "Requested 1 EnvRunner (1 CPU), 2 learners (2 CPU)" in line
    assert "Change --num-env-runners, --num-learners" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--env-runner-resources", '{"rollout": 1}'], "each EnvRunner needs 1 CPU, 1 rollout"),
        (
            [
                "--num-env-runners",
                "0",
                "--num-learners",
                "1",
                "--learner-resources",
                '{"gpu_node": 1}',
            ],
            "each learner needs 1 CPU, 1 gpu_node on one node",
        ),
        (
            ["--num-learners", "1", "--num-gpus-per-learner", "1"],
            "1 GPU needed (1 for 1 learner), 0 in the cluster",
        ),
        (
            ["--num-learners", "0", "--num-gpus-per-learner", "1"],
            "needs 1 GPU on the driver's machine, which has 0",
        ),
    ],
    ids=["runner-custom", "learner-custom", "gpu-learner", "gpu-local-learner"],
)
def test_impossible_requests_fail_the_same_way(
    pretrained, ray_session, tmp_path, capsys, flags, expected
):
    argv = ["finetune", "--checkpoint", str(pretrained[0] / "checkpoint")]
    argv += ["--out", str(tmp_path / "out"), *TINY_FLAGS, *flags]
    t0 = time.monotonic()
    assert main(argv) == 2
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert line.startswith("error: [finetune] this run can never start"), line
    assert expected in line
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_feasible_request_runs_and_says_what_starts(pretrained, ray_session, tmp_path, capsys):
    argv = ["finetune", "--checkpoint", str(pretrained[0] / "checkpoint")]
    argv += ["--out", str(tmp_path / "ok"), *TINY_FLAGS]
    argv += ["--num-env-runners", "1", "--num-envs-per-env-runner", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert not _error_lines(captured.err)
    assert "[finetune] starting 1 EnvRunner (1 CPU) ..." in captured.err
    assert (tmp_path / "ok" / "checkpoint").is_dir()


def _wait_for_free_cpus(ray, cpus: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < cpus:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.5)


def test_two_cpu_learners_complete_an_iteration_with_identical_weights(pretrained, ray_session):
    """``--num-learners 2 --num-env-runners 0``: fits on 2 CPUs (the driver holds none),
    trains an iteration with DDP on CPU, and both learners hold the same weights."""
    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings.of(
        checkpoint=ckpt,
        num_env_runners=0,
        num_envs_per_env_runner=2,
        num_learners=2,
        decisions_per_iteration=16,
        pair_minibatch_size=16,
        num_epochs=2,
        ft_denoising_steps=2,
        eval_interval=0,
    )
    config = dppo_config_from_pretrained(ckpt, s)
    _wait_for_free_cpus(ray_session, 2.0)  # actors of earlier tests are gone
    lines = io.StringIO()
    with resource_guard(config, tag="[t] ", stream=lines) as verdict:
        algo = config.build_algo()
    try:
        assert verdict.status == "ok", verdict.message
        assert "[t] starting 2 learners (2 CPU) ..." in lines.getvalue()
        before = [r.get() for r in algo.learner_group.foreach_learner(weight_sums)]
        t0 = time.monotonic()
        algo.train()
        print(f"one DDP iteration: {time.monotonic() - t0:.1f}s")
        after = [r.get() for r in algo.learner_group.foreach_learner(weight_sums)]
    finally:
        algo.stop()
    assert len(after) == 2
    assert before[0] == before[1]
    assert after[0] == after[1], {
        k: (after[0][k], after[1][k]) for k in after[0] if after[0][k] != after[1][k]
    }
    changed = [k for k in after[0] if k.startswith("actor_ft.") and after[0][k] != before[0][k]]
    assert changed, "the update changed no fine-tuned actor weight"


def test_pending_request_repeats_a_line_while_waiting(pretrained, ray_session, monkeypatch):
    """With an autoscaler, an impossible-now request is pending, not an error: the guard
    says what is pending at once and repeats it; progress lines name pending actors."""
    import ray

    from rllib_diffusion.utils.resources import pending_actors

    monkeypatch.setenv("RLLIB_DIFFUSION_AUTOSCALER", "1")
    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings.of(
        checkpoint=ckpt, ft_denoising_steps=2, env_runner_resources={"rollout": 1}
    )
    config = dppo_config_from_pretrained(ckpt, s)
    lines = io.StringIO()
    with resource_guard(config, tag="[t] ", stream=lines, interval_s=0.5) as verdict:
        probe = ray.remote(resources={"rollout": 1})(_Probe).remote()
        time.sleep(1.8)
        pending = pending_actors()
    ray.kill(probe)
    assert verdict.status == "wait"
    out = lines.getvalue().splitlines()
    assert out[0].startswith("[t] pending until the autoscaler adds nodes: each EnvRunner needs")
    repeats = [x for x in out[1:] if x.startswith("[t] pending until") and "still waiting" in x]
    assert len(repeats) >= 2, out
    assert pending == {"_Probe": 1}


class _Probe:
    """An actor that asks for a resource no node has."""
