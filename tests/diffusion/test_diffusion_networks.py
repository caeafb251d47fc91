"""Network contracts: shapes, time input types, residual blocks, factory and errors."""

import pytest
import torch

from rllib_diffusion.diffusion import (
    MLP,
    DiffusionMLP,
    SinusoidalPosEmb,
    TemporalUNet1D,
    build_network,
)
from rllib_diffusion.diffusion.networks import TimeEmbedding

B, DA, DC = 5, 3, 7


@pytest.mark.parametrize("horizon", [1, 4, 16])
@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_output_shapes(kind, horizon):
    torch.manual_seed(0)
    kw = {"hidden_dims": (32, 32)} if kind == "mlp" else {"dims": (16, 32, 64), "time_dim": 8}
    net = build_network(kind, action_dim=DA, horizon=horizon, cond_dim=DC, **kw)
    x, cond = torch.randn(B, horizon, DA), torch.randn(B, DC)
    out_long = net(x, torch.randint(0, 20, (B,)), cond)
    out_float = net(x, torch.rand(B), cond)
    assert out_long.shape == out_float.shape == (B, horizon, DA)
    assert torch.isfinite(out_long).all()
    out_long.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_downsamples_long_horizons_and_conditions_on_inputs():
    torch.manual_seed(0)
    net = TemporalUNet1D(DA, 16, DC, dims=(16, 32, 64), time_dim=8)
    assert sum(isinstance(m, torch.nn.ConvTranspose1d) for m in net.modules()) == 2
    x, cond = torch.randn(B, 16, DA), torch.randn(B, DC)
    t = torch.full((B,), 3)
    base = net(x, t, cond)
    assert not torch.allclose(base, net(x, t, cond + 1.0))
    assert not torch.allclose(base, net(x, t + 10, cond))
    with pytest.raises(ValueError):
        TemporalUNet1D(DA, 8, DC, dims=(12, 24), n_groups=8)


def test_unconditional_mlp():
    net = DiffusionMLP(DA, 2, 0, hidden_dims=(16,))
    assert net(torch.randn(B, 2, DA), torch.zeros(B, dtype=torch.long)).shape == (B, 2, DA)
    with pytest.raises(ValueError):
        DiffusionMLP(DA, 2, 4, hidden_dims=(16,))(torch.randn(B, 2, DA), torch.zeros(B))


def test_mlp_residual_blocks_and_activations():
    torch.manual_seed(0)
    mlp = MLP(4, 2, (8, 8, 8), residual=True, layer_norm=True, dropout=0.1, out_activation="tanh")
    assert [layer.residual for layer in mlp.hidden] == [False, True, True]
    assert mlp(torch.randn(B, 4)).abs().max().item() <= 1.0
    plain = MLP(4, 2, (8, 8), residual=False)
    assert not any(layer.residual for layer in plain.hidden)
    for act in ("mish", "relu", "gelu", "silu", "tanh"):
        assert MLP(4, 2, (8,), activation=act)(torch.randn(B, 4)).shape == (B, 2)
    with pytest.raises(ValueError, match="gelu.*mish.*relu.*silu.*tanh"):
        MLP(4, 2, (8,), activation="swish")
    with pytest.raises(ValueError, match="mish"):
        DiffusionMLP(DA, 1, DC, activation="elu")
    with pytest.raises(ValueError, match="mlp.*unet"):
        build_network("transformer", action_dim=DA, horizon=1, cond_dim=DC)


def test_embeddings():
    t = torch.tensor([0.0, 1.0, 7.0])
    emb = SinusoidalPosEmb(8)(t)
    assert emb.shape == (3, 8)
    # First frequency is 1: [sin(t), ..., cos(t), ...]; t = 0 gives zeros then ones.
    torch.testing.assert_close(emb[:, 0], t.sin())
    torch.testing.assert_close(emb[:, 4], t.cos())
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert TimeEmbedding(16, 32)(torch.arange(4)).shape == (4, 16)
    with pytest.raises(ValueError):
        SinusoidalPosEmb(7)
