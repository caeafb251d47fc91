"""DiffusionBC on RLlib: smoke training, EMA bookkeeping, checkpoint round trip, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rllib_diffusion.algorithms.bc.pretrain import (
    PretrainSettings,
    build_pretrain_config,
    pretrain,
)
from rllib_diffusion.checkpoints import (
    CheckpointError,
    load_policy_module,
    save_algorithm_checkpoint,
)
from rllib_diffusion.cli import main
from rllib_diffusion.data import DatasetError, load_dataset
from rllib_diffusion.data.offline import prepare_offline_data

from .conftest import TINY


def test_pretrain_writes_checkpoint_progress_and_eval(pretrained):
    out, summary = pretrained
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["gradient_steps"] for x in lines] == [20, 40]
    assert all(np.isfinite(x["loss"]) and x["loss"] > 0 for x in lines)
    assert summary["gradient_steps"] == 40
    assert summary["evaluation"]["num_episodes"] == 2
    assert "normalized_score" in summary["evaluation"]
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "DiffusionBC"
    assert meta["policy_config"]["normalization"]["obs"]["low"]
    module, _ = load_policy_module(out / "checkpoint")
    # EMA counter = gradient steps taken, restored from the checkpoint.
    assert int(module.ema_step) == 40


def test_checkpoint_round_trip_identical_actions_for_fixed_noise(
    tiny_dataset, ray_session, tmp_path
):
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC

    _, dataset_id = tiny_dataset
    settings = PretrainSettings(dataset=dataset_id, out_dir=str(tmp_path), **TINY)
    dataset = load_dataset(dataset_id)
    data = prepare_offline_data(dataset, horizon=settings.horizon)
    config, policy = build_pretrain_config(settings, data, "Hopper-v5")
    algo = config.build_algo()
    try:
        algo.train()
        module = algo.learner_group._learner.module["default_policy"]
        ckpt = save_algorithm_checkpoint(algo, tmp_path / "ckpt", {"algorithm": "DiffusionBC"})
    finally:
        algo.stop()
    obs = torch.randn(5, policy.obs_dim)
    x_init = torch.randn(5, policy.horizon, policy.action_dim)

    def act(m):
        with torch.no_grad():
            return m.sample_actions(
                obs, deterministic=False, x_init=x_init, generator=torch.Generator().manual_seed(3)
            )

    before = act(module)
    loaded, _ = load_policy_module(ckpt)
    np.testing.assert_array_equal(act(loaded).numpy(), before.numpy())
    restored = DiffusionBC.from_checkpoint(ckpt)
    try:
        again = act(restored.learner_group._learner.module["default_policy"])
        assert restored.iteration == 1
    finally:
        restored.stop()
    np.testing.assert_array_equal(again.numpy(), before.numpy())
    # The trained and EMA nets differ (EMA tracks during warm-up, so only weights
    # after ema_start would differ) — but both must produce finite actions in [-1, 1].
    assert before.abs().max() <= 1.0


def test_inference_only_module_has_no_trained_net(pretrained):
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule

    full, meta = load_policy_module(pretrained[0] / "checkpoint")
    spec = RLModuleSpec(
        module_class=DiffusionPolicyModule,
        observation_space=full.observation_space,
        action_space=full.action_space,
        inference_only=True,
        model_config=meta["policy_config"],
    )
    small = spec.build()
    assert not hasattr(small, "net") and hasattr(small, "ema_net")
    small.set_state(full.get_state(inference_only=True))
    obs = torch.randn(3, full.observation_space.shape[0])
    x0 = torch.randn(3, *full.action_space.shape)
    # DDPM evaluation still samples each step (posterior std, floored at 1e-3), so fix
    # the per-step noise too.
    with torch.no_grad():
        a = full.sample_actions(
            obs, deterministic=True, x_init=x0, generator=torch.Generator().manual_seed(0)
        )
        b = small.sample_actions(
            obs, deterministic=True, x_init=x0, generator=torch.Generator().manual_seed(0)
        )
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_cli_evaluate_prints_return_and_writes_json(pretrained, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(pretrained[0] / "checkpoint"),
            "--episodes",
            "3",
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    assert "over 3 episodes" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert len(result["episode_returns"]) == 3


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err
    plain = tmp_path / "ppo_ckpt"
    plain.mkdir()
    (plain / "rllib_checkpoint.json").write_text("{}")
    assert main(["evaluate", "--checkpoint", str(plain)]) == 2
    assert "not an rllib-diffusion checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="expected one of"):
        meta_dir = tmp_path / "other"
        meta_dir.mkdir()
        (meta_dir / "rllib_diffusion.json").write_text(json.dumps({"algorithm": "DPPO"}))
        load_policy_module(meta_dir, expect_algorithms=("DiffusionBC",))


def test_pretrain_rejects_dataset_of_another_env(tiny_dataset, tmp_path, capsys):
    _, dataset_id = tiny_dataset
    with pytest.raises(DatasetError, match="Walker2d-v5"):
        pretrain(
            PretrainSettings(
                dataset=dataset_id, env_id="Walker2d-v5", out_dir=str(tmp_path), **TINY
            )
        )
    rc = main(
        ["pretrain", "--dataset", dataset_id, "--env-id", "Walker2d-v5", "--out", str(tmp_path)]
    )
    assert rc == 2
    assert "error:" in capsys.readouterr().err


def test_pretrain_missing_dataset_is_clear(tmp_path, capsys, isolated_dirs):
    rc = main(["pretrain", "--dataset", "nobody/hopper/missing-v0", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing-v0" in err and "collect" in err


def test_horizon_longer_than_every_episode(tiny_dataset, tmp_path):
    _, dataset_id = tiny_dataset
    with pytest.raises(DatasetError, match="horizon"):
        pretrain(
            PretrainSettings(
                dataset=dataset_id,
                out_dir=str(tmp_path),
                **{**TINY, "horizon": 5000, "act_steps": 4},
            )
        )


def test_result_json_of_pretrain(pretrained):
    out, _ = pretrained
    result = json.loads(Path(out / "result.json").read_text())
    assert result["run"]["ray"].startswith("2.60")
    assert result["dataset"]["num_episodes"] == 12


def test_cli_evaluate_writes_offscreen_video(pretrained, tmp_path, monkeypatch):
    import imageio.v3 as iio

    monkeypatch.setenv("MUJOCO_GL", "egl")
    video = tmp_path / "ep.mp4"
    out_json = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(pretrained[0] / "checkpoint"),
            "--episodes",
            "1",
            "--video",
            str(video),
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    frames = iio.imread(video)
    steps = json.loads(out_json.read_text())["episode_lengths"][0]
    # One frame after reset plus one per executed env step.
    assert frames.shape[0] == 1 + steps
    assert frames.shape[1:] == (256, 256, 3)
    assert frames.std() > 0  # not a blank image


def test_every_diffusion_bc_knob_set_on_the_cli_reaches_the_learner(tiny_dataset):
    """``pretrain``'s knob flags come from DiffusionBCConfig; a non-default value given
    there arrives in the built learner's config, an untyped one keeps the default."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.algorithms.bc.pretrain import build_pretrain_config
    from rllib_diffusion.cli import build_parser, pretrain_settings_from_args
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.offline import prepare_offline_data
    from rllib_diffusion.knobs import declared_knobs

    new = {
        "weight_decay": 1e-3,
        "ema_decay": 0.9,
        "ema_update_every": 3,
        "ema_start": 7,
        "precision": "bf16",
    }
    assert {k.name for k in declared_knobs(DiffusionBCConfig)} == set(new)
    _, dataset_id = tiny_dataset
    argv = ["pretrain", "--dataset", dataset_id]
    for name, value in new.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    s = pretrain_settings_from_args(build_parser().parse_args(argv))
    data = prepare_offline_data(load_dataset(dataset_id), horizon=s.horizon, obs_history=1)
    learner = build_pretrain_config(s, data, "Hopper-v5")[0].build_learner()
    default = DiffusionBCConfig()
    for name, value in new.items():
        assert getattr(learner.config, name) == value != getattr(default, name), name
    untouched = pretrain_settings_from_args(
        build_parser().parse_args(["pretrain", "--dataset", dataset_id, "--ema-start", "7"])
    )
    assert untouched.knobs == {"ema_start": 7}


