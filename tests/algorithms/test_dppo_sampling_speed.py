"""The EnvRunner-side forwards after the sampling speed-ups (no_grad, cached time
features, leaner step glue): same numbers as before, and no autograd graph.

The reference is computed independently through the core's ``sample_chain`` and
``chain_logprobs`` with gradients enabled and the pre-change time features and
``extract_at`` patched in, from the same seed; outputs must match bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion import columns as C
from rllib_diffusion.diffusion import (
    SinusoidalPosEmb,
    chain_logprobs,
    reverse_step_std,
    reverse_timesteps,
    sample_chain,
)
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

from ..diffusion.test_sampling_hot_path import reference_extract, reference_sinusoidal
from .test_dppo import DA, OBS_DIM, TA, make_module

SEED = 123


@pytest.fixture
def pre_change_math(monkeypatch):
    """Patch in the computations the speed-ups replaced (recomputed features, plain gather)."""

    def patch():
        monkeypatch.setattr(
            SinusoidalPosEmb, "forward", lambda self, t: reference_sinusoidal(t, self.dim)
        )
        monkeypatch.setattr("rllib_diffusion.diffusion.schedules.extract_at", reference_extract)
        monkeypatch.setattr("rllib_diffusion.diffusion.sampling.extract_at", reference_extract)

    return patch


def dppo_reference(module, obs: torch.Tensor, deterministic: bool) -> dict[str, torch.Tensor]:
    """Actions, fine-tuned chain (B, K_ft+1, Ta, Da) and log-probs (B, K_ft) of DPPO's
    sampler written out with the core's functions, gradients enabled."""
    pol, cfg = module.policy_config, module.dppo_config
    k_ft = cfg.ft_denoising_steps
    torch.manual_seed(SEED)
    x_init = torch.randn(obs.shape[0], TA, DA)
    with torch.enable_grad():
        out = sample_chain(
            lambda x, t: module.actor(x, t, obs), module.schedule, tuple(x_init.shape),
            method=pol.sampler, ddim_steps=pol.ddim_steps, eta=cfg.ddim_eta,
            clip_x0=pol.clip_x0, min_std=cfg.min_sampling_std, deterministic=deterministic,
            x_init=x_init, eps_fn_ft=lambda x, t: module.actor_ft(x, t, obs), ft_steps=k_ft,
        )  # fmt: skip
        timesteps, prev = reverse_timesteps(pol.sampler, pol.denoising_steps, pol.ddim_steps)
        std = reverse_step_std(
            module.schedule, pol.sampler, timesteps[-k_ft:], prev[-k_ft:],
            eta=cfg.ddim_eta, min_std=cfg.min_logprob_std,
        )  # fmt: skip
        means = out.means[:, -k_ft:]
        logp = chain_logprobs(
            out.chain[:, -k_ft - 1 :], means, std.reshape(1, k_ft, 1, 1).expand_as(means),
            clamp=cfg.logprob_clamp, act_steps=pol.act_steps,
        )  # fmt: skip
    return {"actions": out.actions, "chain": out.chain[:, -k_ft - 1 :], "logp": logp}


def assert_no_graph(out: dict) -> None:
    for key, value in out.items():
        assert not value.requires_grad and value.grad_fn is None, key


@pytest.mark.parametrize("network", ["mlp", "unet"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_dppo_exploration_identical_and_graph_free(sampler, network, pre_change_math):
    module = make_module(sampler, network=network, inference_only=True)
    obs = torch.randn(9, OBS_DIM, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(SEED)
    out = module.forward_exploration({Columns.OBS: obs})  # no outer no_grad, as on runners
    assert_no_graph(out)
    pre_change_math()
    ref = dppo_reference(module, obs, deterministic=False)
    assert ref["chain"].grad_fn is not None  # the reference did build the graph
    assert torch.equal(out[Columns.ACTIONS], ref["actions"].detach())
    assert torch.equal(out[C.CHAINS], ref["chain"].detach())
    assert torch.equal(out[C.CHAIN_LOGP], ref["logp"].detach())
    assert torch.equal(out[Columns.ACTION_LOGP], ref["logp"].detach().sum(-1))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_dppo_inference_identical_and_graph_free(sampler, pre_change_math):
    module = make_module(sampler, inference_only=True)
    obs = torch.randn(9, OBS_DIM, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(SEED)
    out = module.forward_inference({Columns.OBS: obs})
    assert_no_graph(out)
    pre_change_math()
    ref = dppo_reference(module, obs, deterministic=True)
    assert torch.equal(out[Columns.ACTIONS], ref["actions"].detach())


def test_rollout_chains_still_feed_the_learners_graph():
    """no_grad (not inference_mode): rollout tensors can enter a later backward pass."""
    module = make_module()
    obs = torch.randn(4, OBS_DIM)
    out = module.forward_exploration({Columns.OBS: obs})
    chain, k = out[C.CHAINS], torch.zeros(4, dtype=torch.long)
    module.pair_logp(obs, chain[:, 0], chain[:, 1], k).sum().backward()
    assert any(p.grad is not None for p in module.actor_ft.parameters())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_diffusion_bc_forwards_identical_and_graph_free(sampler, pre_change_math):
    cfg = DiffusionPolicyConfig(
        obs_dim=OBS_DIM, action_dim=DA, horizon=TA, act_steps=TA, denoising_steps=6,
        sampler=sampler, ddim_steps=3 if sampler == "ddim" else None, hidden_dims=(16, 16),
    )  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    torch.manual_seed(0)
    module = DiffusionPolicyModule(
        observation_space=obs_space, action_space=act_space, model_config=cfg.to_dict()
    )
    obs = torch.randn(5, OBS_DIM)
    outs = {}
    for explore in (False, True):
        torch.manual_seed(SEED)
        fwd = module.forward_exploration if explore else module.forward_inference
        outs[explore] = fwd({Columns.OBS: obs})
        assert_no_graph(outs[explore])
    pre_change_math()
    for explore in (False, True):
        torch.manual_seed(SEED)
        x_init = torch.randn(5, TA, DA)
        with torch.enable_grad():
            ref = sample_chain(
                lambda x, t: module.ema_net(x, t, obs), module.schedule, (5, TA, DA),
                method=sampler, ddim_steps=cfg.ddim_steps, clip_x0=cfg.clip_x0,
                min_std=cfg.min_sampling_std, deterministic=not explore, x_init=x_init,
            ).actions  # fmt: skip
        assert torch.equal(outs[explore][Columns.ACTIONS], ref.detach())
