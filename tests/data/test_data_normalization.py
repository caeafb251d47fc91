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
