"""The SynthER generator's math on a known toy distribution (no Ray): it reproduces the
marginals (a generator of the data mean fails the same checks), its terminal flags are
exactly 0 or 1, and its layout and standardisation round-trip."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from rllib_diffusion.algorithms.synther.synther_rl_module import (
    SynthERModelConfig,
    SynthERModule,
    threshold_terminals,
)
from rllib_diffusion.data.transitions import (
    StandardNormalizer,
    TransitionLayout,
    dataset_transitions,
    transition_episodes,
)
from tests.synthetic.toy import toy_dataset

#: Columns the toy distribution varies (target, action, reward, next target); t/T is
#: uniform on a grid and the terminal flag is checked by its rate.
VARYING = [0, 2, 3, 4]


def _module(flat: np.ndarray, layout: TransitionLayout, **kw) -> SynthERModule:
    norm = StandardNormalizer.fit(flat)
    cfg = SynthERModelConfig(
        obs_dim=layout.obs_dim,
        action_dim=layout.action_dim,
        normalization=norm.to_dict(),
        clip_x0=float(np.abs(norm.normalize(flat)).max()) + 1.0,
        **kw,
    )
    box = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    return SynthERModule(observation_space=box, action_space=box, model_config=cfg.to_dict())


def _batch(flat: np.ndarray, layout: TransitionLayout) -> dict[str, torch.Tensor]:
    from ray.rllib.core.columns import Columns

    cols = layout.split(torch.as_tensor(flat))
    names = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS)
    return dict(zip(names, cols.values()))


def _train(module: SynthERModule, flat: np.ndarray, layout: TransitionLayout, steps: int) -> None:
    """Plain Adam on the module's own training forward (the RLlib learner's MSE)."""
    from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET

    opt = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(flat), 256)
        out = module._forward_train(_batch(flat[idx], layout))
        loss = torch.nn.functional.mse_loss(out[PREDICTION], out[TARGET])
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.ema_net.load_state_dict(module.net.state_dict())


def _marginal_checks(gen: np.ndarray, held_out: np.ndarray) -> list[str]:
    """What fails: per varying dimension std ratio in [0.8, 1.25], |Δmean| < 0.2 std,
    and a two-sample Kolmogorov-Smirnov statistic < 0.2 against held-out data (two real
    samples of this size: ~0.03; the data mean: ~0.5)."""
    failures = []
    for d in VARYING:
        std = held_out[:, d].std()
        ratio = gen[:, d].std() / std
        shift = abs(gen[:, d].mean() - held_out[:, d].mean()) / std
        ks = stats.ks_2samp(gen[:, d], held_out[:, d]).statistic
        if not 0.8 <= ratio <= 1.25:
            failures.append(f"dim {d}: std ratio {ratio:.2f}")
        if shift >= 0.2:
            failures.append(f"dim {d}: mean shift {shift:.2f} std")
        if ks >= 0.2:
            failures.append(f"dim {d}: KS statistic {ks:.3f}")
    return failures


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    data = toy_dataset(300, seed=0)
    layout = TransitionLayout(data.obs_dim, data.action_dim)
    flat = layout.flatten(dataset_transitions(data))
    torch.manual_seed(0)
    module = _module(flat, layout, width=96, depth=2, denoising_steps=50)
    _train(module, flat, layout, steps=800)
    held_out = layout.flatten(dataset_transitions(toy_dataset(300, seed=1)))
    cols = module.generate(3000, generator=torch.Generator().manual_seed(0))
    return layout, layout.flatten(cols), held_out, cols


def test_generator_reproduces_toy_marginals(trained) -> None:
    layout, gen, held_out, _ = trained
    assert _marginal_checks(gen, held_out) == []
    # The bimodal action (±0.6): both modes, nearly nothing in between.
    a = gen[:, 2]
    assert 0.4 < (a > 0).mean() < 0.6
    assert (np.abs(a) < 0.3).mean() < 0.05
    # The same checks refuse a generator of the data mean (plus a little noise).
    rng = np.random.default_rng(0)
    mean_gen = held_out.mean(axis=0) + 0.01 * rng.standard_normal(gen.shape)
    assert len(_marginal_checks(mean_gen, held_out)) >= len(VARYING)


def test_generated_terminals_are_exactly_zero_or_one(trained) -> None:
    _, gen, held_out, cols = trained
    assert set(np.unique(cols["terminateds"])) <= {0.0, 1.0}
    assert 0.01 <= cols["terminateds"].mean() <= 0.15  # data: 5%; never terminal fails
    raw = np.array([-0.7, 0.0, 0.49, 0.5, 0.51, 1.0, 2.3], np.float32)
    assert threshold_terminals(raw).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_transition_layout_and_standardisation_round_trip() -> None:
    data = toy_dataset(5, seed=3)
    layout = TransitionLayout(data.obs_dim, data.action_dim)
    cols = dataset_transitions(data)
    flat = layout.flatten(cols)
    assert flat.shape == (50, layout.dim) == (50, 7)
    back = layout.split(flat)
    for name, value in cols.items():
        np.testing.assert_array_equal(back[name].reshape(value.shape), value)
    norm = StandardNormalizer.fit(flat)
    z = norm.normalize(flat)
    np.testing.assert_allclose(z[:, 0].std(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(norm.unnormalize(z), flat, atol=1e-5)
    # Single-step episodes: terminal ones terminated, the others truncated.
    episodes = transition_episodes(cols)
    assert [e.length for e in episodes] == [1] * 50
    assert all(e.terminations[0] != e.truncations[0] for e in episodes)
    assert sum(e.terminations[0] for e in episodes) == cols["terminateds"].sum()
