"""Per-transition log-probs against torch.distributions on a sampled chain."""

import pytest
import torch
from torch.distributions import Normal

from rllib_diffusion.diffusion import (
    DiffusionMLP,
    NoiseSchedule,
    chain_logprobs,
    sample_chain,
    transition_logprob,
)

B, TA, DA, DC = 6, 4, 3, 5


def _reference(x_next, mean, std, lo, hi, act_steps):
    lp = Normal(mean, std).log_prob(x_next).clamp(lo, hi)
    return lp[:, :act_steps].mean(dim=(1, 2))


@pytest.mark.parametrize("act_steps", [None, 2])
def test_chain_logprobs_match_torch_normal(act_steps):
    torch.manual_seed(0)
    net = DiffusionMLP(DA, TA, DC, hidden_dims=(32, 32))
    cond = torch.randn(B, DC)
    sched = NoiseSchedule.from_name("cosine", 10)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = sample_chain(
            lambda x, t: net(x, t, cond), sched, (B, TA, DA), min_std=0.1, generator=gen
        )
    logp = chain_logprobs(out.chain, out.means, out.stds, act_steps=act_steps)
    assert logp.shape == (B, 10)
    n_rows = TA if act_steps is None else act_steps
    for i in range(10):
        ref = _reference(out.chain[:, i + 1], out.means[:, i], out.stds[:, i], -5.0, 2.0, n_rows)
        torch.testing.assert_close(logp[:, i], ref)
        torch.testing.assert_close(
            transition_logprob(
                out.chain[:, i + 1], out.means[:, i], out.stds[:, i], act_steps=act_steps
            ),
            ref,
        )


def test_clamp_and_act_steps_take_effect():
    mean = torch.zeros(2, TA, DA)
    std = torch.full_like(mean, 1e-3)
    x = torch.zeros_like(mean)
    # log N(0 | 0, 1e-3) ≈ 5.99 > 2: clamped from above.
    assert torch.allclose(transition_logprob(x, mean, std), torch.full((2,), 2.0))
    far = torch.full_like(mean, 10.0)
    assert torch.allclose(transition_logprob(far, mean, std), torch.full((2,), -5.0))
    # Rows beyond act_steps are ignored.
    mixed = x.clone()
    mixed[:, 2:] = 10.0
    assert torch.allclose(transition_logprob(mixed, mean, std, act_steps=2), torch.full((2,), 2.0))
    unclamped = transition_logprob(far, mean, std, clamp=None)
    assert torch.all(unclamped < -1e6)


def test_chain_length_mismatch_raises():
    with pytest.raises(ValueError):
        chain_logprobs(
            torch.zeros(2, 3, TA, DA), torch.zeros(2, 3, TA, DA), torch.ones(2, 3, TA, DA)
        )
