"""Trajectory segments for diffusion dynamics models (DyDiff).

Glossary: N segments, H segment length (transitions), Do / Da observation / action dims.

A segment at step ``i`` of an episode holds the H consecutive transitions
``(s_j, a_j, r_j, s_{j+1}, d_j)`` for ``j = i .. i+H-1``; starts run over
``i = 0 .. T-H`` so a segment never crosses the episode's end (a terminal transition
can only be its last). Stored as stacked transitions: ``obs`` (N, H, Do) holds
``s_i .. s_{i+H-1}`` and ``new_obs`` (N, H, Do) holds ``s_{i+1} .. s_{i+H}``, so the
rows read like transitions with H-times wider columns (raw units).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from rllib_diffusion import columns as C
from rllib_diffusion.data.episodes import EpisodeDataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.offline import FORMAT_VERSION, default_cache_dir, write_cached_parquet


def make_segments(dataset: EpisodeDataset, *, horizon: int) -> dict[str, np.ndarray]:
    """Every length-``horizon`` segment of every episode as stacked transition columns:
    ``obs``/``new_obs`` (N, H, Do), ``actions`` (N, H, Da), ``rewards``/``terminateds``
    (N, H) float32. Episodes shorter than H give none.

    Raises:
        DatasetError: ``horizon`` < 1 or longer than every episode.
    """
    if horizon < 1:
        raise DatasetError(f"segment horizon must be >= 1, got {horizon}.")
    lengths = np.array([ep.length for ep in dataset.episodes], dtype=np.int64)
    counts = np.maximum(lengths - horizon + 1, 0)
    total = int(counts.sum())
    if total == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        raise DatasetError(
            f"segment horizon {horizon} is longer than every episode of '{dataset.name}' "
            f"(the longest has {longest} steps); use --horizon <= {longest}."
        )
    eps = dataset.episodes
    all_obs = np.concatenate([ep.observations for ep in eps]).astype(np.float32)
    act_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    obs_start = act_start + np.arange(len(lengths))  # each episode has one extra observation
    episode = np.repeat(np.arange(len(lengths)), counts)
    step = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(horizon)[None, :]
    act_idx = (act_start[episode] + step)[:, None] + offsets
    obs_idx = (obs_start[episode] + step)[:, None] + offsets

    def per_step(name: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(ep, name)) for ep in eps]).astype(np.float32)

    return {
        C.OBS: all_obs[obs_idx],
        C.ACTIONS: per_step("actions")[act_idx],
        C.REWARDS: per_step("rewards")[act_idx],
        C.NEXT_OBS: all_obs[obs_idx + 1],
        C.TERMINATEDS: per_step("terminations")[act_idx],
    }


def prepare_segment_data(
    dataset: EpisodeDataset,
    *,
    horizon: int,
    cache_dir: str | os.PathLike | None = None,
    rows_per_file: int = 200_000,
    seed: int = 0,
) -> tuple[str, int]:
    """Write ``dataset``'s segments as shuffled parquet (cached), one row per segment with
    columns flattened over H: ``obs``/``new_obs`` (H·Do,), ``actions`` (H·Da,),
    ``rewards``/``terminateds`` (H,). Returns ``(directory, num_segments)``."""
    root = (
        Path(cache_dir).expanduser() / "segments"
        if cache_dir
        else default_cache_dir().parent / "segments"
    )
    h = hashlib.sha1(json.dumps([FORMAT_VERSION, "segments", horizon]).encode())
    for ep in dataset.episodes:
        for arr in (ep.observations, ep.actions, ep.rewards, ep.terminations):
            h.update(np.ascontiguousarray(arr).tobytes())
    key = h.hexdigest()[:20]

    def build() -> tuple[dict[str, np.ndarray], dict]:
        seg = make_segments(dataset, horizon=horizon)
        cols = {k: v.reshape(len(v), -1) for k, v in seg.items()}
        meta = {"horizon": horizon, "obs_dim": dataset.obs_dim, "action_dim": dataset.action_dim}
        return cols, meta

    meta, _ = write_cached_parquet(
        root / key, build, dataset=dataset, rows_per_file=rows_per_file, seed=seed
    )
    return str(root / key), int(meta["num_samples"])
