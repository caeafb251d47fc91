"""GMM policy (DPPO's second Gaussian-family baseline): distribution math, head, BC fit,
PPO's first-minibatch ratio, and the pretrain-gaussian --num-modes / finetune-gaussian CLI."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as D

from rllib_diffusion.algorithms.gaussian.gaussian_bc import (
    GaussianBCSettings,
    gaussian_model_config,
)
from rllib_diffusion.algorithms.gaussian.gaussian_ppo import bc_to_ppo_state
from rllib_diffusion.algorithms.gaussian.gmm import (
    GMMBCCatalog,
    GMMHead,
    GMMPPOCatalog,
    TorchGMM,
    gmm_dist_class,
    gmm_log_prob,
    split_gmm_inputs,
)
from rllib_diffusion.checkpoints import load_policy_module
from rllib_diffusion.cli import main
from rllib_diffusion.modules.model_config import ConfigError


def reference_mixture(means, stds, logits) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(
        D.Categorical(logits=logits), D.Independent(D.Normal(means, stds), 1)
    )


@pytest.mark.parametrize("b,k,d", [(1, 2, 1), (7, 3, 4), (16, 5, 11)])
def test_logp_equals_torch_mixture_same_family(b, k, d):
    g = torch.Generator().manual_seed(b * 100 + k * 10 + d)
    means = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    stds = torch.rand(b, k, d, generator=g, dtype=torch.float64) + 0.05
    logits = 3 * torch.randn(b, k, generator=g, dtype=torch.float64)
    actions = torch.randn(b, d, generator=g, dtype=torch.float64)
    expected = reference_mixture(means, stds, logits).log_prob(actions)
    torch.testing.assert_close(gmm_log_prob(means, stds, logits, actions), expected)


def test_logp_with_a_dominant_mode_is_that_modes_gaussian():
    means = torch.tensor([[[0.5, -0.5], [-0.9, 0.9]]], dtype=torch.float64)
    stds = torch.tensor([[[0.1, 0.2], [0.3, 0.3]]], dtype=torch.float64)
    logits = torch.tensor([[30.0, -30.0]], dtype=torch.float64)
    actions = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    # Hand value of the first mode's log-density: Σ_d -½z² - log σ - ½ log 2π.
    z = torch.tensor([(0.4 - 0.5) / 0.1, (-0.3 + 0.5) / 0.2], dtype=torch.float64)
    by_hand = float((-0.5 * z**2).sum() - math.log(0.1 * 0.2) - math.log(2 * math.pi))
    got = gmm_log_prob(means, stds, logits, actions)
    assert got.item() == pytest.approx(by_hand, abs=1e-9)
    torch.testing.assert_close(got, reference_mixture(means, stds, logits).log_prob(actions))


def test_split_squashes_means_and_respects_std_bounds():
    head = GMMHead(num_modes=2, fixed_std=None, std_min=0.01, std_max=0.2)
    # K=2, D=1: [means (2) | log-stds (2) | logits (2)].
    inputs = torch.tensor([[100.0, 0.0, -50.0, 50.0, 1.0, 2.0]])
    means, stds, logits = split_gmm_inputs(inputs, head)
    torch.testing.assert_close(means, torch.tensor([[[1.0], [0.0]]]))
    torch.testing.assert_close(stds, torch.tensor([[[0.01], [0.2]]]))
    torch.testing.assert_close(logits, torch.tensor([[1.0, 2.0]]))
    fixed = GMMHead(num_modes=3)  # the official fixed_std 0.1
    means, stds, _ = split_gmm_inputs(torch.zeros(4, 3 * 2 + 3), fixed)
    assert means.shape == (4, 3, 2) and torch.all(stds == 0.1)
    assert fixed.input_dim(2) == 9 and head.input_dim(1) == 6
    with pytest.raises(ValueError, match="do not fit"):
        split_gmm_inputs(torch.zeros(1, 10), fixed)


def test_deterministic_action_is_the_mean_of_the_most_likely_mode():
    dist = TorchGMM(
        means=torch.tensor(
            [[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [[1.0, 1.0], [2.0, 2.0], [3, 3]]]
        ),
        stds=torch.ones(2, 3, 2),
        logits=torch.tensor([[0.0, 2.0, 1.0], [5.0, 0.0, 4.9]]),
    )
    expected = torch.tensor([[0.3, 0.4], [1.0, 1.0]])
    torch.testing.assert_close(dist.to_deterministic().sample(), expected)


def test_entropy_is_the_weighted_component_entropy():
    stds = torch.tensor([[[0.5], [2.0]]])
    dist = TorchGMM(torch.zeros(1, 2, 1), stds, torch.log(torch.tensor([[0.25, 0.75]])))
    h = 0.5 * math.log(2 * math.pi * math.e)
    by_hand = 0.25 * (h + math.log(0.5)) + 0.75 * (h + math.log(2.0))
    assert dist.entropy().item() == pytest.approx(by_hand, rel=1e-6)


def test_sample_shape_and_mode_frequencies():
    torch.manual_seed(0)
    means = torch.tensor([[[-0.8], [0.8]]]).expand(4000, 2, 1)
    dist = TorchGMM(
        means, torch.full((4000, 2, 1), 0.05), torch.log(torch.tensor([[0.2, 0.8]])).expand(4000, 2)
    )
    a = dist.sample()
    assert a.shape == (4000, 1)
    assert (a > 0).float().mean().item() == pytest.approx(0.8, abs=0.03)


def test_bad_heads_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="--num-modes 1"):
        GMMHead(num_modes=1)
    with pytest.raises(ConfigError, match="std_min < std_max"):
        GMMHead(num_modes=2, std_min=0.5, std_max=0.1)
    with pytest.raises(ConfigError, match="--num-modes"):
        GaussianBCSettings("d", gmm_fixed_std=0.3)
    with pytest.raises(ConfigError, match="--num-modes"):
        GaussianBCSettings("d", num_modes=0)


def test_num_modes_1_keeps_the_plain_gaussian_model_config():
    plain = gaussian_model_config(GaussianBCSettings("d"))
    assert plain == {
        "fcnet_hiddens": [256, 256],
        "fcnet_activation": "relu",
        "free_log_std": True,
        "vf_share_layers": False,
    }
    gmm = gaussian_model_config(GaussianBCSettings("d", num_modes=5))
    assert gmm["free_log_std"] is False and GMMHead.from_model_config(gmm) == GMMHead(5)
    state = gaussian_model_config(GaussianBCSettings("d", num_modes=5, free_log_std=False))
    assert GMMHead.from_model_config(state).fixed_std is None


def _module(kind: str, model_config: dict, obs_dim: int = 2, act_dim: int = 1):
    from ray.rllib.algorithms.bc.torch.default_bc_torch_rl_module import DefaultBCTorchRLModule
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    classes = {
        "bc": (DefaultBCTorchRLModule, GMMBCCatalog),
        "ppo": (DefaultPPOTorchRLModule, GMMPPOCatalog),
    }
    module_class, catalog = classes[kind]
    if GMMHead.from_model_config(model_config) is None:
        catalog = None  # RLlib's default catalog: the plain Gaussian
    return RLModuleSpec(
        module_class=module_class,
        catalog_class=catalog,
        observation_space=gym.spaces.Box(-1, 1, (obs_dim,)),
        action_space=gym.spaces.Box(-1, 1, (act_dim,)),
        model_config=model_config,
    ).build()


def _dist(module, obs, kind: str = "train"):
    from ray.rllib.core.columns import Columns

    forward = {"train": module.forward_train, "exploration": module.forward_exploration}[kind]
    cls = {
        "train": module.get_train_action_dist_cls,
        "exploration": module.get_exploration_action_dist_cls,
    }[kind]()
    return cls.from_logits(forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS])


def _bimodal(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a = ±0.6 (coin flip) + N(0, 0.05²), independent of s: no unimodal policy fits it."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, 2, generator=g) * 2 - 1
    sign = torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1
    return obs, 0.6 * sign + 0.05 * torch.randn(n, 1, generator=g)


def test_bc_fits_a_bimodal_target_better_than_one_gaussian():
    torch.manual_seed(0)
    train_obs, train_act = _bimodal(2048, 0)
    test_obs, test_act = _bimodal(1024, 1)
    held_out = {}
    for modes in (1, 3):
        config = gaussian_model_config(
            GaussianBCSettings("d", hidden_dims=(32, 32), num_modes=modes)
        )
        module = _module("bc", config)
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        losses = []
        for _ in range(300):
            idx = torch.randint(0, 2048, (128,))
            loss = -_dist(module, train_obs[idx]).logp(train_act[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1
        with torch.no_grad():
            held_out[modes] = _dist(module, test_obs).logp(test_act).mean().item()
    # One Gaussian's best: N(0, 0.6²) -> ≈ -0.4; three modes of std 0.1 -> ≈ +0.5.
    assert held_out[1] < -0.2 and held_out[3] > 0.3, held_out


def test_ppo_ratio_is_one_on_the_first_minibatch():
    """The runner's stored logp (exploration forward, sample, logp) equals the learner's
    logp of the same action after the BC weights move into the PPO module."""
    torch.manual_seed(0)
    config = gaussian_model_config(GaussianBCSettings("d", hidden_dims=(16, 16), num_modes=3))
    bc, ppo = _module("bc", config, 5, 3), _module("ppo", config, 5, 3)
    state, _ = bc_to_ppo_state(bc.get_state(), ppo.get_state())
    ppo.set_state(state)
    obs = torch.rand(64, 5) * 2 - 1
    with torch.no_grad():
        runner = _dist(ppo, obs, "exploration")
        actions = runner.sample()
        stored = runner.logp(actions)
        torch.testing.assert_close(_dist(bc, obs).logp(actions), stored, rtol=0, atol=0)
    ratio = torch.exp(_dist(ppo, obs).logp(actions) - stored)
    assert torch.equal(ratio, torch.ones(64))
    assert type(runner).__name__ == "TorchGMM3" and runner.head == GMMHead(3)
    assert gmm_dist_class(GMMHead(3)) is type(runner)


TINY = ["--hidden-dims", "32", "32", "--eval-episodes", "2"]


@pytest.mark.slow
def test_cli_gmm_pretrain_then_finetune_then_evaluate(tiny_dataset, ray_session, tmp_path):
    root, dataset_id = tiny_dataset
    bc_out, ppo_out = tmp_path / "gmm_bc", tmp_path / "gmm_ppo"
    pretrain = ["pretrain-gaussian", "--dataset", dataset_id, "--out", str(bc_out), *TINY]
    steps = ["--gradient-steps", "40", "--steps-per-iteration", "20", "--batch-size", "32"]
    assert main([*pretrain, *steps, "--num-modes", "3"]) == 0
    meta = json.loads((bc_out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "GaussianBC"
    assert GMMHead.from_model_config(meta["model_config"]) == GMMHead(3)
    module, _ = load_policy_module(bc_out / "checkpoint")
    assert issubclass(module.get_inference_action_dist_cls(), TorchGMM)
    finetune = ["finetune-gaussian", "--checkpoint", str(bc_out / "checkpoint")]
    ppo_args = ["--out", str(ppo_out), "--env-steps", "200", "--train-batch-size", "200"]
    ppo_args += ["--minibatch-size", "50", "--num-epochs", "1", "--num-envs-per-env-runner", "2"]
    ppo_args += ["--eval-interval", "1", "--eval-episodes", "2", "--checkpoint-interval", "0"]
    assert main([*finetune, *ppo_args]) == 0
    result = json.loads((ppo_out / "result.json").read_text())
    bc_result = json.loads((bc_out / "result.json").read_text())
    # Iteration 0 acts with the BC mixture: the same deterministic episodes.
    np.testing.assert_allclose(
        result["initial_evaluation"]["episode_returns"],
        bc_result["evaluation"]["episode_returns"],
    )
    ppo_module, ppo_meta = load_policy_module(ppo_out / "checkpoint")
    assert ppo_meta.algorithm == "GaussianPPO"
    assert issubclass(ppo_module.get_inference_action_dist_cls(), TorchGMM)
    for out in (bc_out, ppo_out):
        assert main(["evaluate", "--checkpoint", str(out / "checkpoint"), "--episodes", "2"]) == 0


@pytest.mark.slow
@pytest.mark.learning
def test_gmm_ppo_beats_its_bc_start_on_the_toy_task(ray_session, tmp_path):
    """GMM BC (K = 3) on ReachTarget data acting at target + 0.5 (return ≈ 5 of 10), then
    RLlib PPO from it: the deterministic return must rise clearly above the BC start."""
    from rllib_diffusion.algorithms.gaussian.gaussian_bc import pretrain_gaussian
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
        GaussianPPOSettings,
        finetune_gaussian_ppo,
    )
    from rllib_diffusion.data import save_npz
    from tests.algorithms.test_dppo_learning import biased_dataset

    data = save_npz(biased_dataset(), tmp_path / "reach.npz")
    bc = pretrain_gaussian(
        GaussianBCSettings(
            str(data),
            out_dir=str(tmp_path / "bc"),
            hidden_dims=(64, 64),
            num_modes=3,
            # PPO moves a mode's mean by about clip·σ per iteration; the official 0.1
            # would need ~40 iterations to cover the 0.5 bias (≈ 0.77 normalised).
            gmm_fixed_std=0.3,
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            eval_episodes=10,
        )
    )
    summary = finetune_gaussian_ppo(
        GaussianPPOSettings(
            str(tmp_path / "bc" / "checkpoint"),
            out_dir=str(tmp_path / "ppo"),
            env_steps=8000,
            num_envs_per_env_runner=10,
            train_batch_size=500,
            minibatch_size=125,
            num_epochs=5,
            lr=1e-3,  # 10× the default for a short run, as the DPPO toy test
            eval_interval=0,
            eval_episodes=20,
            checkpoint_interval=0,
        )
    )
    start = bc["evaluation"]["episode_return_mean"]
    after = summary["evaluation"]["episode_return_mean"]
    print(json.dumps({"bc": start, "after": after}))
    assert start < 7.0, "the pretrained policy should be weak (biased data)"
    assert after > start + 1.5, (start, after)
