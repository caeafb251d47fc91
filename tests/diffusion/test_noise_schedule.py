"""NoiseSchedule: betas vs closed forms, posterior vs Bayes' rule in float64 numpy."""

import math

import numpy as np
import pytest
import torch

from rllib_diffusion.diffusion import NoiseSchedule, cosine_betas, linear_betas, vp_betas


def _np_cosine_alphas_cumprod(k: int, s: float = 0.008) -> np.ndarray:
    """ᾱ at t = 0..K from the continuous definition, normalised so ᾱ(0) = 1."""
    t = np.arange(k + 1, dtype=np.float64)
    f = np.cos(((t / k) + s) / (1 + s) * np.pi / 2) ** 2
    return f / f[0]


@pytest.mark.parametrize("k", [5, 20, 100])
def test_cosine_betas_match_closed_form(k):
    ac = _np_cosine_alphas_cumprod(k)
    expected = np.minimum(1 - ac[1:] / ac[:-1], 0.999)
    np.testing.assert_allclose(cosine_betas(k).numpy(), expected, rtol=1e-5, atol=1e-7)
    # Independently of the betas: the cumulative product reproduces ᾱ(t) itself
    # (except the last step, where β is capped at 0.999).
    sched = NoiseSchedule(cosine_betas(k))
    np.testing.assert_allclose(sched.alphas_cumprod[:-1].numpy(), ac[1:-1], rtol=1e-5, atol=1e-7)
    assert cosine_betas(k).max().item() <= 0.999 + 1e-7


@pytest.mark.parametrize("t_steps", [5, 20])
def test_vp_betas_match_formula(t_steps):
    b_min, b_max = 0.1, 10.0
    i = np.arange(1, t_steps + 1, dtype=np.float64)
    expected = 1 - np.exp(-b_min / t_steps - 0.5 * (b_max - b_min) * (2 * i - 1) / t_steps**2)
    np.testing.assert_allclose(vp_betas(t_steps).numpy(), expected, rtol=1e-6)
    # The discretisation integrates β(τ) = b_min + (b_max − b_min)τ exactly over [0, 1]:
    # ᾱ_T = exp(−b_min − (b_max − b_min)/2), whatever T.
    sched = NoiseSchedule.from_name("vp", t_steps)
    assert sched.alphas_cumprod[-1].item() == pytest.approx(
        math.exp(-(b_min + (b_max - b_min) / 2)), rel=1e-5
    )


def test_linear_betas_and_from_name():
    betas = linear_betas(10)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(2e-2)
    np.testing.assert_allclose(np.diff(betas.numpy()), (2e-2 - 1e-4) / 9, rtol=1e-4)
    sched = NoiseSchedule.from_name("linear", 10, beta_start=1e-3, beta_end=1e-2)
    assert sched.num_steps == 10
    assert sched.betas[0].item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="cosine.*linear.*vp"):
        NoiseSchedule.from_name("sigmoid", 10)


def test_buffers_are_float32_and_follow_state_dict():
    sched = NoiseSchedule.from_name("cosine", 20)
    names = {
        "betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2",
    }  # fmt: skip
    assert set(sched.state_dict()) == names
    for name in names:
        buf = getattr(sched, name)
        assert buf.dtype == torch.float32 and buf.shape == (20,)
    assert sched.alphas_cumprod_prev[0].item() == 1.0
    assert sched.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(1e-20))


def _np_posterior(betas: np.ndarray):
    """q(x_{t−1} | x_t, x0) by Bayes' rule on two Gaussians, for every t (float64).

    Prior x_{t−1} ~ N(sqrt(ᾱ_{t−1}) x0, 1 − ᾱ_{t−1}); likelihood x_t ~ N(sqrt(α_t) x_{t−1}, β_t).
    Returns (coef on x0, coef on x_t, variance) arrays of length K.
    """
    ac = np.cumprod(1 - betas)
    c1, c2, var = [], [], []
    for t in range(len(betas)):
        if t == 0:  # x_{-1} is the data itself: a point mass at x0
            c1.append(1.0), c2.append(0.0), var.append(0.0)
            continue
        prior_var = 1 - ac[t - 1]
        precision = 1 / prior_var + (1 - betas[t]) / betas[t]
        c1.append(np.sqrt(ac[t - 1]) / prior_var / precision)
        c2.append(np.sqrt(1 - betas[t]) / betas[t] / precision)
        var.append(1 / precision)
    return np.array(c1), np.array(c2), np.array(var)


@pytest.mark.parametrize("name,k", [("cosine", 20), ("vp", 5), ("linear", 50)])
def test_posterior_coefficients_match_bayes(name, k):
    sched = NoiseSchedule.from_name(name, k)
    c1, c2, var = _np_posterior(sched.betas.double().numpy())
    np.testing.assert_allclose(sched.posterior_mean_coef1.numpy(), c1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sched.posterior_mean_coef2.numpy(), c2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sched.posterior_variance.numpy(), var, rtol=1e-5, atol=1e-9)


def test_q_sample_and_posterior_mean_from_known_noise():
    gen = torch.Generator().manual_seed(0)
    sched = NoiseSchedule.from_name("cosine", 20)
    x0 = torch.rand(6, 4, 3, generator=gen) * 2 - 1
    eps = torch.randn(6, 4, 3, generator=gen)
    t = torch.tensor([0, 1, 5, 10, 18, 19])
    x_t = sched.q_sample(x0, t, eps)

    ac = np.cumprod(1 - sched.betas.double().numpy())
    a = ac[t.numpy()][:, None, None]
    x_t_np = np.sqrt(a) * x0.double().numpy() + np.sqrt(1 - a) * eps.double().numpy()
    np.testing.assert_allclose(x_t.numpy(), x_t_np, rtol=1e-5, atol=1e-5)

    # Reconstruct x0 from the true ε, then the posterior mean must be Bayes' mean.
    x0_hat = sched.predict_x0(x_t, t, eps)
    np.testing.assert_allclose(x0_hat.numpy(), x0.numpy(), atol=1e-4)
    np.testing.assert_allclose(sched.predict_eps(x_t, t, x0).numpy(), eps.numpy(), atol=1e-4)
    c1, c2, _ = _np_posterior(sched.betas.double().numpy())
    idx = t.numpy()
    mean_np = c1[idx][:, None, None] * x0.double().numpy() + c2[idx][:, None, None] * x_t_np
    np.testing.assert_allclose(sched.posterior_mean(x0_hat, x_t, t).numpy(), mean_np, atol=1e-4)


def test_invalid_betas_rejected():
    with pytest.raises(ValueError):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError):
        cosine_betas(0)
