"""EMA of weights: the lerp formula, buffer copying, and the one start/every schedule."""

import pytest
import torch
from torch import nn

from rllib_diffusion.diffusion import ema_schedule_decay, ema_step_, ema_update_


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


def test_ema_schedule_copies_up_to_start_then_averages_every_nth_step():
    """The one schedule used by the BC and actor-critic learners (steps count from 1)."""
    kw = dict(decay=0.5, start=3, every=2)
    assert [ema_schedule_decay(s, **kw) for s in range(1, 8)] == [
        0.0,  # 1..3: copy (the average starts from the weights at step 3)
        0.0,
        0.0,
        0.5,  # 4: a multiple of 2
        None,  # 5: no update
        0.5,
        None,
    ]
    model, target = _net(0), _net(1)

    def set_model(v):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(v)

    def target_value():
        return next(iter(target.parameters())).flatten()[0].item()

    set_model(3.0)
    assert ema_step_(target, model, 3, **kw) is True and target_value() == pytest.approx(3.0)
    set_model(5.0)
    assert ema_step_(target, model, 5, **kw) is False and target_value() == pytest.approx(3.0)
    assert ema_step_(target, model, 6, **kw) is True  # 0.5·3 + 0.5·5
    assert target_value() == pytest.approx(4.0)


def test_ema_rejects_bad_settings():
    with pytest.raises(ValueError):
        ema_update_(_net(0), _net(1), 1.5)
    with pytest.raises(ValueError):
        ema_schedule_decay(1, decay=0.9, start=0, every=0)
