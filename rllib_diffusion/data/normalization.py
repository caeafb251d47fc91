"""Min-max normalisation to [-1, 1], as DPPO pretrains with.

``x' = 2 (x - low) / (high - low + 1e-6) - 1``. The statistics are fitted once on the
dataset, saved next to the checkpoint (JSON) and reused by the env wrappers, so the same
object must work on numpy arrays (data pipeline, wrappers) and torch tensors (modules).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from rllib_diffusion.data.errors import DatasetError

if TYPE_CHECKING:
    from rllib_diffusion.data.episodes import EpisodeDataset

#: Added to the range so constant dimensions map to -1 instead of dividing by zero.
EPS = 1e-6

ArrayT = TypeVar("ArrayT")


def _is_tensor(x: Any) -> bool:
    # Checking sys.modules avoids importing torch for numpy-only users: if torch was never
    # imported, x cannot be a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass
class MinMaxNormalizer:
    """Per-dimension affine map of ``[low, high]`` onto ``[-1, 1]``.

    Attributes:
        low: ``(D,)`` per-dimension minimum (stored as float64).
        high: ``(D,)`` per-dimension maximum.
    """

    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        if self.low.shape != self.high.shape:
            raise DatasetError(
                f"MinMaxNormalizer low has shape {self.low.shape} but high has "
                f"{self.high.shape}; both must be (D,). Refit it with MinMaxNormalizer.fit(x)."
            )
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise DatasetError(
                "MinMaxNormalizer statistics contain NaN/inf; the data it was fitted on is not "
                "finite. Run validate_dataset(...) and filter the bad episodes, then refit."
            )
        if (self.high < self.low).any():
            dims = np.flatnonzero(self.high < self.low).tolist()
            raise DatasetError(
                f"MinMaxNormalizer has high < low in dims {dims}; swap them or refit."
            )

    @classmethod
    def fit(cls, x: npt.ArrayLike) -> MinMaxNormalizer:
        """Fit on ``x`` of shape ``(..., D)``: min and max over all leading axes."""
        arr = np.asarray(x.detach().cpu().numpy() if _is_tensor(x) else x)  # type: ignore[union-attr]
        if arr.ndim == 0 or arr.size == 0:
            raise DatasetError(
                f"Cannot fit a MinMaxNormalizer on an array of shape {arr.shape}; pass at least "
                "one sample of shape (..., D)."
            )
        flat = arr.reshape(-1, arr.shape[-1])
        return cls(low=flat.min(axis=0), high=flat.max(axis=0))

    @property
    def dim(self) -> int:
        """D."""
        return int(self.low.shape[0])

    def _stats_like(self, x: Any) -> tuple[Any, Any, Any]:
        """``(x, low, high)`` with the statistics in ``x``'s type, dtype and device."""
        if _is_tensor(x):
            import torch

            if not torch.is_floating_point(x):
                x = x.to(torch.float32)
            low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
            high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device)
        else:
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float32)
            low, high = self.low.astype(x.dtype), self.high.astype(x.dtype)
        if tuple(x.shape[-1:]) != (self.dim,):
            raise DatasetError(
                f"MinMaxNormalizer expects (..., {self.dim}) inputs, got shape "
                f"{tuple(x.shape)}; check that the statistics belong to this env/dataset "
                "(and that obs and action normalisers are not swapped)."
            )
        return x, low, high

    def normalize(self, x: ArrayT) -> ArrayT:
        """Map ``(..., D)`` data to ``[-1, 1]`` (for data inside the fitted range).

        Returns the input's type: numpy in → numpy out (same float dtype); tensor in →
        tensor out (same dtype and device, differentiable).
        """
        x, low, high = self._stats_like(x)
        return 2.0 * (x - low) / (high - low + EPS) - 1.0

    def unnormalize(self, y: ArrayT) -> ArrayT:
        """Exact inverse of :meth:`normalize` (up to floating-point rounding)."""
        y, low, high = self._stats_like(y)
        return (y + 1.0) * 0.5 * (high - low + EPS) + low

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable form (python floats; float64 round-trips exactly)."""
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MinMaxNormalizer:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("low", "high") if k not in d]
        if missing:
            raise DatasetError(
                f"Normaliser dict lacks {missing} (has {sorted(d)}); it must come from "
                "MinMaxNormalizer.to_dict()."
            )
        return cls(low=np.asarray(d["low"]), high=np.asarray(d["high"]))


#: A dimension whose data range is below this fraction of the reference range (the 90th
#: percentile of all dims' ranges) counts as near-constant.
NEAR_CONSTANT_REL_RANGE = 1e-3
#: Quantile of the per-dimension ranges taken as the scale of the dims that do move.
REFERENCE_RANGE_QUANTILE = 0.9


def near_constant_dims(
    normalizer: MinMaxNormalizer, rel_range: float = NEAR_CONSTANT_REL_RANGE
) -> np.ndarray:
    """Indices of dims whose fitted range is tiny: ``high - low <= EPS`` (constant in the
    data) or ``high - low < rel_range * q90``, q90 the 90th percentile of all ranges.

    Why it matters: the normaliser maps a value ``d`` beyond an end of the range to about
    ``±(1 + 2 d / range)``, so a tiny range turns a small unseen deviation into a huge
    input. A constant dim normalises to exactly -1 in the data (``2 * 0 / EPS - 1``, no
    division by zero), but any other value ``x`` becomes ``2e6 (x - low) - 1``: a 1e-3
    change gives 2,000. With ``rel_range = 1e-3`` a deviation of 1% of the moving dims'
    scale already lands at ~20, twenty times outside the training inputs.

    Why relative to the 90th percentile: ranges are in each dim's own units, so an
    absolute bound (other than ``EPS``, below which a dim is constant to the normaliser) would
    depend on the env; the median fails when most dims are near-constant, as in Franka
    Kitchen single-task data (the untouched objects: median range 1.2e-3 of 61 dims,
    while the kettle's 1.2e-5 range gave inputs of 30,300); the 90th percentile is the
    scale of the dims that move, and one outlier (say a step counter) does not set it.
    On the repo's Hopper, Avoid and Lift data no dim is flagged.
    """
    return near_constant_spread(normalizer.high - normalizer.low, rel_range)


def near_constant_spread(
    spread: np.ndarray, rel_range: float = NEAR_CONSTANT_REL_RANGE
) -> np.ndarray:
    """Indices of the (Do,) per-dim ``spread`` (a range, or a std) that is ``<= EPS`` or
    below ``rel_range`` times its 90th percentile (:func:`near_constant_dims` explains
    the choice); used for any observation normalisation fitted to data."""
    spread = np.asarray(spread, dtype=np.float64)
    reference = float(np.quantile(spread, REFERENCE_RANGE_QUANTILE))
    return np.flatnonzero((spread <= EPS) | (spread < rel_range * reference))


def near_constant_names(
    dims: np.ndarray, spread: np.ndarray, at: np.ndarray, unit: str, max_named: int = 8
) -> str:
    """``"i (constant at x), j (<unit> s at x)… and N more"`` for the first ``max_named``
    of ``dims`` (their ``spread`` and the value ``at`` which they sit)."""
    named = []
    for i in dims[:max_named]:
        kind = "constant" if spread[i] <= EPS else f"{unit} {spread[i]:.2g}"
        named.append(f"{i} ({kind} at {at[i]:.4g})")
    more = f" and {dims.size - max_named} more" if dims.size > max_named else ""
    return ", ".join(named) + more


def near_constant_obs_warning(
    normalizer: MinMaxNormalizer, clamp_obs: bool, max_named: int = 8
) -> str | None:
    """One-line warning naming the :func:`near_constant_dims` of the observation
    ``normalizer`` (at most ``max_named``, then "and N more") and the fix; None when there
    are none or when ``clamp_obs`` already clips the policy's inputs to [-1, 1]."""
    dims = near_constant_dims(normalizer)
    if clamp_obs or dims.size == 0:
        return None
    names = near_constant_names(
        dims, normalizer.high - normalizer.low, normalizer.low, "range", max_named
    )
    return (
        f"warning: {dims.size} of {normalizer.dim} observation dims have a near-constant "
        f"range in the dataset: {names}; min-max normalisation maps a "
        "state off that range by d to about 2d/range (constant: 2e6 d), far outside "
        "[-1, 1] (inputs of 30,300 wrecked DPPO fine-tuning on Franka Kitchen). Pretrain "
        "with --clamp-obs (clips the policy's inputs to [-1, 1]) or drop those dims."
    )


@dataclass
class DatasetNormalization:
    """Observation and action normalisers that travel together with a checkpoint."""

    obs: MinMaxNormalizer
    action: MinMaxNormalizer

    @classmethod
    def fit(cls, dataset: EpisodeDataset) -> DatasetNormalization:
        """Fit on every observation (final ones included) and every action of ``dataset``."""
        if not dataset.episodes:
            raise DatasetError(
                f"Cannot fit normalisation on dataset '{dataset.name}': it has no episodes."
            )
        obs = np.concatenate([ep.observations for ep in dataset.episodes])
        act = np.concatenate([ep.actions for ep in dataset.episodes])
        return cls(obs=MinMaxNormalizer.fit(obs), action=MinMaxNormalizer.fit(act))

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """``{"obs": {...}, "action": {...}}``, JSON-serialisable."""
        return {"obs": self.obs.to_dict(), "action": self.action.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetNormalization:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("obs", "action") if k not in d]
        if missing:
            raise DatasetError(
                f"Normalisation dict lacks {missing} (has {sorted(d)}); it must come from "
                "DatasetNormalization.to_dict() / save()."
            )
        return cls(
            obs=MinMaxNormalizer.from_dict(d["obs"]),
            action=MinMaxNormalizer.from_dict(d["action"]),
        )

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write JSON atomically (temp file in the same directory, then ``os.replace``)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return str(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetNormalization:
        """Read what :meth:`save` wrote."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"Normalisation file not found at '{path}'; it is saved next to the checkpoint "
                "by pretraining — point to that checkpoint's directory, or refit with "
                "DatasetNormalization.fit(dataset)."
            )
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"Normalisation file '{path}' is not valid JSON ({err}); refit and save it again."
            ) from err
        return cls.from_dict(d)
