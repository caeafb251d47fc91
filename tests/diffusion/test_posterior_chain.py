"""Chains ending at a given sample, drawn from the forward posterior (``posterior_chain``):
the step distributions against float64 references computed here from the betas, the
forward marginals along the whole chain, and the exact end."""

import numpy as np
import pytest
import torch

from rllib_diffusion.diffusion import (
    NoiseSchedule,
    posterior_chain,
    posterior_step_mean_std,
    reverse_timesteps,
)

K, TA, DA, N = 10, 2, 3, 100_000


def _sched() -> NoiseSchedule:
    return NoiseSchedule.from_name("cosine", K)


def _alphas_cumprod(sched: NoiseSchedule) -> np.ndarray:
    return np.cumprod(1.0 - sched.betas.double().numpy())


def _ddpm_reference(sched: NoiseSchedule, a: np.ndarray, x_t: np.ndarray, t: int):
    """q(x_{t−1} | x_t, a) from the betas in float64 (Ho et al. 2020, eq. 6-7)."""
    beta = sched.betas.double().numpy()
    ac = _alphas_cumprod(sched)
    ac_prev = ac[t - 1] if t > 0 else 1.0
    mean = (
        beta[t] * np.sqrt(ac_prev) / (1 - ac[t]) * a
        + (1 - ac_prev) * np.sqrt(1 - beta[t]) / (1 - ac[t]) * x_t
    )
    return mean, beta[t] * (1 - ac_prev) / (1 - ac[t])


def _ddim_reference(sched, a, x_t, t: int, t_prev: int, eta: float):
    """q_σ(x_{t'} | x_t, a) of Song et al. (2021, eq. 7) in float64."""
    ac = _alphas_cumprod(sched)
    ap = ac[t_prev] if t_prev >= 0 else 1.0
    sigma2 = eta**2 * (1 - ap) / (1 - ac[t]) * (1 - ac[t] / ap)
    eps = (x_t - np.sqrt(ac[t]) * a) / np.sqrt(1 - ac[t])
    return np.sqrt(ap) * a + np.sqrt(1 - ap - sigma2) * eps, sigma2


def _fixed_start_draws(sched, method, eta, timesteps, prev_steps, a, seed=0):
    """N chains from one fixed first state (the same noise[:, 0] for all draws)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(N, len(timesteps) + 1, TA, DA, generator=g)
    noise[:, 0] = noise[0, 0]
    x0 = a.expand(N, TA, DA)
    chain = posterior_chain(sched, x0, timesteps, prev_steps, method=method, eta=eta, noise=noise)
    return chain.double().numpy()


def _check_moments(draws: np.ndarray, mean: np.ndarray, var: float) -> None:
    tol = 5 * np.sqrt(var / N) + 1e-6
    np.testing.assert_allclose(draws.mean(0), mean, atol=tol)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.03, atol=1e-9)


@pytest.mark.parametrize("t", [K - 1, 5, 1])
def test_ddpm_step_has_the_posterior_mean_and_variance(t):
    """Given x_t (fixed) and a, the empirical mean/var of x_{t−1} over 100k draws are
    the DDPM posterior's (computed from the betas in float64, not from the buffers)."""
    sched = _sched()
    a = torch.tensor([[0.9, -0.4, 0.1], [-1.0, 0.6, 0.0]])
    steps = torch.tensor([t, t - 1])
    chain = _fixed_start_draws(sched, "ddpm", 1.0, steps, steps - 1, a)
    x_t = chain[0, 0]
    mean, var = _ddpm_reference(sched, a.double().numpy(), x_t, t)
    _check_moments(chain[:, 1], mean, var)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_step_has_the_q_sigma_mean_and_variance(eta):
    sched = _sched()
    a = torch.tensor([[0.9, -0.4, 0.1], [-1.0, 0.6, 0.0]])
    timesteps, prev = reverse_timesteps("ddim", K, 5)  # 8, 6, 4, 2, 0 → −1
    chain = _fixed_start_draws(sched, "ddim", eta, timesteps[1:], prev[1:], a)
    t, t_prev = int(timesteps[1]), int(prev[1])
    mean, var = _ddim_reference(sched, a.double().numpy(), chain[0, 0], t, t_prev, eta)
    _check_moments(chain[:, 1], mean, var)


@pytest.mark.parametrize(
    "method,eta,ddim_steps", [("ddpm", 1.0, None), ("ddim", 1.0, 5), ("ddim", 0.5, 5)]
)
def test_every_state_has_the_forward_marginal_and_the_chain_ends_at_a(method, eta, ddim_steps):
    """Along the whole chain x^(i) ~ q(x_{t_i} | a) = N(sqrt(ᾱ)·a, 1 − ᾱ) (the forward
    marginals, for DDIM's q_σ at any η too), and the last state is ``a`` bit for bit."""
    sched = _sched()
    timesteps, prev = reverse_timesteps(method, K, ddim_steps)
    a = torch.rand(TA, DA, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x0 = a.expand(N, TA, DA)
    g = torch.Generator().manual_seed(1)
    chain = posterior_chain(sched, x0, timesteps, prev, method=method, eta=eta, generator=g)
    assert chain.shape == (N, len(timesteps) + 1, TA, DA)
    assert torch.equal(chain[:, -1], x0)
    ac = _alphas_cumprod(sched)
    for i, t in enumerate(timesteps.tolist()):
        draws = chain[:, i].double().numpy()
        _check_moments(draws, np.sqrt(ac[t]) * a.double().numpy(), 1 - ac[t])


def test_last_fine_tuned_steps_only():
    """A chain over the last S of K timesteps (DPPO's K_ft) starts at q(x_{S−1} | a)."""
    sched = _sched()
    timesteps, prev = reverse_timesteps("ddpm", K)
    a = torch.full((N, TA, DA), 0.7)
    chain = posterior_chain(sched, a, timesteps[-3:], prev[-3:], generator=torch.Generator())
    ac = _alphas_cumprod(sched)
    _check_moments(chain[:, 0].double().numpy(), np.sqrt(ac[2]) * 0.7, 1 - ac[2])
    assert torch.equal(chain[:, -1], a)


def test_ddim_with_eta_one_on_consecutive_steps_is_the_ddpm_posterior():
    sched = _sched()
    g = torch.Generator().manual_seed(0)
    a, x_t = torch.rand(4, TA, DA, generator=g), torch.randn(4, TA, DA, generator=g)
    t = torch.tensor([9, 6, 3, 1])
    ddpm = posterior_step_mean_std(sched, "ddpm", a, x_t, t, t - 1)
    ddim = posterior_step_mean_std(sched, "ddim", a, x_t, t, t - 1, eta=1.0)
    for x, y in zip(ddpm, ddim):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_ddpm_refuses_a_skipping_step():
    sched = _sched()
    x = torch.zeros(2, TA, DA)
    with pytest.raises(ValueError, match="t - 1"):
        posterior_step_mean_std(sched, "ddpm", x, x, torch.tensor([5, 5]), torch.tensor([3, 3]))
