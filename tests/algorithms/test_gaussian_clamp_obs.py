"""The Gaussian family's observation clamp (issue 14): ``pretrain-gaussian --clamp-obs``
reaches the settings, the checkpoint's env_config and the env that ``finetune-gaussian``
and ``evaluate`` rebuild from it; ``pretrain-gaussian`` warns about near-constant
observation dims unless the clamp is on (Ray and the training loop stubbed out)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from rllib_diffusion.algorithms.gaussian.gaussian_bc import GaussianBCSettings, pretrain_gaussian
from rllib_diffusion.algorithms.gaussian.gaussian_ppo import read_gaussian_bc_meta
from rllib_diffusion.checkpoints import META_FILE, CheckpointMeta
from rllib_diffusion.cli import build_parser, pretrain_gaussian_settings_from_args
from rllib_diffusion.envs.chunking import CLAMP_OBS_KEY, make_chunked_env
from rllib_diffusion.evaluation import checkpoint_env_config
from tests.algorithms.test_pretrain_obs_warning import _hopper_like_dataset

gaussian_bc = importlib.import_module("rllib_diffusion.algorithms.gaussian.gaussian_bc")


@pytest.mark.parametrize(
    ("flags", "expected"), [([], False), (["--clamp-obs"], True), (["--clamp-obs", "false"], False)]
)
def test_clamp_obs_flag_reaches_the_settings(flags, expected) -> None:
    args = build_parser().parse_args(["pretrain-gaussian", "--dataset", "d", *flags])
    assert pretrain_gaussian_settings_from_args(args).clamp_obs is expected


def _stubbed_pretrain(dirs, monkeypatch, capsys, dataset, clamp_obs: bool):
    """Run ``pretrain_gaussian`` up to training; returns (stderr when training began,
    the checkpoint metadata it would write)."""
    seen = []

    def fake_start(settings):
        return dirs / "run", 0.0, dataset, "Hopper-v5"

    def fake_training(build_algo, settings, *, meta, env_config, **kwargs):
        assert meta["env_config"] is env_config
        seen.append((capsys.readouterr().err, dict(meta)))
        return {}

    monkeypatch.setattr(gaussian_bc, "start_offline_run", fake_start)
    monkeypatch.setattr(gaussian_bc, "run_offline_training", fake_training)
    pretrain_gaussian(GaussianBCSettings("unused", out_dir=str(dirs / "run"), clamp_obs=clamp_obs))
    ((err, meta),) = seen
    return err, meta


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "near-constant" in line]


@pytest.mark.parametrize("clamp_obs", [False, True])
def test_pretrain_gaussian_warns_about_near_constant_obs_unless_clamped(
    isolated_dirs, monkeypatch, capsys, clamp_obs
) -> None:
    dataset = _hopper_like_dataset(constant_dim=7)
    err, meta = _stubbed_pretrain(isolated_dirs, monkeypatch, capsys, dataset, clamp_obs)
    assert meta["env_config"][CLAMP_OBS_KEY] is clamp_obs
    if clamp_obs:
        assert _warnings(err) == []
    else:
        (line,) = _warnings(err)
        assert line.startswith("[pretrain-gaussian] warning: 1 of 11 observation dims")
        assert "7 (constant at 1.5)" in line and "--clamp-obs" in line


def test_pretrain_gaussian_does_not_warn_on_healthy_obs(isolated_dirs, monkeypatch, capsys) -> None:
    dataset = _hopper_like_dataset(constant_dim=7)
    rng = np.random.default_rng(1)
    for ep in dataset.episodes:  # dim 7 moves like the others
        ep.observations[:, 7] = rng.standard_normal(len(ep.observations))
    err, meta = _stubbed_pretrain(isolated_dirs, monkeypatch, capsys, dataset, False)
    assert _warnings(err) == [] and meta["env_config"][CLAMP_OBS_KEY] is False


def _checkpoint_env(path, meta: dict):
    """Write ``meta`` as a GaussianBC checkpoint's metadata; the env configs that
    finetune-gaussian (its BC metadata) and evaluate rebuild from it."""
    path.mkdir(parents=True)
    (path / META_FILE).write_text(CheckpointMeta.from_dict(meta).to_json())
    bc_meta = read_gaussian_bc_meta(str(path))
    return bc_meta.env_config, checkpoint_env_config(str(path), bc_meta)


@pytest.mark.parametrize("clamp_obs", [True, False, None])  # None: saved before the field
def test_env_from_a_gaussian_checkpoint_clips_only_when_clamped(
    isolated_dirs, monkeypatch, capsys, clamp_obs
) -> None:
    dataset = _hopper_like_dataset(constant_dim=7)
    _, meta = _stubbed_pretrain(isolated_dirs, monkeypatch, capsys, dataset, bool(clamp_obs))
    if clamp_obs is None:
        meta["env_config"] = {k: v for k, v in meta["env_config"].items() if k != CLAMP_OBS_KEY}
    for env_config in _checkpoint_env(isolated_dirs / "checkpoint", meta):
        env = make_chunked_env(env_config)
        try:
            env.reset(seed=0)
            high = np.asarray(meta["env_config"]["normalization"]["obs"]["high"])
            normalised = env.normalize_obs(high + 0.01)  # dim 7 (constant): ~2e4
            if clamp_obs:
                assert normalised.max() == 1.0 and normalised.min() >= -1.0
            else:
                assert normalised[7] > 1000
        finally:
            env.close()


def test_gaussian_bc_saved_before_clamp_obs_resumes_unclamped(isolated_dirs) -> None:
    """A run checkpointed before the field existed resumes as clamp_obs=False (and only
    so: resuming it with the clamp is refused)."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from rllib_diffusion.algorithms.offline_run import OfflineFamily
    from rllib_diffusion.checkpoints import CheckpointError

    def family(clamp_obs: bool) -> OfflineFamily:
        settings = GaussianBCSettings("d", out_dir=str(isolated_dirs), clamp_obs=clamp_obs)
        return OfflineFamily(
            lambda: None,
            settings,
            tag="pretrain-gaussian",
            meta={"algorithm": "GaussianBC", "env_id": "Hopper-v5"},
            dataset=_hopper_like_dataset(constant_dim=7),
            env_config={},
            loss_key="policy_loss",
        )

    old = {k: v for k, v in asdict(family(False).settings).items() if k != "clamp_obs"}
    saved = SimpleNamespace(settings=old)
    family(False).check_resumable(saved, isolated_dirs)
    with pytest.raises(CheckpointError, match="clamp_obs"):
        family(True).check_resumable(saved, isolated_dirs)
