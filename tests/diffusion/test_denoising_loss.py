"""Denoising loss: oracle net gives zero, explicit t/noise match a hand computation."""

import numpy as np
import pytest
import torch

from rllib_diffusion.diffusion import NoiseSchedule, denoising_loss

B, TA, DA = 16, 4, 2


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(B, TA, DA, generator=gen) * 2 - 1, gen


def test_oracle_net_has_zero_loss():
    sched = NoiseSchedule.from_name("cosine", 20)
    x0, gen = _data()
    ac = torch.tensor(np.cumprod(1 - sched.betas.double().numpy()), dtype=torch.float32)

    def oracle(x_t, t, cond):  # cond carries the clean sample; ε recovered from the closed form
        a = ac[t].reshape(-1, 1, 1)
        return (x_t - a.sqrt() * cond) / (1 - a).sqrt()

    loss = denoising_loss(oracle, sched, x0, x0, generator=gen)
    assert loss.item() < 1e-8
    wrong = denoising_loss(lambda x_t, t, c: torch.zeros_like(x_t), sched, x0, x0, generator=gen)
    assert wrong.item() > 0.5  # E‖ε‖² = 1 per element


def test_explicit_t_noise_weights_and_reductions():
    sched = NoiseSchedule.from_name("vp", 5)
    x0, gen = _data(1)
    t = torch.randint(0, 5, (B,), generator=gen)
    noise = torch.randn(B, TA, DA, generator=gen)
    w = torch.rand(B, generator=gen)
    seen = {}

    def net(x_t, tt, cond):
        seen["x_t"], seen["t"] = x_t, tt
        return 0.5 * x_t

    per = denoising_loss(net, sched, x0, None, t=t, noise=noise, reduction="none")
    ac = np.cumprod(1 - sched.betas.double().numpy())[t.numpy()][:, None, None]
    x_t = np.sqrt(ac) * x0.double().numpy() + np.sqrt(1 - ac) * noise.double().numpy()
    per_np = ((0.5 * x_t - noise.double().numpy()) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(per.detach().numpy(), per_np, rtol=1e-5)
    assert torch.equal(seen["t"], t)
    mean_w = denoising_loss(net, sched, x0, None, t=t, noise=noise, weights=w)
    assert mean_w.item() == pytest.approx(float((per_np * w.numpy()).mean()), rel=1e-5)
    total = denoising_loss(net, sched, x0, None, t=t, noise=noise, reduction="sum")
    assert total.item() == pytest.approx(float(per_np.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="none"):
        denoising_loss(net, sched, x0, None, reduction="max")


def test_sampled_timesteps_cover_range():
    sched = NoiseSchedule.from_name("cosine", 20)
    x0 = torch.zeros(4000, 1, 1)
    seen = []

    def net(x_t, t, cond):
        seen.append(t)
        return torch.zeros_like(x_t)

    denoising_loss(net, sched, x0, None, generator=torch.Generator().manual_seed(0))
    t = seen[0]
    assert t.dtype == torch.long and t.min().item() == 0 and t.max().item() == 19
    counts = torch.bincount(t, minlength=20).float()
    assert counts.min().item() > 120  # ~200 expected per value
