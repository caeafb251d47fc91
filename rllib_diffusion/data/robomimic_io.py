"""robomimic HDF5 demonstrations (low-dimensional observations only).

File layout read here (T steps per demo)::

    data/                       attrs: env_args (JSON with "env_name"), optional
      demo_<i>/
        obs/<key>               (T, d_key)
        next_obs/<key>          (T, d_key)   observation after each action
        actions                 (T, Da)
        rewards                 (T,)
        dones                   (T,)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from rllib_diffusion.data.episodes import Episode, EpisodeDataset
from rllib_diffusion.data.errors import DatasetError

logger = logging.getLogger(__name__)

#: robomimic's low-dim keys in the order DPPO concatenates them (robot1_* only for
#: two-arm tasks such as Transport). Absent keys are skipped.
DEFAULT_LOW_DIM_KEYS: tuple[str, ...] = (
    "robot0_eef_pos",
    "robot0_eef_quat",
    "robot0_gripper_qpos",
    "robot1_eef_pos",
    "robot1_eef_quat",
    "robot1_gripper_qpos",
    "object",
)


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "Reading robomimic .hdf5 files needs h5py; install it with "
            "`pip install rllib-diffusion[hdf5]` (or `pip install h5py`)."
        ) from err
    return h5py


def _demo_sort_key(name: str) -> tuple[int, str]:
    # demo_10 must come after demo_9, as robomimic orders them.
    suffix = name.rsplit("_", 1)[-1]
    return (int(suffix), name) if suffix.isdigit() else (1 << 62, name)


def load_robomimic_hdf5(
    path: str | os.PathLike[str], obs_keys: list[str] | None = None
) -> EpisodeDataset:
    """Load robomimic demonstrations as episodes with flat low-dim observations.

    Args:
        path: the ``.hdf5`` file (e.g. ``low_dim_v141.hdf5``).
        obs_keys: observation keys concatenated in this order into ``(T+1, Do)``. Default:
            those of :data:`DEFAULT_LOW_DIM_KEYS` present in the file, in that order.

    Returns:
        Episodes whose final observation is ``next_obs[-1]`` (the last observation repeated,
        with a warning, if the file has no ``next_obs``); ``terminations`` = ``dones``;
        the last step of a demo that is not ``done`` is marked truncated. ``env_id`` is
        this package's gymnasium id for the file's robosuite env (``env_args``'
        ``env_name``: ``Lift`` → ``robomimic/Lift-v0``, ``PickPlaceCan`` →
        ``robomimic/Can-v0``, ...; see :mod:`rllib_diffusion.envs.robosuite_tasks`), else
        ``None``; ``name`` is the file stem.

    Raises:
        ImportError: h5py is not installed.
        DatasetError: missing file, no ``data`` group / demos, unknown or non-low-dim keys.
    """
    path = Path(path).expanduser()
    with _open_hdf5(path) as f:
        data, demos = _data_and_demos(f, path)
        keys = _checked_obs_keys(data[demos[0]], obs_keys, path)
        episodes = [_read_demo(data[name], keys, path, name) for name in demos]
        env_id = _gym_env_id(data.attrs.get("env_args"))
    logger.info("Loaded %d robomimic demos from %s with obs keys %s", len(episodes), path, keys)
    return EpisodeDataset(episodes=episodes, env_id=env_id, name=path.stem)


def _open_hdf5(path: Path) -> Any:
    """The open ``h5py.File`` at ``path``; refuses a missing or unreadable file."""
    if not path.is_file():
        raise DatasetError(
            f"robomimic file not found at '{path}'; check the path or download the dataset with "
            "robomimic's `download_datasets.py --tasks <task> --dataset_types mh --hdf5_types low_dim`."
        )
    h5py = _import_h5py()
    try:
        return h5py.File(path, "r")
    except OSError as err:  # truncated, or not HDF5 at all
        raise DatasetError(
            f"dataset '{path}' is not a readable .hdf5 (truncated or not an HDF5 file): "
            f"{err}; re-create or re-download it."
        ) from None


def _data_and_demos(f: Any, path: Path) -> tuple[Any, list[str]]:
    """The file's ``data`` group and its demo names in numeric order; refuses a file without."""
    if "data" not in f:
        raise DatasetError(
            f"'{path}' has no 'data' group (top-level keys: {sorted(f.keys())}), so it is "
            "not a robomimic file. A Minari dataset is a directory: pass that directory "
            "instead of its .hdf5 file."
        )
    data = f["data"]
    demos = sorted((k for k in data if k.startswith("demo")), key=_demo_sort_key)
    if not demos:
        raise DatasetError(
            f"'{path}' has no 'data/demo_*' groups; nothing to load. Check that this is a "
            "robomimic dataset file."
        )
    return data, demos


