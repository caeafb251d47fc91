"""DPPO-style ``.npz`` files: flat arrays plus per-trajectory lengths.

Layout (N transitions, E trajectories):
    ``states`` (N, Do), ``actions`` (N, Da), ``traj_lengths`` (E,) with Σ = N,
    optional ``rewards`` (N,), ``terminals`` (N,),
    optional ``final_states`` (E, Do) — written by :func:`save_npz`, not by DPPO.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from rllib_diffusion.data.episodes import Episode, EpisodeDataset
from rllib_diffusion.data.errors import DatasetError

logger = logging.getLogger(__name__)

_REQUIRED = ("states", "actions", "traj_lengths")
_FINAL_KEY = "final_states"
_ENV_KEY = "env_id"
_UNREADABLE = (
    "dataset '{path}' is not a readable .npz (truncated or not an npz): {reason}; "
    "re-create or re-download it."
)


def load_npz(path: str | os.PathLike[str], *, env_id: str | None = None) -> EpisodeDataset:
    """Load a DPPO-style ``.npz`` file.

    DPPO files store only the observations *before* each action, so the observation after
    a trajectory's last step is unknown. Unless the file has ``final_states`` (our
    extension, written by :func:`save_npz`), the last state is repeated as the final
    observation. That is harmless for behaviour cloning and for terminated episodes (no
    bootstrapping), but a TD learner would bootstrap truncated episodes from a stale state.

    Without ``rewards`` every reward is 0 (fine for BC; useless for offline RL, which
    should warn the user upstream). Without ``terminals`` nothing is terminated. The last
    step of every trajectory that does not terminate is marked truncated, since the file
    holds no more steps of it.

    Args:
        path: the ``.npz`` file.
        env_id: gymnasium id to attach (DPPO files do not say which env they came from;
            files written by :func:`save_npz` do, and so do their reference scores).

    Raises:
        DatasetError: missing, truncated or non-npz file, no transitions, missing keys,
            or lengths that do not add up.
    """
    path = Path(path).expanduser()
    data = _read_with_required_keys(path)
    states, actions, lengths = _checked_core_arrays(data, path)
    n = len(states)
    rewards = _optional_per_step(data, "rewards", n, path, np.float32)
    if "rewards" not in data:
        logger.warning("npz file '%s' has no 'rewards'; filling zeros (fine for BC only).", path)
    terminals = _optional_per_step(data, "terminals", n, path, bool)
    finals = _final_states(data, path, len(lengths), states.shape[1])
    episodes = _split_episodes(states, actions, rewards, terminals, lengths, finals)
    meta = _read_meta(data)
    return EpisodeDataset(
        episodes=episodes,
        env_id=env_id or meta.get("env_id"),
        name=path.stem,
        ref_min_score=meta.get("ref_min_score"),
        ref_max_score=meta.get("ref_max_score"),
    )


def _read_with_required_keys(path: Path) -> dict[str, np.ndarray]:
    """The file's arrays, refusing a missing file or one without the DPPO keys."""
    if not path.is_file():
        raise DatasetError(
            f"npz dataset not found at '{path}'; check the path (DPPO writes e.g. "
            "'<data_dir>/gym/hopper-medium-v2/train.npz') or convert a Minari dataset with "
            "`save_npz(load_minari(id), path)`."
        )
    data = _read_arrays(path)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise DatasetError(
            f"npz file '{path}' lacks required key(s) {missing} (has {sorted(data)}). A DPPO "
            "dataset needs 'states' (N, Do), 'actions' (N, Da) and 'traj_lengths' (E,); "
            "rename the arrays or re-export the file."
        )
    return data


