"""Clean ends of CLI runs on the shared run loop: a finished ``pretrain`` prints no
traceback; SIGTERM / SIGINT stop a run after the current iteration with a checkpoint, a
``result.json`` marked interrupted, exit code 143 / 130 and no traceback; ``--resume``
continues it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def _pretrain_cmd(dataset_id: str, out: Path, gradient_steps: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "rllib_diffusion.cli", "pretrain", "--dataset", dataset_id]
    cmd += ["--out", str(out), "--gradient-steps", str(gradient_steps)]
    for key in ("steps_per_iteration", "batch_size", "denoising_steps", "eval_episodes"):
        cmd += [f"--{key.replace('_', '-')}", str(TINY[key])]
    cmd += ["--hidden-dims", *map(str, TINY["hidden_dims"])]
    return cmd + list(extra)


def _env(root: Path, ray_address: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(root / "minari"),
        "RLLIB_DIFFUSION_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


def _lines(out: Path) -> list[dict]:
    try:
        text = (out / "progress.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(x) for x in text.splitlines() if x.endswith("}")]


def _signal_after(cmd, env, out: Path, tmp: Path, sig: int, lines: int) -> tuple[int, str]:
    """Run ``cmd``; send ``sig`` once ``progress.jsonl`` has ``lines`` lines; its exit
    code and output."""
    log = tmp / f"run-{sig}-{lines}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while len(_lines(out)) < lines:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no progress line within 5 min"
                time.sleep(0.1)
            proc.send_signal(sig)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, log.read_text()


def test_finished_pretrain_prints_no_traceback(tiny_dataset, tmp_path):
    """A whole ``rllib-diffusion pretrain`` in its own process (own Ray instance): exit
    0, nothing like a traceback at shutdown (Ray Data iterators closed after Ray)."""
    root, dataset_id = tiny_dataset
    out = tmp_path / "pt"
    proc = subprocess.run(
        _pretrain_cmd(dataset_id, out, TINY["gradient_steps"]),
        cwd=REPO,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["interrupted"] is False and result["evaluation"]["num_episodes"] == 2


def test_sigterm_and_sigint_stop_cleanly_and_resume(tiny_dataset, ray_session, tmp_path):
    root, dataset_id = tiny_dataset
    out = tmp_path / "pt"
    env = _env(root, ray_session.get_runtime_context().gcs_address)
    cmd = _pretrain_cmd(dataset_id, out, 100_000, "--checkpoint-interval", "1000")

    code, log = _signal_after(cmd, env, out, tmp_path, signal.SIGTERM, lines=1)
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["interrupted"] is True and result["interrupt_signal"] == "SIGTERM"
    k = result["iterations"]
    assert k >= 1 and result["evaluation"] is None
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["iteration"] == k  # written at the stop, not at the (far) cadence
    assert [x["iteration"] for x in _lines(out)] == list(range(1, k + 1))

    # --resume continues from it; Ctrl-C (SIGINT) ends the resumed run the same way.
    code, log = _signal_after(cmd + ["--resume"], env, out, tmp_path, signal.SIGINT, k + 1)
    assert code == 128 + signal.SIGINT, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert f"resumed from '{out / 'checkpoint'}' at iteration {k}" in log
    result = json.loads((out / "result.json").read_text())
    assert result["interrupt_signal"] == "SIGINT"
    assert result["resumed"]["from_iteration"] == k and result["iterations"] > k
    lines = _lines(out)
    assert [x["iteration"] for x in lines] == list(range(1, result["iterations"] + 1))
    assert lines[-1]["gradient_steps"] == result["gradient_steps"] > lines[k - 1]["gradient_steps"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_set_a_flag_and_restore_the_handlers(sig):
    from rllib_diffusion.run_loop import RunInterrupted, StopSignals

    before = signal.getsignal(sig)
    with StopSignals("t") as stop:
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        assert stop.signum == sig and stop.name == signal.Signals(sig).name
        with pytest.raises(KeyboardInterrupt):  # a second one aborts at once
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
    assert signal.getsignal(sig) == before
    err = RunInterrupted(sig, {"interrupted": True})
    assert isinstance(err, SystemExit) and err.code == 128 + sig
