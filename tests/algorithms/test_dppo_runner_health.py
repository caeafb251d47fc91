"""A killed EnvRunner is visible in a run's outputs: healthy EnvRunners and the
cumulative restart count in every progress line (and TensorBoard), the restart and each
EnvRunner's state in ``result.json``."""

from __future__ import annotations

import importlib
import json
import os
import signal
import threading
import time

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune
from tests.algorithms.test_dppo_resilience import TINY_FT

# The module (the package exports its ``finetune`` function under the same name).
finetune_module = importlib.import_module("rllib_diffusion.algorithms.dppo.finetune")


def _kill_after_first_line(progress, pids: list[int], done: threading.Event) -> None:
    """SIGKILL the first EnvRunner once iteration 1's progress line is written."""
    deadline = time.monotonic() + 300
    while not done.is_set() and time.monotonic() < deadline:
        try:
            lines = progress.read_text().splitlines()
        except OSError:
            lines = []
        if any(json.loads(x).get("iteration") == 1 for x in lines if x.endswith("}")):
            os.kill(pids[0], signal.SIGKILL)
            return
        time.sleep(0.05)


def test_killed_env_runner_shows_in_progress_and_result(
    pretrained, ray_session, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pids: list[int] = []
    build = finetune_module.DPPOFamily.build

    def build_and_note_pids(self):
        algo = build(self)
        pids.extend(
            algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        )
        return algo

    monkeypatch.setattr(finetune_module.DPPOFamily, "build", build_and_note_pids)
    out = tmp_path / "ft"
    settings = FinetuneSettings.of(
        checkpoint=str(pretrained[0] / "checkpoint"), out_dir=str(out), env_steps=800, **TINY_FT
    )
    done = threading.Event()
    killer = threading.Thread(
        target=_kill_after_first_line, args=(out / "progress.jsonl", pids, done), daemon=True
    )
    killer.start()
    try:
        summary = finetune(settings)
    finally:
        done.set()
        killer.join()

    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    trained = lines[1:]  # line 0: the pretrained policy's evaluation
    assert all({M.ENV_RUNNERS_HEALTHY, M.ENV_RUNNER_RESTARTS} <= set(x) for x in trained)
    restarts = [x[M.ENV_RUNNER_RESTARTS] for x in trained]
    assert restarts[0] == 0 and restarts[-1] >= 1, restarts
    assert restarts == sorted(restarts)  # cumulative
    assert trained[-1][M.ENV_RUNNERS_HEALTHY] == 1

    result = json.loads((out / "result.json").read_text())
    assert result[M.ENV_RUNNER_RESTARTS] == restarts[-1] == summary[M.ENV_RUNNER_RESTARTS]
    assert result["interrupted"] is False
    (runner,) = result["placement"]["env_runners"]
    assert runner[M.RUNNER_STATE] == M.RUNNER_RESTARTED and runner["pid"] != pids[0]
    assert runner["worker_index"] == 1 and runner["node_id"]

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert (
        f"finetune/{M.ENV_RUNNER_RESTARTS}" in tags and f"finetune/{M.ENV_RUNNERS_HEALTHY}" in tags
    )
