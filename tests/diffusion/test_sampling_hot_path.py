"""The sampling hot path's caches and shortcuts give the same bits as the plain computation.

Covers the sinusoidal-feature table of ``SinusoidalPosEmb`` (integer CPU timesteps) and
the conversion-free ``extract_at``; each is compared with an independent copy of the
computation it replaced, bit for bit.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rllib_diffusion.diffusion import NoiseSchedule, sample_chain
from rllib_diffusion.diffusion.networks import DiffusionMLP, SinusoidalPosEmb, TimeEmbedding
from rllib_diffusion.diffusion.schedules import extract_at


def reference_sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The features as computed before the table existed."""
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freqs = torch.exp(-scale * torch.arange(half, device=t.device, dtype=torch.float32))
    args = t.reshape(-1, 1).float() * freqs.unsqueeze(0)
    return torch.cat([args.sin(), args.cos()], dim=-1)


def reference_extract(buf: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = buf[t.to(device=buf.device, dtype=torch.long)]
    return out.to(device=x.device, dtype=x.dtype).reshape(t.shape[0], *([1] * (x.dim() - 1)))


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32 if x.dtype == torch.float32 else torch.int64)


@pytest.mark.parametrize("dim", [2, 6, 16, 32, 128])
def test_sinusoidal_table_is_bit_identical_to_direct_features(dim):
    emb = SinusoidalPosEmb(dim)
    g = torch.Generator().manual_seed(0)
    for batch in (1, 3, 40, 257):
        for high in (20, 1000):
            t = torch.randint(0, high, (batch,), generator=g)
            out = emb(t)
            assert out.dtype == torch.float32 and out.shape == (batch, dim)
            assert torch.equal(bits(out), bits(reference_sinusoidal(t, dim)))
    # Every row the table can serve, against a one-row direct computation.
    t = torch.arange(0, 3000, 7)
    one_by_one = torch.cat([reference_sinusoidal(ti.reshape(1), dim) for ti in t])
    assert torch.equal(bits(emb(t)), bits(one_by_one))


def test_sinusoidal_table_grows_and_falls_back():
    emb = SinusoidalPosEmb(16)
    emb(torch.tensor([3, 5]))
    rows = emb._table.shape[0]
    t = torch.tensor([0, rows + 10])  # beyond the table: it grows, values unchanged
    assert torch.equal(emb(t), reference_sinusoidal(t, 16))
    assert emb._table.shape[0] > rows + 10
    for t in (torch.tensor([-2, 4]), torch.tensor([0, 1 << 20]), torch.tensor([0.5, 7.0])):
        assert torch.equal(emb(t), reference_sinusoidal(t, 16))  # computed directly
    assert emb(torch.zeros(0, dtype=torch.long)).shape == (0, 16)
    assert emb(torch.tensor([1, 2], dtype=torch.int32)).dtype == torch.float32


@pytest.mark.parametrize("time_scale", [1.0, 100.0])
def test_time_embedding_int_and_float_paths_agree(time_scale):
    torch.manual_seed(0)
    te = TimeEmbedding(16, 32, time_scale=time_scale)
    t = torch.arange(20)
    expected = te.net[1:](reference_sinusoidal(t.float() * time_scale, 16))
    assert torch.equal(te(t), expected)
    assert torch.equal(te(t.float()), expected)


def test_table_is_not_state_and_training_still_gets_gradients():
    torch.manual_seed(0)
    net = DiffusionMLP(2, 4, 3, hidden_dims=(16, 16))
    keys = set(net.state_dict())
    x, t, cond = torch.randn(5, 4, 2), torch.randint(0, 20, (5,)), torch.randn(5, 3)
    net(x, t, cond).square().sum().backward()
    assert set(net.state_dict()) == keys  # the table never enters checkpoints
    assert all(p.grad is not None for p in net.time_emb.parameters())
    clone = copy.deepcopy(net)  # DPPO's actor_ft is a deepcopy of the actor
    with torch.no_grad():
        assert torch.equal(clone(x, t, cond), net(x, t, cond))


@pytest.mark.parametrize("t_dtype", [torch.long, torch.int32])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float64])
def test_extract_matches_plain_gather(t_dtype, x_dtype):
    sched = NoiseSchedule.from_name("cosine", 20)
    t = torch.tensor([0, 7, 19, 7], dtype=t_dtype)
    x = torch.randn(4, 3, 2, dtype=x_dtype)
    for buf in (sched.alphas_cumprod, sched.posterior_mean_coef1):
        out = extract_at(buf, t, x)
        ref = reference_extract(buf, t, x)
        assert out.shape == ref.shape == (4, 1, 1) and out.dtype == x_dtype
        assert torch.equal(out, ref)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_chain_with_table_equals_chain_with_direct_features(method, monkeypatch):
    torch.manual_seed(0)
    net = DiffusionMLP(2, 4, 3, hidden_dims=(32, 32))
    sched = NoiseSchedule.from_name("cosine", 20)
    cond = torch.randn(6, 3)

    def run():
        return sample_chain(
            lambda x, t: net(x, t, cond), sched, (6, 4, 2), method=method, ddim_steps=5,
            min_std=0.1, generator=torch.Generator().manual_seed(3),
        )  # fmt: skip

    with torch.no_grad():
        fast = run()
    monkeypatch.setattr(
        SinusoidalPosEmb, "forward", lambda self, t: reference_sinusoidal(t, self.dim)
    )
    monkeypatch.setattr("rllib_diffusion.diffusion.schedules.extract_at", reference_extract)
    monkeypatch.setattr("rllib_diffusion.diffusion.sampling.extract_at", reference_extract)
    slow = run()  # grad enabled, every feature recomputed
    assert slow.chain.grad_fn is not None
    for name in ("actions", "chain", "means", "stds"):
        assert torch.equal(getattr(fast, name), getattr(slow, name).detach()), name
