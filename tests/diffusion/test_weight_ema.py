"""EMA of weights: the lerp formula, buffer copying, start_step / update_every, counters."""

import pytest
import torch
from torch import nn

from rllib_diffusion.diffusion import EMA, ema_update_


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_ema_update_formula_and_buffers():
    target, source = _net(0), _net(1)
    source[1].running_mean.fill_(0.7)
    old = [p.detach().clone() for p in target.parameters()]
    ema_update_(target, source, 0.9)
    for p_t, p_old, p_s in zip(target.parameters(), old, source.parameters()):
        torch.testing.assert_close(p_t, 0.9 * p_old + 0.1 * p_s)
    assert torch.all(target[1].running_mean == 0.7)
    assert not any(p.grad is not None for p in target.parameters())
    with pytest.raises(ValueError):
        ema_update_(target, nn.Linear(3, 4), 0.9)


def test_ema_start_step_and_update_every():
    model = _net(0)
    ema = EMA(model, decay=0.5, start_step=3, update_every=2)
    assert all(not p.requires_grad for p in ema.target.parameters())
    assert all(p.requires_grad for p in model.parameters())

    def set_model(v):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(v)

    def target_value():
        return next(iter(ema.target.parameters())).flatten()[0].item()

    set_model(1.0)
    assert ema.update(0) is True  # before start_step: plain copy
    assert target_value() == pytest.approx(1.0)
    set_model(3.0)
    assert ema.update(1) is False  # not a multiple of update_every
    assert target_value() == pytest.approx(1.0)
    assert ema.update(2) is True  # still before start: copy
    assert target_value() == pytest.approx(3.0)
    set_model(5.0)
    assert ema.update(3) is False
    assert ema.update(4) is True  # averaged: 0.5·3 + 0.5·5
    assert target_value() == pytest.approx(4.0)
    assert ema.num_updates == 3 and ema.last_step == 4

    state = ema.state_dict()
    other = EMA(_net(1), decay=0.9)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.decay == 0.5 and other.start_step == 3 and other.update_every == 2


def test_ema_rejects_bad_settings():
    with pytest.raises(ValueError):
        EMA(_net(0), decay=1.5)
    with pytest.raises(ValueError):
        EMA(_net(0), update_every=0)
