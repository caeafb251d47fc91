"""Process-level runtime setup shared by entry points (threads, Ray init)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

#: Environment for every Ray worker: one torch/BLAS thread per process. Without it each
#: EnvRunner grabs all cores and sampling is several times slower on small machines.
WORKER_ENV_VARS: dict[str, str] = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def limit_threads() -> None:
    """Pin this process to one intra-op thread (call before heavy torch work)."""
    for key, value in WORKER_ENV_VARS.items():
        os.environ.setdefault(key, value)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``/a new local instance) with worker env vars set.

    Inside a Ray job (``ray job submit``) ``RAY_ADDRESS`` is set and we join that cluster.
    """
    import ray

    configure_ray_data()
    if ray.is_initialized():
        return
    runtime_env = kwargs.pop("runtime_env", {}) or {}
    env_vars = {**WORKER_ENV_VARS, **runtime_env.get("env_vars", {})}
    runtime_env = _without_job_fields({**runtime_env, "env_vars": env_vars})
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False, **kwargs)


def _without_job_fields(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """Drop what a submitting job's runtime env already sets (the job's value wins).

    Inside ``ray job submit`` Ray merges ``ray.init(runtime_env=...)`` into the job's
    runtime env (``working_dir``, ``env_vars`` ...) and raises on any field or env var
    set by both, e.g. ``--runtime-env-json '{"env_vars": {"OMP_NUM_THREADS": "1"}}'``.
    """
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return runtime_env
    try:
        job_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return runtime_env
    job_vars = job_env.get("env_vars") or {}
    out = {k: v for k, v in runtime_env.items() if k != "env_vars" and k not in job_env}
    env_vars = {k: v for k, v in runtime_env.get("env_vars", {}).items() if k not in job_vars}
    if env_vars:
        out["env_vars"] = env_vars
    return out


def run_metadata() -> dict[str, Any]:
    """Versions and git SHA recorded with every run and benchmark result."""
    import platform

    import gymnasium
    import ray
    import torch

    import rllib_diffusion

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except OSError:
        sha = ""
    try:
        import mujoco

        mujoco_version = mujoco.__version__
    except ImportError:
        mujoco_version = None
    return {
        "rllib_diffusion": rllib_diffusion.__version__,
        "git_sha": sha or None,
        "ray": ray.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco_version,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def configure_ray_data() -> None:
    """ray.data for this process's runs: no per-dataset progress bars/log blocks (they flood
    CLI output), and blocks in order (``preserve_order``): with the seeded local shuffle
    (``algorithms.window_prelearner.seed_local_shuffle``) a ``--seed`` then fixes the
    minibatches of offline training."""
    import logging

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
