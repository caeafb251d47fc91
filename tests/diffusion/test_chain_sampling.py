"""DDPM/DDIM steps, chains, noise clipping and gradients through the chain."""

import numpy as np
import pytest
import torch

from rllib_diffusion.diffusion import (
    DiffusionMLP,
    NoiseSchedule,
    ddim_mean_std,
    ddim_timesteps,
    ddpm_mean_std,
    gaussian_step,
    sample_chain,
)

B, TA, DA, DC = 8, 4, 2, 3


@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = DiffusionMLP(DA, TA, DC, hidden_dims=(32, 32))
    cond = torch.randn(B, DC)
    sched = NoiseSchedule.from_name("cosine", 20)
    return (lambda x, t: net(x, t, cond)), sched, net


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ddpm_mean_std_against_numpy():
    sched = NoiseSchedule.from_name("cosine", 20)
    gen = _gen(1)
    x_t = torch.randn(5, TA, DA, generator=gen) * 2
    eps = torch.randn(5, TA, DA, generator=gen)
    t = torch.tensor([19, 10, 3, 1, 0])
    mean, std = ddpm_mean_std(sched, x_t, t, eps, clip_x0=1.0, min_std=0.05)

    betas = sched.betas.double().numpy()
    ac = np.cumprod(1 - betas)
    ac_prev = np.concatenate([[1.0], ac[:-1]])
    i = t.numpy()
    a, ap, b = (v[i][:, None, None] for v in (ac, ac_prev, betas))
    xt, e = x_t.double().numpy(), eps.double().numpy()
    x0 = np.clip((xt - np.sqrt(1 - a) * e) / np.sqrt(a), -1, 1)
    mean_np = b * np.sqrt(ap) / (1 - a) * x0 + (1 - ap) * np.sqrt(1 - b) / (1 - a) * xt
    std_np = np.maximum(np.sqrt(np.maximum(b * (1 - ap) / (1 - a), 1e-20)), 0.05)
    np.testing.assert_allclose(mean.numpy(), mean_np, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), np.broadcast_to(std_np, mean_np.shape), rtol=1e-5)


def test_ddim_eta1_full_steps_equals_ddpm():
    # With η = 1 and no skipped steps DDIM's σ² is the DDPM posterior variance and
    # its mean the DDPM posterior mean: two different formulas, one distribution.
    sched = NoiseSchedule.from_name("cosine", 20)
    gen = _gen(2)
    x_t = torch.randn(6, TA, DA, generator=gen)
    eps = torch.randn(6, TA, DA, generator=gen)
    t = torch.tensor([19, 15, 9, 4, 2, 1])
    m1, s1 = ddpm_mean_std(sched, x_t, t, eps)
    m2, s2 = ddim_mean_std(sched, x_t, t, t - 1, eps, eta=1.0)
    torch.testing.assert_close(m1, m2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-4)


def test_ddim_last_step_returns_clamped_x0():
    sched = NoiseSchedule.from_name("cosine", 20)
    x_t = torch.randn(4, TA, DA, generator=_gen(3))
    eps = torch.randn(4, TA, DA, generator=_gen(4))
    t = torch.full((4,), 2)
    mean, std = ddim_mean_std(sched, x_t, t, torch.full((4,), -1), eps, eta=1.0)
    x0 = (
        (x_t - sched.sqrt_one_minus_alphas_cumprod[2] * eps) / sched.sqrt_alphas_cumprod[2]
    ).clamp(-1, 1)
    torch.testing.assert_close(mean, x0, atol=1e-5, rtol=1e-5)
    assert torch.all(std == 0)


def test_ddim_timesteps():
    assert ddim_timesteps(100, 10).tolist() == list(range(0, 100, 10))
    assert ddim_timesteps(20, 20).tolist() == list(range(20))
    assert ddim_timesteps(20, 3).tolist() == [0, 6, 12]
    for bad in (0, 21):
        with pytest.raises(ValueError):
            ddim_timesteps(20, bad)


