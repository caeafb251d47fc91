"""`experiments/submit_job.py` (Ray Jobs Python SDK) against a private token-auth Ray head.

One ``ray start --head --block`` on free ports with a private temp dir and a private
``RAY_AUTH_TOKEN`` (the helpers of ``test_cluster_job.py``). The script uploads the
repository, runs the entrypoint on the head and, with ``--wait``, exits with the job's
status. A wrong token, an unreachable dashboard or an address without ``http://`` is one
line on stderr and exit status 2. Only the processes this test starts are stopped.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.system.test_cluster_job import REPO, Cluster, _free_ports, _run

SCRIPT = [sys.executable, str(REPO / "experiments" / "submit_job.py")]
DATASET = "data/hopper-medium-v5-small.npz"


class Head(Cluster):
    """`Cluster` without the worker node: the head alone (1 CPU, dashboard on)."""

    def __init__(self) -> None:
        super().__init__()
        # Stop at once on SIGTERM instead of draining the node for 30 s first.
        self.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"

    def start(self, timeout: float = 600, attempts: int = 5) -> None:
        self._start_node(self.head_cmd, "head", timeout, attempts)
        deadline = time.monotonic() + timeout
        while True:  # the Jobs API answers once the dashboard's modules are up
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=10):
                    return
            except urllib.error.HTTPError:  # answered (e.g. 401): the server is up
                return
            except OSError:
                assert time.monotonic() < deadline, f"dashboard not up:\n{self.logs()}"
                time.sleep(2)


@pytest.fixture(scope="module")
def head():
    c = Head()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _client_env(**extra: str) -> dict:
    """The submitting shell: no Ray variables of the developer's own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _one_error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def test_bad_addresses_are_one_line(tmp_path):
    (port,) = _free_ports(1)
    env = _client_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    r = _run([*SCRIPT, "--address", f"http://127.0.0.1:{port}"], env, timeout=300, cwd=REPO)
    assert "cannot reach the Ray dashboard" in _one_error_line(r)
    r = _run([*SCRIPT, "--address", f"127.0.0.1:{port}"], env, timeout=300, cwd=REPO)
    assert "give the dashboard's URL" in _one_error_line(r)
    env = _client_env(RAY_AUTH_MODE="token", HOME=str(tmp_path))
    r = _run([*SCRIPT, "--address", f"http://127.0.0.1:{port}"], env, timeout=300, cwd=REPO)
    assert "RAY_AUTH_MODE=token but there is no token" in _one_error_line(r)


def test_submit_wait_succeeds_and_refuses_a_wrong_token(head, tmp_path):
    # RAY_AUTH_MODE=token + RAY_AUTH_TOKEN, as docs/cluster.md tells users to export.
    env = _client_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    probe = (
        "python -c \"import os; print('cwd', sorted(os.listdir('.'))); "
        "print('omp', os.environ['OMP_NUM_THREADS'])\" && "
        "python -m rllib_diffusion.cli dataset-info"
    )
    cmd = [*SCRIPT, "--address", head.dashboard, "--wait", "--entrypoint", probe, "--", DATASET]
    r = _run(cmd, env, timeout=600, cwd=REPO)
    report = f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}\n{head.logs()}"
    assert r.returncode == 0, report
    assert "submitted job 'raysubmit_" in r.stdout, report
    assert "': SUCCEEDED" in r.stdout, report
    assert '"num_episodes": 200' in r.stdout, report  # dataset-info ran on the head
    assert "omp 1" in r.stdout, report  # runtime_env env_vars reached the entrypoint
    (cwd_line,) = [x for x in r.stdout.splitlines() if x.startswith("cwd ")]
    for uploaded in ("'rllib_diffusion'", "'experiments'", "'data'"):
        assert uploaded in cwd_line, cwd_line
    for left_out in ("'.git'", "'.venv'", "'runs'"):
        assert left_out not in cwd_line, cwd_line

    # The token from a file, no RAY_AUTH_MODE in the client: sent as a Bearer header.
    token_file = tmp_path / "auth_token"
    token_file.write_text(head.token + "\n")
    env = _client_env(RAY_AUTH_TOKEN_PATH=str(token_file))
    cmd = [*SCRIPT, "--address", head.dashboard + "/", "--wait"]
    cmd += ["--entrypoint", "python -c 'import sys; print(\"bye\"); sys.exit(3)'"]
    r = _run(cmd, env, timeout=600, cwd=REPO)
    assert r.returncode == 1, (r.stdout, r.stderr)  # submitted, ran, and FAILED
    assert "bye" in r.stdout and "': FAILED (" in r.stdout, r.stdout

    # A wrong token: one line, no job.
    env = _client_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    r = _run([*SCRIPT, "--address", head.dashboard, "--wait"], env, timeout=300, cwd=REPO)
    line = _one_error_line(r)
    assert "refused the token from RAY_AUTH_TOKEN" in line, line
    assert "submitted" not in r.stdout

    # No token at all (empty HOME, no variables): one line naming where it looked.
    env = _client_env(HOME=str(tmp_path))
    r = _run([*SCRIPT, "--address", head.dashboard], env, timeout=300, cwd=REPO)
    assert "requires a token" in _one_error_line(r)
