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
