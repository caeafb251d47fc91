"""Shared fixtures: one local Ray instance per test session, single-threaded torch."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray instance shared by all tests that need one."""
    import ray

    from rllib_diffusion.utils.runtime import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Private Minari root and window cache for a test."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("RLLIB_DIFFUSION_CACHE", str(tmp_path / "cache"))
    return tmp_path
