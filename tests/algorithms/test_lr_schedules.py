"""Learning-rate schedules of offline runs follow the gradient budget (issue 12): RLlib's
schedule counter moves one batch per iteration, and diffusion BC sets its rate per step."""

from __future__ import annotations

import math

import pytest

from rllib_diffusion.algorithms.denoiser_training import (
    cosine_lr_schedule,
    samples_per_step,
    step_lr,
)
from rllib_diffusion.algorithms.offline_run import lr_schedule


def test_the_schedule_ends_where_rllibs_counter_ends_after_the_budget():
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings

    s = PretrainSettings(
        dataset="d", gradient_steps=12_000, steps_per_iteration=1_000, batch_size=256,
        lr=1e-3, lr_end=1e-4, warmup_steps=100,
    )  # fmt: skip
    sched = lr_schedule(s)
    iterations = s.gradient_steps // s.steps_per_iteration
    assert sched[-1] == [iterations * 256, pytest.approx(1e-4)]  # RLlib: +256 per iteration
    assert sched[1][0] == pytest.approx(100 * 256 / 1000, abs=1)  # warm-up: 100 steps
    assert samples_per_step(256, 1000, num_learners=2) == pytest.approx(0.512)


def test_diffusion_bc_rate_per_gradient_step_is_the_cosine_by_hand():
    total, warmup, lr, lr_end, per_step = 400, 40, 1e-3, 1e-4, 256 / 100
    sched = cosine_lr_schedule(lr, lr_end, int(total * per_step), int(warmup * per_step), 400)
    assert step_lr(sched, 0, per_step) == pytest.approx(1e-5)  # warm-up starts at 1%
    assert step_lr(sched, warmup, per_step) == pytest.approx(lr, rel=1e-3)
    mid = warmup + (total - warmup) // 2
    assert step_lr(sched, mid, per_step) == pytest.approx((lr + lr_end) / 2, rel=1e-2)
    assert step_lr(sched, total, per_step) == pytest.approx(lr_end)
    quarter = warmup + (total - warmup) // 4
    expected = lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi / 4))
    assert step_lr(sched, quarter, per_step) == pytest.approx(expected, rel=1e-2)


def test_the_learner_sets_each_steps_rate_on_its_optimizer(tiny_dataset):
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, build_pretrain_config
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.offline import prepare_offline_data

    _, dataset_id = tiny_dataset
    s = PretrainSettings(
        dataset=dataset_id, gradient_steps=40, steps_per_iteration=20, batch_size=32,
        hidden_dims=(8, 8), denoising_steps=3, lr=1e-3, lr_end=1e-4, warmup_steps=0,
    )  # fmt: skip
    data = prepare_offline_data(load_dataset(dataset_id), horizon=s.horizon, obs_history=1)
    learner = build_pretrain_config(s, data, "Hopper-v5")[0].build_learner()
    module = learner.module["default_policy"].unwrapped()
    (_, optimizer), *_ = learner.get_optimizers_for_module("default_policy")
    seen = []
    for step in (0, 20, 40):
        module.ema_step.fill_(step)
        learner._set_step_lr("default_policy")
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-3)
    assert seen[1] == pytest.approx(5.5e-4, rel=0.02)  # half-way down the cosine
    assert seen[2] == pytest.approx(1e-4)
