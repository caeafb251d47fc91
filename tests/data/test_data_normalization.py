"""Min-max normalisation: range, inverse, numpy/torch, serialisation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rllib_diffusion.data import (
    DatasetError,
    DatasetNormalization,
    EpisodeDataset,
    MinMaxNormalizer,
)
from rllib_diffusion.data.normalization import near_constant_dims, near_constant_obs_warning


@pytest.fixture
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 4)).astype(np.float32) * np.array([1, 10, 0.1, 100], np.float32)
    x[..., 2] = 3.0  # a constant dimension must not divide by zero
    return x


def test_fit_flattens_leading_axes_and_maps_to_unit_range(data: np.ndarray) -> None:
    norm = MinMaxNormalizer.fit(data)
    flat = data.reshape(-1, 4)
    np.testing.assert_array_equal(norm.low, flat.min(0))
    np.testing.assert_array_equal(norm.high, flat.max(0))
    y = norm.normalize(data)
    assert y.shape == data.shape and y.dtype == np.float32
    assert y.min() >= -1 and y.max() <= 1
    np.testing.assert_allclose(y.reshape(-1, 4).min(0)[[0, 1, 3]], -1, atol=1e-6)
    np.testing.assert_allclose(y.reshape(-1, 4).max(0)[[0, 1, 3]], 1, atol=1e-4)
    assert (y[..., 2] == -1).all()
    # Formula from DPPO: 2(x-low)/(high-low+1e-6) - 1.
    want = 2 * (data.astype(np.float64) - norm.low) / (norm.high - norm.low + 1e-6) - 1
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize(y), data, rtol=1e-5, atol=1e-4)


def test_float64_round_trip_is_exact(data: np.ndarray) -> None:
    x = data.astype(np.float64)
    norm = MinMaxNormalizer.fit(x)
    back = norm.unnormalize(norm.normalize(x))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-10)


def test_torch_keeps_type_dtype_and_gradients(data: np.ndarray) -> None:
    norm = MinMaxNormalizer.fit(torch.from_numpy(data))
    np.testing.assert_array_equal(norm.low, data.reshape(-1, 4).min(0))
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(data, dtype=dtype, requires_grad=True)
        y = norm.normalize(x)
        assert isinstance(y, torch.Tensor) and y.dtype == dtype and y.device == x.device
        np.testing.assert_allclose(y.detach().numpy(), norm.normalize(data), rtol=1e-5, atol=1e-6)
        back = norm.unnormalize(y)
        torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-4)
        back.sum().backward()
        assert x.grad is not None


def test_dict_and_json_round_trip(
    make_dataset: Callable[..., EpisodeDataset], tmp_path: Path
) -> None:
    ds = make_dataset()
    stats = DatasetNormalization.fit(ds)
    all_obs = np.concatenate([ep.observations for ep in ds.episodes])
    np.testing.assert_array_equal(stats.obs.high, all_obs.max(0))
    assert stats.action.dim == 3

    d = json.loads(json.dumps(stats.to_dict()))
    again = DatasetNormalization.from_dict(d)
    np.testing.assert_array_equal(again.obs.low, stats.obs.low)
    np.testing.assert_array_equal(again.action.high, stats.action.high)

    path = stats.save(tmp_path / "ckpt" / "normalization.json")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["normalization.json"]
    loaded = DatasetNormalization.load(path)
    np.testing.assert_array_equal(loaded.obs.high, stats.obs.high)
    np.testing.assert_array_equal(loaded.action.low, stats.action.low)


def test_errors() -> None:
    norm = MinMaxNormalizer(low=np.zeros(3), high=np.ones(3))
    with pytest.raises(DatasetError, match=r"expects \(\.\.\., 3\) inputs, got shape \(2, 4\)"):
        norm.normalize(np.zeros((2, 4)))
    with pytest.raises(DatasetError, match="high < low"):
        MinMaxNormalizer(low=np.ones(2), high=np.zeros(2))
    with pytest.raises(DatasetError, match="lacks"):
        DatasetNormalization.from_dict({"obs": norm.to_dict()})
    with pytest.raises(DatasetError, match="not found"):
        DatasetNormalization.load("/nonexistent/normalization.json")


def _obs_norm(make_dataset, tweak=None) -> MinMaxNormalizer:
    """Observation normaliser fitted on a random dataset, after ``tweak(obs)`` per episode."""
    dataset = make_dataset(lengths=(20, 30), obs_dim=6)
    for ep in dataset.episodes:
        if tweak is not None:
            tweak(ep.observations)
    return DatasetNormalization.fit(dataset).obs


def _flat_dims(obs: np.ndarray) -> None:
    obs[:, 1] = 0.25  # constant in the data
    obs[:, 4] = 0.5 + 1e-5 * obs[:, 4]  # moves, but ~1e-4 of the other dims' range


def test_near_constant_obs_dims_are_named_with_the_fix(make_dataset) -> None:
    norm = _obs_norm(make_dataset, _flat_dims)
    np.testing.assert_array_equal(near_constant_dims(norm), [1, 4])
    message = near_constant_obs_warning(norm, clamp_obs=False)
    assert message is not None and "\n" not in message
    assert "2 of 6 observation dims" in message
    assert "1 (constant at 0.25)" in message and "4 (range " in message
    assert "--clamp-obs" in message and "drop those dims" in message
    # A constant dim normalises to -1 in the data; a state 1e-3 off it is far outside.
    assert norm.normalize(np.full(6, 0.25))[1] == pytest.approx(-1.0)
    assert norm.normalize(np.full(6, 0.251))[1] > 1000


def test_healthy_or_clamped_observations_give_no_warning(make_dataset) -> None:
    healthy = _obs_norm(make_dataset)
    assert near_constant_dims(healthy).size == 0
    assert near_constant_obs_warning(healthy, clamp_obs=False) is None
    assert near_constant_obs_warning(_obs_norm(make_dataset, _flat_dims), clamp_obs=True) is None


def test_near_constant_warning_names_at_most_max_named_dims() -> None:
    low = np.zeros(30)
    high = np.r_[np.ones(10), np.full(20, 1e-5)]  # dims 10..29 are tiny
    message = near_constant_obs_warning(MinMaxNormalizer(low, high), clamp_obs=False)
    assert message is not None and "20 of 30" in message
    assert "10 (range 1e-05 at 0)" in message and "17 (" in message and "18 (" not in message
    assert "and 12 more" in message
    # All dims constant: every one is named (the reference range is 0).
    assert near_constant_dims(MinMaxNormalizer(np.ones(3), np.ones(3))).tolist() == [0, 1, 2]
