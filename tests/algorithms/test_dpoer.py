"""DPOER (seed 001's DPPO + learned temperature): its loss terms and entropy estimates by
hand, the update equal to DPPO's with the term off, the temperature step and its learner
state, and a fine-tuning run with checkpoint and resume (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_diffusion.algorithms.dppo.dpoer import DPOERConfig
from rllib_diffusion.algorithms.dppo.dpoer_losses import (
    GMM_REG_COVAR,
    entropy_surrogate_term,
    gaussian_entropy,
    gmm_entropy,
    temperature_loss,
)
from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
from rllib_diffusion.algorithms.dppo.dppo_connectors import DENOISE_K, OLD_LOGP, X_NEXT, X_PREV
from rllib_diffusion.envs.chunking import chunk_spaces
from tests.algorithms.test_dppo import DA, OBS_DIM, TA, _pair_batch, model_config

MID = "default_policy"


# ------------------------------------------------------------------- pure pieces
def test_temperature_loss_and_its_gradient_by_hand():
    alpha = torch.tensor(0.5, requires_grad=True)
    loss = temperature_loss(alpha, entropy=-15.0, target_entropy=-12.0)
    assert float(loss.detach()) == pytest.approx(-math.log(0.5) * 3.0)  # −log α·(H_target − Ĥ)
    loss.backward()
    assert float(alpha.grad) == pytest.approx(-3.0 / 0.5)  # below target: α grows
    above = torch.tensor(0.5, requires_grad=True)
    temperature_loss(above, entropy=-10.0, target_entropy=-12.0).backward()
    assert float(above.grad) == pytest.approx(2.0 / 0.5)  # above target: α shrinks


def test_entropy_surrogate_term_by_hand_and_no_gradient_to_alpha():
    alpha = torch.tensor(0.3, requires_grad=True)
    logp = torch.tensor([1.0, -2.0], requires_grad=True)
    term = entropy_surrogate_term(alpha, logp, 1e-3)
    torch.testing.assert_close(term, torch.tensor([3e-4, -6e-4]))
    term.sum().backward()
    assert alpha.grad is None
    torch.testing.assert_close(logp.grad, torch.tensor([3e-4, 3e-4]))


def test_gaussian_entropy_is_the_diagonal_normals():
    std = 0.05 + torch.rand(5, TA, DA, generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.Normal(torch.zeros_like(std), std).entropy().sum(dim=(1, 2))
    torch.testing.assert_close(gaussian_entropy(std), ref)


def test_gmm_entropy_of_separated_clusters_by_hand():
    # 1-D points {0, 0, 10, 20}: the 3 components are {0, 0}, {10}, {20}, each with
    # variance reg_covar; weights ½, ¼, ¼.
    points = torch.tensor([[[0.0], [0.0], [10.0], [20.0]]])
    w = np.array([0.5, 0.25, 0.25])
    per_component = 0.5 * (1 + math.log(2 * math.pi)) + 0.5 * math.log(GMM_REG_COVAR)
    expected = -(w * np.log(w)).sum() + per_component
    assert float(gmm_entropy(points)[0]) == pytest.approx(expected, rel=1e-5)


def test_gmm_entropy_with_one_component_is_the_fitted_gaussians():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, 500, 2, generator=g) * torch.tensor([0.5, 2.0])
    got = gmm_entropy(points, components=1)
    for row, value in zip(points.double().numpy(), got):
        cov = np.cov(row.T, bias=True) + GMM_REG_COVAR * np.eye(2)
        ref = 0.5 * 2 * (1 + math.log(2 * math.pi)) + 0.5 * np.linalg.slogdet(cov)[1]
        assert float(value) == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------- learner
def _learner(config_cls=DPOERConfig, **training):
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        config_cls()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(actor_lr=1e-3, reward_scaling=False, target_kl=None, **training)
        .rl_module(model_config=model_config())
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={MID: (obs_space, act_space)})
    return learner, config, learner.module[MID].unwrapped()


def _update(learner, module, n=24):
    torch.manual_seed(1)  # the rollout noise of the batch's chains
    np.random.seed(0)  # the minibatch shuffle
    pairs = _pair_batch(module, n=n)
    batch = MultiAgentBatch({MID: SampleBatch(dict(pairs))}, env_steps=n)
    return learner.update(batch=batch, num_epochs=1)[MID]


def test_learner_builds_and_its_policy_loss_is_the_hand_computed_surrogate(ray_session):
    scale = 0.5  # large, so that the term is visible in the loss
    learner, config, module = _learner(entropy_loss_scale=scale, initial_alpha=0.4)
    batch = _pair_batch(module, n=8)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    with torch.no_grad():
        logp = module.pair_logp(batch[Columns.OBS], batch[X_PREV], batch[X_NEXT], batch[DENOISE_K])
        ratio = (logp - batch[OLD_LOGP]).exp()
        adv = batch[Postprocessing.ADVANTAGES]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        adv = adv * 0.99 ** (module.ft_denoising_steps - batch[DENOISE_K] - 1).float()
        clipped = -adv * ratio.clamp(1 - 0.01, 1 + 0.01)
        expected = torch.max(-adv * ratio + scale * 0.4 * logp, clipped).mean()
        dppo_only = torch.max(-adv * ratio, clipped).mean()
    got = float(torch.as_tensor(learner.metrics.peek((MID, "policy_loss"))).detach())
    assert got == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert abs(float(expected) - float(dppo_only)) > 1e-3  # the term is really in it
    assert float(learner.metrics.peek((MID, "dpoer_alpha"))) == pytest.approx(0.4)
    assert float(learner.metrics.peek((MID, "dpoer_target_entropy"))) == -TA * DA


def test_with_the_term_off_one_update_equals_dppos(ray_session):
    dppo, _, dppo_module = _learner(DPPOConfig)
    off, _, off_module = _learner(entropy_loss_scale=0.0)
    on, _, on_module = _learner(entropy_loss_scale=1.0)
    for learner, module in ((dppo, dppo_module), (off, off_module), (on, on_module)):
        _update(learner, module)
    for net in ("actor_ft", "critic"):
        ref = getattr(dppo_module, net).state_dict()
        same = getattr(off_module, net).state_dict()
        assert all(torch.equal(ref[k], same[k]) for k in ref), f"{net} differs from DPPO's"
    ref, moved = dppo_module.actor_ft.state_dict(), on_module.actor_ft.state_dict()
    assert any(not torch.equal(ref[k], moved[k]) for k in ref), "the term did nothing"


def test_alpha_takes_one_adam_step_per_minibatch_towards_the_target(ray_session):
    learner, config, module = _learner(alpha_lr=1e-2)
    results = _update(learner, module)
    estimate = learner._entropy_estimate[MID]
    assert math.isfinite(estimate) and float(results["dpoer_entropy_estimate"]) == estimate
    target = learner.target_entropy(MID)
    # Adam's first step moves a scalar by lr in the direction of −sign(gradient).
    step = 1e-2 if estimate < target else -1e-2
    assert float(learner._alpha[MID]) == pytest.approx(0.272 + step, rel=1e-5)
    assert learner._minibatches == 1


def test_gaussian_estimator_is_the_closed_form_of_the_exploration_std(ray_session):
    learner, config, module = _learner(entropy_estimator="gaussian")
    batch = _pair_batch(module, n=6)
    got = learner.estimate_entropy(MID, batch)
    std = module.exploration_std(batch[Columns.OBS], batch[DENOISE_K].long())
    per_row = TA * DA * (0.5 * math.log(2 * math.pi * math.e)) + TA * DA * std.log()
    assert got == pytest.approx(float(per_row.mean()), rel=1e-5)


def test_temperature_state_round_trips_and_continues_exactly(ray_session):
    source, _, source_module = _learner(alpha_lr=1e-2, entropy_interval=2)
    _update(source, source_module)
    _update(source, source_module)
    target, _, target_module = _learner(alpha_lr=1e-2, entropy_interval=2)
    target.set_state(source.get_state())
    assert target._minibatches == source._minibatches == 2
    assert float(target._alpha[MID]) == float(source._alpha[MID]) != 0.272
    assert target._entropy_estimate[MID] == source._entropy_estimate[MID]
    _update(source, source_module)
    _update(target, target_module)
    assert float(target._alpha[MID]) == float(source._alpha[MID])
    assert target._entropy_estimate[MID] == source._entropy_estimate[MID]


def test_config_refusals():
    with pytest.raises(ValueError, match="entropy_interval"):
        DPOERConfig().training(entropy_interval=0).validate()
    with pytest.raises(ValueError, match="entropy_loss_scale"):
        DPOERConfig().training(entropy_loss_scale=-1.0).validate()
    with pytest.raises(ValueError, match="initial_alpha"):
        DPOERConfig().training(initial_alpha=0.0).validate()


# ------------------------------------------------------------------- fine-tuning run
@pytest.mark.slow
def test_finetune_smoke_checkpoint_and_exact_resume(pretrained, ray_session, tmp_path):
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    common = dict(
        algo="dpoer",
        checkpoint=str(pretrained[0] / "checkpoint"),
        num_envs_per_env_runner=2,
        decisions_per_iteration=40,
        pair_minibatch_size=40,
        num_epochs=2,
        ft_denoising_steps=2,
        entropy_interval=3,
        alpha_lr=1e-2,
        eval_interval=0,
        eval_episodes=2,
        checkpoint_interval=1,
        seed=3,
    )
    out = tmp_path / "dpoer"

    def lines():
        return [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()][1:]

    # Two iterations each (40 decisions, then the budget's last, <= 1.5 iterations' worth).
    finetune(FinetuneSettings.of(out_dir=str(out), env_steps=320, **common))
    before = lines()
    finetune(FinetuneSettings.of(out_dir=str(out), env_steps=640, resume=True, **common))
    after = lines()[len(before) :]
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "DPOER" and after[-1]["env_steps"] >= 640
    print(
        json.dumps(
            [(x["env_steps"], x["dpoer_minibatches"], x["dpoer_alpha"]) for x in before + after]
        )
    )
    # The temperature's learner state continues across the resume: the minibatch count
    # goes on from the checkpoint, and α is within one iteration's Adam steps (0.01 each)
    # of its checkpointed value, which is many steps away from the initial 0.272.
    last, first = before[-1], after[0]
    steps = first["dpoer_minibatches"] - last["dpoer_minibatches"]
    assert 0 < steps < last["dpoer_minibatches"]
    assert abs(last["dpoer_alpha"] - 0.272) > 0.01 * steps
    assert abs(first["dpoer_alpha"] - last["dpoer_alpha"]) <= 0.0101 * steps