def _checked_obs_keys(first_demo: Any, obs_keys: list[str] | None, path: Path) -> list[str]:
    """The observation keys to load (default: the low-dim ones present), all in the file."""
    available = sorted(first_demo["obs"].keys())
    keys = list(obs_keys) if obs_keys is not None else _default_keys(available, path)
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise DatasetError(
            f"'{path}': observation key(s) {unknown} not in the file; available keys: "
            f"{available}. Pass obs_keys from that list."
        )
    return keys


def _gym_env_id(raw: Any) -> str | None:
    """The gymnasium id for a file's ``env_args`` (JSON), if this package has that task."""
    from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS, env_id_for_robosuite_env

    try:
        args = json.loads(raw) if raw is not None else {}
    except (TypeError, ValueError):
        return None
    if not isinstance(args, dict):
        return None
    if args.get("gym_env_id") in ROBOT_TASKS:
        return args["gym_env_id"]
    return env_id_for_robosuite_env(args.get("env_name"))


def _default_keys(available: list[str], path: Path) -> list[str]:
    keys = [k for k in DEFAULT_LOW_DIM_KEYS if k in available]
    if not keys:
        raise DatasetError(
            f"'{path}' has none of robomimic's default low-dim observation keys "
            f"{list(DEFAULT_LOW_DIM_KEYS)}; available: {available}. Pass obs_keys explicitly."
        )
    return keys


def _concat_obs(group: Any, keys: list[str], path: Path, demo: str) -> np.ndarray:
    parts = []
    for key in keys:
        if key not in group:
            raise DatasetError(
                f"'{path}' {demo}: observation '{key}' is missing in this demo (present: "
                f"{sorted(group.keys())}); choose obs_keys that every demo has."
            )
        arr = np.asarray(group[key], dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DatasetError(
                f"'{path}' {demo}: observation '{key}' has shape {arr.shape}, which is not "
                "low-dimensional (images are not supported here); leave it out of obs_keys."
            )
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _read_demo(demo: Any, keys: list[str], path: Path, name: str) -> Episode:
    for required in ("obs", "actions"):
        if required not in demo:
            raise DatasetError(
                f"'{path}' {name} lacks '{required}'; the file is incomplete — re-download or "
                "re-export it."
            )
    obs = _concat_obs(demo["obs"], keys, path, name)
    actions = np.asarray(demo["actions"], dtype=np.float32)
    t = len(actions)
    if "next_obs" in demo:
        final = _concat_obs(demo["next_obs"], keys, path, name)[-1]
    else:
        logger.warning("'%s' %s has no next_obs; repeating the last observation.", path, name)
        final = obs[-1]
    rewards = np.asarray(demo["rewards"], dtype=np.float32) if "rewards" in demo else np.zeros(t)
    dones = np.asarray(demo["dones"]).astype(bool) if "dones" in demo else np.zeros(t, bool)
    truncations = np.zeros(t, dtype=bool)
    if t > 0:
        truncations[-1] = not dones[-1]
    return Episode(
        observations=np.concatenate([obs, final[None]], axis=0),
        actions=actions,
        rewards=rewards,
        terminations=dones,
        truncations=truncations,
    )


def read_env_name(path: str | os.PathLike[str]) -> str | None:
    """robosuite env name stored in ``data.attrs['env_args']`` (e.g. ``"Lift"``), if any."""
    h5py = _import_h5py()
    with h5py.File(Path(path).expanduser(), "r") as f:
        raw = f["data"].attrs.get("env_args") if "data" in f else None
    if raw is None:
        return None
    try:
        return json.loads(raw).get("env_name")
    except (TypeError, ValueError):
        return None
