"""Datasets: Minari / npz / robomimic import, chunked windows, min-max normalisation.

Everything loads into one in-memory form, :class:`EpisodeDataset` (a list of
:class:`Episode` with the final observation kept), from which :func:`make_windows` cuts
DPPO-style (observation history, action chunk) windows and
:class:`DatasetNormalization` fits the [-1, 1] statistics that travel with a checkpoint.
This package imports neither ``ray`` nor ``torch``.
"""

from __future__ import annotations

import os
from pathlib import Path

from rllib_diffusion.data.episodes import Episode, EpisodeDataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.minari_io import load_minari, write_minari
from rllib_diffusion.data.normalization import DatasetNormalization, MinMaxNormalizer
from rllib_diffusion.data.npz_io import load_npz, save_npz
from rllib_diffusion.data.robomimic_io import load_robomimic_hdf5
from rllib_diffusion.data.validation import check_finite, validate_dataset
from rllib_diffusion.data.windows import ChunkedWindows, make_windows

__all__ = [
    "ChunkedWindows",
    "DatasetError",
    "DatasetNormalization",
    "Episode",
    "EpisodeDataset",
    "MinMaxNormalizer",
    "check_finite",
    "load_dataset",
    "load_minari",
    "load_npz",
    "load_robomimic_hdf5",
    "make_windows",
    "save_npz",
    "validate_dataset",
    "write_minari",
]


def load_dataset(source: str | os.PathLike[str], *, download: bool = False) -> EpisodeDataset:
    """Load any supported dataset, chosen by the form of ``source``.

    * ``*.npz`` → :func:`load_npz` (DPPO format);
    * ``*.hdf5`` / ``*.h5`` → :func:`load_robomimic_hdf5`;
    * anything else → :func:`load_minari` (a Minari id such as
      ``"mujoco/hopper/medium-v0"``, or a dataset directory). ``download`` applies to
      Minari ids only (needs network, once).

    Raises:
        DatasetError: the file / directory / id does not exist or cannot be read.
    """
    suffix = Path(os.fspath(source)).suffix.lower()
    if suffix == ".npz":
        return load_npz(source)
    if suffix in (".hdf5", ".h5"):
        return load_robomimic_hdf5(source)
    return load_minari(source, download=download)
