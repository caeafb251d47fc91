"""Shared fixtures: one local Ray instance per test session, single-threaded torch, and a
tiny collected dataset plus a tiny pretrained policy (built once per session)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

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


def use_data_root(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point Minari (``root/minari``) and the window cache (``root/cache``) at ``root``."""
    mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    mp.setenv("RLLIB_DIFFUSION_CACHE", str(root / "cache"))


@contextlib.contextmanager
def collected_dataset(
    tmp_path_factory, name: str, env_id: str, dataset_id: str, **collect_kwargs
) -> Iterator[tuple[Path, str]]:
    """Random episodes of ``env_id`` as Minari dataset ``dataset_id`` in a fresh data
    root (active while the context lasts): ``(root, dataset_id)``."""
    from rllib_diffusion.collect.collect import collect_dataset

    root = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    use_data_root(mp, root)
    try:
        collect_dataset(env_id, dataset_id, **collect_kwargs)
        yield root, dataset_id
    finally:
        mp.undo()


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Private Minari root and window cache for a test."""
    use_data_root(monkeypatch, tmp_path)
    return tmp_path


TINY = dict(
    gradient_steps=40,
    steps_per_iteration=20,
    batch_size=32,
    hidden_dims=(32, 32),
    denoising_steps=5,
    eval_episodes=2,
    warmup_steps=0,
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """12 random Hopper-v5 episodes as Minari dataset ``test/hopper/random-v0``."""
    with collected_dataset(
        tmp_path_factory, "bc", "Hopper-v5", "test/hopper/random-v0", num_episodes=12, num_envs=4
    ) as data:
        yield data


@pytest.fixture(scope="session")
def pretrained(tiny_dataset, ray_session):
    """A tiny DiffusionBC run on ``tiny_dataset``: ``(out_dir, summary)``."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain

    root, dataset_id = tiny_dataset
    out = root / "run"
    summary = pretrain(PretrainSettings(dataset=dataset_id, out_dir=str(out), **TINY))
    return out, summary