def _checked_core_arrays(
    data: dict[str, np.ndarray], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``states`` (N, Do), ``actions`` (N, Da) and ``traj_lengths`` (E,), checked to agree."""
    states = np.asarray(data["states"], dtype=np.float32)
    actions = np.asarray(data["actions"], dtype=np.float32)
    lengths = np.asarray(data["traj_lengths"]).astype(np.int64).reshape(-1)
    n = len(states)
    if n == 0 or lengths.size == 0:
        raise DatasetError(
            f"npz file '{path}' holds no transitions ({n} states, {lengths.size} "
            "trajectories); re-create it from a non-empty dataset."
        )
    states = states.reshape(n, -1)
    actions = actions.reshape(len(actions), -1)
    if len(actions) != n:
        raise DatasetError(
            f"npz file '{path}': 'states' has {n} rows but 'actions' has {len(actions)}; both "
            "must hold one row per transition."
        )
    if lengths.size == 0 or (lengths <= 0).any():
        raise DatasetError(
            f"npz file '{path}': 'traj_lengths' must be positive integers, got "
            f"{lengths[:10].tolist()}{'...' if lengths.size > 10 else ''}; drop empty "
            "trajectories when exporting."
        )
    if int(lengths.sum()) != n:
        raise DatasetError(
            f"npz file '{path}': sum(traj_lengths) = {int(lengths.sum())} but there are {n} "
            "states; traj_lengths must partition the transitions exactly. Re-export the file "
            "or fix traj_lengths."
        )
    return states, actions, lengths


def _final_states(
    data: dict[str, np.ndarray], path: Path, n_traj: int, obs_dim: int
) -> np.ndarray | None:
    """The optional per-trajectory final observations (E, Do), or None where absent."""
    finals = data.get(_FINAL_KEY)
    if finals is not None:
        finals = np.asarray(finals, dtype=np.float32).reshape(len(finals), -1)
        if finals.shape != (n_traj, obs_dim):
            raise DatasetError(
                f"npz file '{path}': '{_FINAL_KEY}' has shape {finals.shape}, expected "
                f"{(n_traj, obs_dim)} (one per trajectory); delete the key to "
                "fall back to repeating the last state."
            )
    return finals


def _split_episodes(
    states: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    lengths: np.ndarray,
    finals: np.ndarray | None,
) -> list[Episode]:
    """Cut the flat arrays into episodes; a non-terminated last step is marked truncated."""
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    episodes = []
    for e in range(len(lengths)):
        lo, hi = int(bounds[e]), int(bounds[e + 1])
        final = finals[e] if finals is not None else states[hi - 1]
        term = terminals[lo:hi].copy()
        trunc = np.zeros(hi - lo, dtype=bool)
        trunc[-1] = not term[-1]
        episodes.append(
            Episode(
                observations=np.concatenate([states[lo:hi], final[None]], axis=0),
                actions=actions[lo:hi],
                rewards=rewards[lo:hi],
                terminations=term,
                truncations=trunc,
            )
        )
    return episodes


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of the file, or a :class:`DatasetError` if it is not a readable npz."""
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != b"PK":  # every .npz is a zip archive
                raise ValueError("the file is not a zip archive")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        reason = f"{type(err).__name__}: {str(err).rstrip('.')}"
        raise DatasetError(_UNREADABLE.format(path=path, reason=reason)) from None


def _read_meta(data: dict[str, np.ndarray]) -> dict:
    """Our optional metadata keys (absent in DPPO files)."""
    meta: dict = {}
    if _ENV_KEY in data and str(data[_ENV_KEY]):
        meta["env_id"] = str(data[_ENV_KEY])
    for key in ("ref_min_score", "ref_max_score"):
        if key in data and np.isfinite(data[key]):
            meta[key] = float(data[key])
    return meta


def _optional_per_step(
    data: dict[str, np.ndarray], key: str, n: int, path: Path, dtype: type
) -> np.ndarray:
    if key not in data:
        return np.zeros(n, dtype=dtype)
    arr = np.asarray(data[key]).reshape(-1).astype(dtype)
    if len(arr) != n:
        raise DatasetError(
            f"npz file '{path}': '{key}' has {len(arr)} entries but there are {n} states; "
            f"store one {key[:-1]} per transition or drop the key."
        )
    return arr


def save_npz(dataset: EpisodeDataset, path: str | os.PathLike[str]) -> str:
    """Write ``dataset`` as a DPPO-style ``.npz`` (atomically: temp file, then rename).

    Writes ``states`` (observations before each action), ``actions``, ``rewards``,
    ``terminals``, ``traj_lengths`` and ``final_states`` (the final observation of each
    episode, which DPPO's format lacks; DPPO's loader ignores the extra key). Truncation
    flags are not stored: :func:`load_npz` re-derives them for the last step.

    Returns:
        The path written, as a string.
    """
    if not dataset.episodes:
        raise DatasetError(
            f"Cannot save dataset '{dataset.name}' to npz: it has no episodes. Load or "
            "collect episodes first."
        )
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    eps = dataset.episodes
    arrays = {
        "states": np.concatenate([ep.observations[:-1] for ep in eps]),
        "actions": np.concatenate([ep.actions for ep in eps]),
        "rewards": np.concatenate([ep.rewards for ep in eps]),
        "terminals": np.concatenate([ep.terminations for ep in eps]),
        "traj_lengths": np.array([ep.length for ep in eps], dtype=np.int64),
        _FINAL_KEY: np.stack([ep.observations[-1] for ep in eps]),
        # Our metadata (DPPO's loader ignores unknown keys).
        _ENV_KEY: np.array(dataset.env_id or ""),
        "ref_min_score": np.array(
            np.nan if dataset.ref_min_score is None else dataset.ref_min_score
        ),
        "ref_max_score": np.array(
            np.nan if dataset.ref_max_score is None else dataset.ref_max_score
        ),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # A file object keeps numpy from appending ".npz" to the temporary name.
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return str(path)
