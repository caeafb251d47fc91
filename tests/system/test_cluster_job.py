"""A two-node Ray cluster on this machine runs a DPPO fine-tuning job submitted with the CLI.

Head node without, worker node with a ``rollout`` resource, token authentication on
(``RAY_AUTH_MODE=token`` + a private ``RAY_AUTH_TOKEN`` for both nodes and the job CLI).
The job (``ray job submit --working-dir . -- python experiments/finetune.py ...``) asks
for ``--env-runner-resources '{"rollout": 1}'``: its EnvRunner must run on the worker
node. Only the processes this test starts are stopped (process groups, then anything
left with the cluster's private temp dir on its command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

#: Tiny DPPO job (as in tests/algorithms/test_dppo_resilience.py).
JOB_FLAGS = [
    "--env-steps", "200",
    "--num-envs-per-env-runner", "2",
    "--decisions-per-iteration", "40",
    "--pair-minibatch-size", "80",
    "--num-epochs", "1",
    "--ft-denoising-steps", "2",
    "--eval-interval", "0",
    "--eval-episodes", "1",
    "--checkpoint-interval", "1",
]  # fmt: skip


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(cmd: list[str], env: dict, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def _pids_with(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions ``marker`` (our temp dir)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


class Cluster:
    """``ray start --head`` + one ``ray start --address`` worker, each ``--block``ed in
    its own process group with private ports and temp dir."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(32)
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix="rdc-", dir="/tmp"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            # The job's `python` entrypoint resolves on the head node's PATH.
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.env = env
        (
            self.gcs_port,
            self.dashboard_port,
            client_port,
            *node_ports,
        ) = _free_ports(3 + 2 * 6)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.procs: list[subprocess.Popen] = []
        common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        common += ["--object-store-memory", str(200 * 1024**2)]
        head = [RAY, "start", "--head", "--port", str(self.gcs_port), *common]
        head += ["--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "true"]
        head += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)]
        head += ["--ray-client-server-port", str(client_port)]
        head += self._node_ports(node_ports[:6], self.root / "head")
        worker = [RAY, "start", "--address", f"127.0.0.1:{self.gcs_port}", *common]
        worker += ["--num-cpus", "2", "--num-gpus", "0", "--resources", '{"rollout": 2}']
        worker += self._node_ports(node_ports[6:], self.root / "worker")
        self.head_cmd, self.worker_cmd = head, worker

    @staticmethod
    def _node_ports(ports: list[int], temp_dir: Path) -> list[str]:
        names = (
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        )
        flags = [x for name, port in zip(names, ports) for x in (name, str(port))]
        return [*flags, "--temp-dir", str(temp_dir)]

    def _start(self, cmd: list[str], name: str) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            self.procs.append(
                subprocess.Popen(
                    cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def nodes(self) -> list[dict]:
        r = _run(
            [RAY, "list", "nodes", "--address", self.dashboard, "--format", "json", "--detail"],
            self.env,
            timeout=120,
        )
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except ValueError:  # the state API answers before it has a node table
            return []

    def start(self, timeout: float = 600, attempts: int = 3) -> None:
        self._start_node(self.head_cmd, "head", timeout, attempts)
        self._start_node(self.worker_cmd, "worker", timeout, attempts)
        deadline = time.monotonic() + timeout
        while len(self._alive()) < 2:
            assert time.monotonic() < deadline, f"2 nodes not alive:\n{self.logs()}"
            time.sleep(5)

    def _start_node(self, cmd: list[str], name: str, timeout: float, n: int) -> None:
        """Start one node; wait (reading its log, no polling of Ray) until `ray start`
        reports it registered. A loaded machine can exceed Ray's fixed 30 s raylet
        start-up wait; then `ray start` exits, and is retried."""
        log = self.root / f"{name}.log"
        for attempt in range(1, n + 1):
            self._start(cmd, name)
            deadline = time.monotonic() + timeout
            while self.procs[-1].poll() is None and time.monotonic() < deadline:
                for p in self.procs[:-1]:
                    assert p.poll() is None, f"a node exited ({p.returncode}):\n{self.logs()}"
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return
                time.sleep(1)
            failed = self.procs.pop()
            self._kill_group(failed)
            self._kill_leftovers(str(self.root / name))
            log.rename(self.root / f"{name}-attempt{attempt}.log")
        raise AssertionError(f"{name} node not up after {n} attempts:\n{self.logs()}")

    def _alive(self) -> list[dict]:
        return [n for n in self.nodes() if n.get("state") == "ALIVE"]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM each `ray start --block` group (it stops its node), then SIGKILL what
        is left: the groups, and processes running with our private temp dir."""
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._kill_group(p)
        self._kill_leftovers(str(self.root))
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill_group(p: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)

    @staticmethod
    def _kill_leftovers(marker: str, grace: float = 10) -> None:
        """SIGKILL processes still running with ``marker`` (our temp dir) in their
        command line after ``grace`` seconds (Ray daemons and workers of our nodes)."""
        deadline = time.monotonic() + grace
        while _pids_with(marker) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in _pids_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_dppo_job_runs_env_runners_on_the_rollout_node(cluster, pretrained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    nodes = {n["node_id"]: n for n in cluster.nodes() if n["state"] == "ALIVE"}
    (head_id,) = [i for i, n in nodes.items() if n["is_head_node"]]
    (worker_id,) = [i for i, n in nodes.items() if "rollout" in n["resources_total"]]
    assert "rollout" not in nodes[head_id]["resources_total"]

    # Token authentication is on: the job API refuses a wrong token.
    wrong = _run(
        [RAY, "job", "list", "--address", cluster.dashboard],
        {**cluster.env, "RAY_AUTH_TOKEN": "0" * 64},
        timeout=120,
    )
    assert wrong.returncode != 0

    out = tmp_path / "job"
    submission_id = f"dppo-{uuid.uuid4().hex[:8]}"
    # Also sets env vars that init_ray sets: a clash Ray refuses unless init_ray yields.
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    submit = [
        RAY, "job", "submit",
        "--address", cluster.dashboard,
        "--submission-id", submission_id,
        "--working-dir", ".",
        "--runtime-env-json", json.dumps(runtime_env),
        "--",
        "python", "experiments/finetune.py",
        "--checkpoint", str(pretrained[0] / "checkpoint"),
        "--out", str(out),
        "--env-runner-resources", '{"rollout": 1}',
        *JOB_FLAGS,
    ]  # fmt: skip
    job = _run(submit, cluster.env, timeout=1200, cwd=REPO)
    status = _run(
        [RAY, "job", "status", "--address", cluster.dashboard, submission_id],
        cluster.env,
        timeout=120,
    )
    report = f"{job.stdout[-6000:]}\n{job.stderr[-3000:]}\n{status.stdout}\n{cluster.logs()}"
    assert job.returncode == 0, report
    # `ray job status` prints this line for JobStatus.SUCCEEDED only.
    assert f"Job '{submission_id}' succeeded" in status.stdout + status.stderr, report

    result = json.loads((out / "result.json").read_text())
    placement = result["placement"]
    assert placement["env_runners"], placement
    assert {r["node_id"] for r in placement["env_runners"]} == {worker_id}, (placement, nodes)
    assert placement["driver"]["node_id"] == head_id
    assert result["env_steps"] >= 200
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "DPPO" and meta["iteration"] == result["iterations"]
    events = list((out / "tensorboard").glob("events.out.tfevents*"))
    assert events
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    decisions = acc.Scalars("finetune/decisions")
    assert [e.step for e in decisions] == [x["env_steps"] for x in result["progress"][1:]]
    assert [e.value for e in decisions] == [x["decisions"] for x in result["progress"][1:]]