def test_every_policy_network_flag_reaches_the_module(tiny_dataset):
    """``pretrain``'s network flags come from DiffusionPolicyConfig (the fields the data
    does not fix); each non-default value reaches the built learner's module."""
    from rllib_diffusion.algorithms.bc.pretrain import build_pretrain_config, policy_knobs
    from rllib_diffusion.cli import build_parser, pretrain_settings_from_args
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.offline import prepare_offline_data
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    new = {
        "unet_dims": ["8", "16"],
        "time_dim": ["8"],
        "activation": ["relu"],
        "clip_x0": ["2.0"],
        "min_sampling_std": ["0.05"],
        "eval_min_std": ["0.01"],
        "clamp_obs": ["true"],
        "hidden_dims": ["8", "8"],
        "horizon": ["2"],
        "act_steps": ["2"],
    }
    declared = {k.name for k in policy_knobs()}
    assert declared <= set(new), declared - set(new)
    _, dataset_id = tiny_dataset
    argv = ["pretrain", "--dataset", dataset_id]
    for name, values in new.items():
        argv += ["--" + name.replace("_", "-"), *values]
    s = pretrain_settings_from_args(build_parser().parse_args(argv))
    data = prepare_offline_data(load_dataset(dataset_id), horizon=s.horizon, obs_history=1)
    _, policy = build_pretrain_config(s, data, "Hopper-v5")
    default = DiffusionPolicyConfig(obs_dim=1, action_dim=1)
    for name, values in new.items():
        before = getattr(default, name)
        if isinstance(before, tuple):
            expected = tuple(type(before[0])(v) for v in values)
        else:
            expected = type(before)(values[0])
        assert getattr(policy, name) == expected != before, name


def _weights_after_one_iteration(dataset_id: str, out: Path, seed: int) -> dict:
    from dataclasses import replace

    settings = replace(PretrainSettings(dataset=dataset_id, out_dir=str(out), **TINY), seed=seed)
    data = prepare_offline_data(load_dataset(dataset_id), horizon=settings.horizon)
    config, _ = build_pretrain_config(settings, data, "Hopper-v5")
    algo = config.build_algo()
    try:
        algo.train()
        module = algo.learner_group._learner.module["default_policy"]
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    finally:
        algo.stop()


@pytest.mark.slow  # three algorithm builds with ray.data pipelines: ~1-3 min
def test_one_seed_gives_the_same_minibatches_and_weights(tiny_dataset, ray_session, tmp_path):
    """ray.data's local shuffle is seeded from --seed and keeps block order, so two runs
    with one seed train the same weights (unseeded, they drew different minibatches)."""
    from rllib_diffusion.algorithms.window_prelearner import seed_local_shuffle

    _, dataset_id = tiny_dataset
    a, b, c = (
        _weights_after_one_iteration(dataset_id, tmp_path / f"r{i}", seed)
        for i, seed in enumerate((0, 0, 1))
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig

    config = seed_local_shuffle(DiffusionBCConfig().debugging(seed=7))
    assert config.iter_batches_kwargs["local_shuffle_seed"] == 7
    assert ray_session.data.DataContext.get_current().execution_options.preserve_order