def test_chain_shapes_and_means_reproducible(setup):
    eps_fn, sched, _ = setup
    out = sample_chain(eps_fn, sched, (B, TA, DA), min_std=0.1, generator=_gen(0))
    assert out.chain.shape == (B, 21, TA, DA)
    assert out.means.shape == out.stds.shape == (B, 20, TA, DA)
    assert out.timesteps.tolist() == list(range(19, -1, -1))
    # Every recorded (mean, std) is what re-running the step on chain[:, i] gives.
    for i, t in enumerate(out.timesteps.tolist()):
        tt = torch.full((B,), t)
        mean, std = ddpm_mean_std(
            sched, out.chain[:, i], tt, eps_fn(out.chain[:, i], tt), min_std=0.1
        )
        torch.testing.assert_close(out.means[:, i], mean)
        torch.testing.assert_close(out.stds[:, i], std)
    assert torch.all(out.stds >= 0.1 - 1e-7)


def test_ddim_deterministic_independent_of_rng(setup):
    eps_fn, sched, _ = setup
    x_init = torch.randn(B, TA, DA, generator=_gen(5))
    kw = dict(method="ddim", ddim_steps=5, deterministic=True, x_init=x_init)
    a = sample_chain(eps_fn, sched, (B, TA, DA), generator=_gen(1), **kw)
    b = sample_chain(eps_fn, sched, (B, TA, DA), generator=_gen(2), **kw)
    assert torch.equal(a.chain, b.chain)
    assert torch.all(a.stds == 0)
    assert a.timesteps.tolist() == [16, 12, 8, 4, 0]
    # The same x_init with η = 1 is stochastic.
    c = sample_chain(eps_fn, sched, (B, TA, DA), method="ddim", ddim_steps=5, eta=1.0,
                     x_init=x_init, generator=_gen(1))  # fmt: skip
    assert not torch.allclose(a.chain[:, -1], c.chain[:, -1])


def test_ddpm_deterministic_std_floor_and_last_step(setup):
    eps_fn, sched, _ = setup
    x_init = torch.randn(B, TA, DA, generator=_gen(6))
    out = sample_chain(eps_fn, sched, (B, TA, DA), deterministic=True, min_std=0.5,
                       x_init=x_init, generator=_gen(0))  # fmt: skip
    post_std = sched.posterior_variance.clamp(min=1e-20).sqrt().flip(0)  # in visiting order
    expected = post_std.clamp(min=1e-3)
    torch.testing.assert_close(out.stds[0, :-1, 0, 0], expected[:-1], rtol=1e-5, atol=1e-8)
    assert out.stds[:, :-2].min().item() > 1e-3  # the floor is 1e-3, not min_std = 0.5
    assert torch.all(out.stds[:, -1] == 0)
    assert torch.equal(out.chain[:, -1], out.means[:, -1])
    assert out.stds[0, -2, 0, 0].item() < 0.5


def test_ddpm_stochastic_chains_differ_across_seeds(setup):
    eps_fn, sched, _ = setup
    x_init = torch.randn(B, TA, DA, generator=_gen(7))
    a = sample_chain(eps_fn, sched, (B, TA, DA), x_init=x_init, generator=_gen(1))
    b = sample_chain(eps_fn, sched, (B, TA, DA), x_init=x_init, generator=_gen(2))
    a2 = sample_chain(eps_fn, sched, (B, TA, DA), x_init=x_init, generator=_gen(1))
    assert torch.equal(a.chain[:, 0], b.chain[:, 0])
    assert (a.chain[:, 1:] - b.chain[:, 1:]).abs().amax(dim=(0, 2, 3)).min().item() > 1e-4
    assert torch.equal(a.chain, a2.chain)  # same seed, same chain


def test_noise_clip_bounds_deviation():
    mean = torch.zeros(200_000)
    std = torch.full_like(mean, 1e6)
    x = gaussian_step(mean, std, noise_clip=3.0, generator=_gen(0))
    dev = (x - mean).abs()
    assert dev.max().item() <= 3.0 * 1e6 * (1 + 1e-6)
    assert dev.max().item() == pytest.approx(3e6)  # clipping is active, not vacuous
    unclipped = gaussian_step(mean, std, noise_clip=None, generator=_gen(0))
    assert (unclipped - mean).abs().max().item() > 3.5e6


