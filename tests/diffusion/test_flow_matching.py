"""Flow matching path/loss and the Euler sampler on fields with known solutions."""

import pytest
import torch

from rllib_diffusion.diffusion import DiffusionMLP, euler_sample, flow_matching_loss, linear_path

B, TA, DA = 8, 4, 2


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_linear_path_endpoints_and_velocity():
    noise, data = _randn(B, TA, DA, seed=0), _randn(B, TA, DA, seed=1)
    x0, v = linear_path(noise, data, torch.zeros(B))
    x1, _ = linear_path(noise, data, torch.ones(B))
    xh, _ = linear_path(noise, data, torch.full((B,), 0.25))
    torch.testing.assert_close(x0, noise)
    torch.testing.assert_close(x1, data)
    torch.testing.assert_close(xh, 0.75 * noise + 0.25 * data)
    torch.testing.assert_close(v, data - noise)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_exact_for_constant_velocity(steps):
    x_init, c = _randn(B, TA, DA, seed=2), _randn(1, TA, DA, seed=3)
    out = euler_sample(lambda x, t: c.expand_as(x), x_init, steps)
    torch.testing.assert_close(out, x_init + c)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_euler_follows_conditional_field_to_data(steps):
    # v(x, t) = (a − x)/(1 − t) is the exact field of the straight path to a; it depends
    # on x, yet Euler stays on the path and lands on a for any step count.
    noise, a = _randn(B, TA, DA, seed=4), _randn(B, TA, DA, seed=5)
    times = []

    def field(x, t):
        times.append(t[0].item())
        return (a - x) / (1 - t).reshape(-1, 1, 1)

    out, path = euler_sample(field, noise, steps, return_path=True)
    torch.testing.assert_close(out, a, atol=1e-5, rtol=1e-5)
    assert path.shape == (B, steps + 1, TA, DA)
    torch.testing.assert_close(path[:, 0], noise)
    mid = path[:, 1]
    torch.testing.assert_close(
        mid, linear_path(noise, a, torch.full((B,), 1 / steps))[0], atol=1e-5, rtol=1e-5
    )
    assert times == pytest.approx([i / steps for i in range(steps)])


def test_euler_clip_only_final():
    x_init = torch.zeros(B, TA, DA)
    out, path = euler_sample(
        lambda x, t: torch.full_like(x, 3.0), x_init, 4, clip=1.0, return_path=True
    )
    assert torch.all(out == 1.0)
    assert torch.allclose(path[:, -1], torch.full_like(out, 3.0))


def test_flow_loss_zero_for_oracle_velocity():
    data = _randn(B, TA, DA, seed=6)
    gen = torch.Generator().manual_seed(0)

    def oracle(x_t, t, cond):  # cond carries the data point; t < 1 almost surely
        return (cond - x_t) / (1 - t).reshape(-1, 1, 1)

    assert flow_matching_loss(oracle, data, data, generator=gen).item() < 1e-8
    zero = flow_matching_loss(lambda x, t, c: torch.zeros_like(x), data, data, generator=gen)
    assert zero.item() > 0.5


def test_flow_loss_explicit_inputs():
    data, noise = _randn(B, TA, DA, seed=7), _randn(B, TA, DA, seed=8)
    t = torch.linspace(0, 0.9, B)
    w = torch.arange(B, dtype=torch.float32)
    per = flow_matching_loss(lambda x, tt, c: x, data, None, t=t, noise=noise, reduction="none")
    tb = t.reshape(-1, 1, 1)
    ref = (((1 - tb) * noise + tb * data - (data - noise)) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(per, ref)
    weighted = flow_matching_loss(lambda x, tt, c: x, data, None, t=t, noise=noise, weights=w)
    torch.testing.assert_close(weighted, (ref * w).mean())


def test_gradients_flow_through_euler():
    torch.manual_seed(0)
    net = DiffusionMLP(DA, TA, 3, hidden_dims=(32,), time_scale=100.0)
    cond = torch.randn(B, 3)
    x_init = _randn(B, TA, DA, seed=9).requires_grad_(True)
    out = euler_sample(lambda x, t: net(x, t, cond), x_init, 5)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert x_init.grad is not None and x_init.grad.abs().sum() > 0