def test_final_clip_applies_to_actions_only():
    sched = NoiseSchedule.from_name("cosine", 10)

    def eps_fn(x, t):
        return torch.full_like(x, -3.0)  # pushes x̂0 far outside [-1, 1]

    out = sample_chain(eps_fn, sched, (16, TA, DA), clip_x0=None, generator=_gen(0))
    assert out.chain[:, -1].abs().max().item() > 1.0
    assert torch.equal(out.actions, out.chain[:, -1].clamp(-1, 1))
    out = sample_chain(
        eps_fn, sched, (16, TA, DA), clip_x0=None, final_clip=None, generator=_gen(0)
    )
    assert torch.equal(out.actions, out.chain[:, -1])


def test_gradients_flow_through_chain(setup):
    eps_fn, sched, net = setup
    x_init = torch.randn(B, TA, DA, generator=_gen(8), requires_grad=True)
    for method in ("ddpm", "ddim"):
        net.zero_grad()
        x_init.grad = None
        out = sample_chain(eps_fn, sched, (B, TA, DA), method=method, ddim_steps=5,
                           clip_x0=None, final_clip=None, x_init=x_init, generator=_gen(0))  # fmt: skip
        out.actions.pow(2).sum().backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0
        assert x_init.grad is not None and x_init.grad.abs().sum().item() > 0


def test_unknown_method_rejected(setup):
    eps_fn, sched, _ = setup
    with pytest.raises(ValueError, match="ddim"):
        sample_chain(eps_fn, sched, (B, TA, DA), method="euler")


# ------------------------------------------- DPPO's needs: per-step std, network switch
@pytest.mark.parametrize("method,eta", [("ddpm", 1.0), ("ddim", 1.0), ("ddim", 0.5)])
def test_reverse_step_std_is_the_steps_std(setup, method, eta):
    from rllib_diffusion.diffusion import reverse_step, reverse_step_std, reverse_timesteps

    eps_fn, sched, _ = setup
    timesteps, prev = reverse_timesteps(method, 20, 5)
    x = torch.randn(B, TA, DA, generator=_gen(3))
    for t_int, p_int in zip(timesteps.tolist(), prev.tolist()):
        t, t_prev = torch.full((B,), t_int), torch.full((B,), p_int)
        _, std = reverse_step(sched, method, x, t, t_prev, eps_fn(x, t), eta=eta, min_std=0.1)
        expected = reverse_step_std(sched, method, t, t_prev, eta=eta, min_std=0.1)
        torch.testing.assert_close(std, expected.reshape(B, 1, 1).expand_as(std))
    if method == "ddim":  # σ scales with η below the floor's reach (first step)
        t, t_prev = timesteps[:1], prev[:1]
        full = reverse_step_std(sched, "ddim", t, t_prev, eta=1.0)
        torch.testing.assert_close(reverse_step_std(sched, "ddim", t, t_prev, eta=eta), eta * full)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_chain_switches_network_for_the_last_ft_steps(setup, method):
    eps_fn, sched, _ = setup
    calls = []

    def base(x, t):
        calls.append("base")
        return eps_fn(x, t)

    def tuned(x, t):
        calls.append("ft")
        return eps_fn(x, t) + 0.3

    x0 = torch.randn(B, TA, DA, generator=_gen(4))
    kw = dict(method=method, ddim_steps=5, min_std=0.1, x_init=x0)
    plain = sample_chain(base, sched, (B, TA, DA), generator=_gen(5), **kw)
    steps = plain.means.shape[1]
    calls.clear()
    same = sample_chain(
        base, sched, (B, TA, DA), generator=_gen(5), eps_fn_ft=base, ft_steps=2, **kw
    )
    torch.testing.assert_close(same.chain, plain.chain)
    calls.clear()
    out = sample_chain(
        base, sched, (B, TA, DA), generator=_gen(5), eps_fn_ft=tuned, ft_steps=2, **kw
    )
    assert calls == ["base"] * (steps - 2) + ["ft"] * 2  # only the needed network runs
    torch.testing.assert_close(out.chain[:, : steps - 1], plain.chain[:, : steps - 1])
    assert not torch.allclose(out.means[:, -2:], plain.means[:, -2:])
    with pytest.raises(ValueError, match="ft_steps"):
        sample_chain(base, sched, (B, TA, DA), eps_fn_ft=tuned, ft_steps=steps + 1, **kw)
