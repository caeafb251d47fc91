"""Reading and writing Minari datasets (arrow format, no jax needed).

Where Minari keeps data: ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) holds
one directory per dataset id (``<root>/<namespace>/<name>-v<N>/``), whose ``data/``
subdirectory holds ``metadata.json`` and the episodes.

Official ids such as ``mujoco/hopper/medium-v0`` must be fetched once with
``download=True`` (``--download`` on the command line; network); afterwards they load offline from ``$MINARI_DATASETS_PATH``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_diffusion.data.episodes import Episode, EpisodeDataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.minari_arrow import (
    ArrowEpisodeColumns,
    BulkReadUnsupported,
    EpisodeFileError,
    can_read_in_bulk,
    can_write_in_bulk,
    read_arrow_episodes,
    write_arrow_episodes,
)
from rllib_diffusion.envs.tasks import make_env

logger = logging.getLogger(__name__)

_ENV_VAR = "MINARI_DATASETS_PATH"
# Namespaces published on Farama's server; for other ids `download=True` cannot help.
_REMOTE_NAMESPACES = ("mujoco", "D4RL", "minigrid", "atari", "metaworld")
# Minari writes into `$MINARI_DATASETS_PATH/<id>` only, so writes are staged by pointing
# that variable at a hidden scratch root for the duration of the call; the lock keeps two
# writer threads of this process from pointing it at different places at once.
_ENV_LOCK = threading.Lock()
_TMP_PREFIX = ".rllib-diffusion-tmp-"
_DATA_FORMATS = ("arrow", "parquet", "hdf5")
#: metadata.json key of the env's keyword arguments (written by :func:`write_minari`).
ENV_KWARGS_KEY = "env_kwargs"
_DAMAGED = (
    "Minari dataset '{name}' at {data_dir} is damaged (truncated or missing episode "
    "files): {reason}; delete {dataset_dir} and re-create it (`rllib-diffusion collect`) or "
    "re-download it (add --download)."
)


def minari_root() -> Path:
    """The local Minari datasets directory (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``),
    absolute: Minari joins a relative root onto itself when it writes a staged dataset."""
    root = os.environ.get(_ENV_VAR)
    if root is None:
        return Path.home() / ".minari" / "datasets"
    return Path(root).expanduser().absolute()


def _check_dataset_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as err:
        # Minari raises TypeError (int(None)) for ids without a version suffix.
        raise DatasetError(
            f"Malformed Minari dataset id '{dataset_id}': ids look like "
            "'namespace/name-v0' (e.g. 'mujoco/hopper/medium-v0' or "
            "'rllib-diffusion/hopper/medium-v0'); add the '-v<N>' version suffix. If you "
            "meant a directory, pass an existing path (absolute, or starting with './')."
        ) from err


def check_output_id(dataset_id: str, *, overwrite: bool) -> None:
    """One-line errors for an output id that cannot be written (call before any work)."""
    _check_dataset_id(dataset_id)
    if (minari_root() / dataset_id).exists() and not overwrite:
        raise DatasetError(
            f"Minari dataset '{dataset_id}' already exists at {minari_root() / dataset_id}; "
            "add --overwrite (overwrite=True from Python) to replace it, or choose a new "
            "version (e.g. '-v1')."
        )


def _looks_like_path(source: str) -> bool:
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or os.path.exists(os.path.expanduser(source))
    )


def _data_dir_of(path: Path) -> Path:
    """Accept either the dataset directory (holding ``data/``) or ``data/`` itself."""
    if (path / "data" / "metadata.json").is_file():
        return path / "data"
    if (path / "metadata.json").is_file():
        return path
    if not path.exists():
        raise DatasetError(
            f"No Minari dataset at '{path}': the path does not exist. Pass the directory that "
            "holds the dataset's data/ folder, or a Minari id such as 'mujoco/hopper/medium-v0'."
        )
    raise DatasetError(
        f"'{path}' is not a Minari dataset directory: neither '{path / 'data' / 'metadata.json'}' "
        f"nor '{path / 'metadata.json'}' exists. Pass the directory that holds data/ "
        "(e.g. '~/.minari/datasets/mujoco/hopper/medium-v0'), or an .npz / .hdf5 file."
    )


def _local_ids(root: Path) -> list[str]:
    """Dataset ids under ``root`` (directories holding ``data/metadata.json``), for hints."""
    if not root.is_dir():
        return []
    ids = [
        p.parent.relative_to(root).as_posix()
        for p in root.glob("**/data/metadata.json")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(ids)


def _not_found_error(dataset_id: str, root: Path) -> DatasetError:
    namespace = dataset_id.split("/", 1)[0]
    if namespace in _REMOTE_NAMESPACES:
        fix = (
            "add --download (download=True from Python; needs network) to fetch it once "
            f"from Farama's server, or run `minari download {dataset_id}`"
        )
    else:
        fix = (
            f"--download will not help ('{namespace}' is not a namespace published by "
            "Farama); create it with `rllib-diffusion collect` or `write_minari(...)`, or pass "
            "the dataset directory's path"
        )
    available = _local_ids(root)
    hint = f" Local datasets: {', '.join(available[:8])}." if available else ""
    return DatasetError(
        f"Dataset '{dataset_id}' not found locally at {root / dataset_id} "
        f"(${_ENV_VAR}={os.environ.get(_ENV_VAR, '<unset>')}); {fix}.{hint}"
    )


def _flatten_obs(space: gym.Space, obs: Any, dataset_name: str) -> np.ndarray:
    """Observations of one episode as ``(T+1, Do)``.

    Dict/Tuple spaces of Boxes (e.g. D4RL pointmaze/antmaze) are concatenated in the
    space's own key order, which is the order ``gymnasium.spaces.flatten`` uses.
    """
    if isinstance(space, gym.spaces.Box):
        arr = np.asarray(obs)
        return arr.reshape(len(arr), -1)
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate(
            [_flatten_obs(sub, obs[key], dataset_name) for key, sub in space.spaces.items()],
            axis=1,
        )
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate(
            [_flatten_obs(sub, obs[i], dataset_name) for i, sub in enumerate(space.spaces)],
            axis=1,
        )
    raise DatasetError(
        f"Dataset '{dataset_name}' has observation space {space}; only Box observations "
        "(or Dict/Tuple of Boxes, which are flattened) are supported. Use a state-based "
        "dataset or convert the observations to a Box before loading."
    )


def _to_episode_dataset(mds: Any) -> EpisodeDataset:
    name = mds.spec.dataset_id
    if not isinstance(mds.action_space, gym.spaces.Box):
        raise DatasetError(
            f"Dataset '{name}' has action space {mds.action_space}; diffusion policies need a "
            "continuous Box action space. Pick a continuous-control dataset."
        )
    episodes = _read_episodes(mds, name)
    metadata = mds.storage.metadata
    env_spec = mds.env_spec
    return EpisodeDataset(
        episodes=episodes,
        env_id=env_spec.id if env_spec is not None else None,
        name=name,
        ref_min_score=_opt_float(metadata.get("ref_min_score")),
        ref_max_score=_opt_float(metadata.get("ref_max_score")),
        env_kwargs=metadata.get(ENV_KWARGS_KEY),
    )


def _read_episodes(mds: Any, name: str) -> list[Episode]:
    """Every episode of ``mds``: read in bulk where the bulk reader applies (arrow format,
    Box spaces; the same arrays, 2-5x faster for many short episodes, measured by
    ``benchmarks/minari_write.py --read``), else by Minari's reader."""
    if can_read_in_bulk(mds.storage):
        try:
            return _read_episodes_in_bulk(mds, name)
        except BulkReadUnsupported as why:
            logger.info("Reading Minari dataset '%s' with Minari's reader: %s", name, why)
    return _read_episodes_with_minari(mds, name)


def _read_episodes_in_bulk(mds: Any, name: str) -> list[Episode]:
    """Every episode of an arrow dataset through :func:`read_arrow_episodes`; an unreadable
    episode file is a one-line DatasetError naming it."""
    data_dir = Path(mds.storage.data_path)
    try:
        columns = read_arrow_episodes(data_dir, int(mds.total_episodes), int(mds.total_steps))
    except EpisodeFileError as err:
        raise DatasetError(
            _DAMAGED.format(name=name, data_dir=data_dir, dataset_dir=data_dir.parent, reason=err)
        ) from None
    return _split_episodes(columns)


def _split_episodes(columns: ArrowEpisodeColumns) -> list[Episode]:
    """Episodes of the concatenated columns, converted to ``Episode``'s dtypes once (each
    episode's arrays are views of the converted columns; the values are those that
    ``Episode`` gives the arrays of Minari's reader)."""
    step_ends = np.cumsum(columns.steps)
    rows = _slices(columns.observations, np.float32, step_ends + np.arange(1, len(step_ends) + 1))
    actions = _slices(columns.actions, np.float32, step_ends)
    rewards = _slices(columns.rewards, np.float32, step_ends)
    terminations = _slices(columns.terminations, bool, step_ends)
    truncations = _slices(columns.truncations, bool, step_ends)
    return [
        Episode(*arrays)
        for arrays in zip(rows, actions, rewards, terminations, truncations, strict=True)
    ]


def _slices(values: np.ndarray, dtype: Any, ends: np.ndarray) -> list[np.ndarray]:
    """``values`` converted to ``dtype`` once and cut at ``ends`` (views; np.split costs
    three times as much per piece)."""
    converted = np.asarray(values, dtype=dtype)
    bounds = [0, *ends.tolist()]
    return [converted[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def _read_episodes_with_minari(mds: Any, name: str) -> list[Episode]:
    """Every episode of ``mds`` through Minari's own reader; a damaged or incomplete
    episode store is a DatasetError."""
    data_dir = Path(mds.storage.data_path)
    episodes = []
    try:
        for ep in mds.iterate_episodes():
            actions = np.asarray(ep.actions)
            episodes.append(
                Episode(
                    observations=_flatten_obs(mds.observation_space, ep.observations, name),
                    actions=actions.reshape(len(actions), -1),
                    rewards=ep.rewards,
                    terminations=ep.terminations,
                    truncations=ep.truncations,
                )
            )
    except DatasetError:
        raise
    except (ValueError, OSError, KeyError, IndexError, TypeError) as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise DatasetError(
            _DAMAGED.format(
                name=name, data_dir=data_dir, dataset_dir=data_dir.parent, reason=reason
            )
        ) from None
    expected = int(mds.total_episodes)
    if len(episodes) != expected:
        reason = f"metadata.json lists {expected} episodes but {len(episodes)} could be read"
        raise DatasetError(
            _DAMAGED.format(
                name=name, data_dir=data_dir, dataset_dir=data_dir.parent, reason=reason
            )
        )
    return episodes


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _open_minari_dataset(data_dir: Path, label: str) -> Any:
    import minari

    try:
        return minari.MinariDataset(data_dir)
    except (ValueError, KeyError, OSError, AssertionError) as err:  # Minari asserts on bad metadata
        raise DatasetError(
            f"Cannot read Minari dataset {label} ({data_dir}): {err}. If the dataset was made "
            "by another Minari version, install minari>=0.5.2,<0.6 or re-create it; if it is "
            "half-written, delete the directory and write it again."
        ) from err


def load_minari(dataset: str | os.PathLike[str], *, download: bool = False) -> EpisodeDataset:
    """Load a Minari dataset into memory.

    Args:
        dataset: a Minari id (``"mujoco/hopper/medium-v0"``, or a locally written id like
            ``"rllib-diffusion/hopper/medium-v0"``) looked up under ``$MINARI_DATASETS_PATH``;
            or a filesystem path (``os.PathLike``, an absolute path, one starting with
            ``.``/``~``, or any existing directory) to a dataset directory (the one holding
            ``data/``) or to its ``data/`` directory. Paths are read in place with
            ``minari.MinariDataset(<path>/data)``; ``$MINARI_DATASETS_PATH`` is not used.
        download: for ids only: fetch from Farama's server if not present locally (needs
            network). Official ``mujoco/*`` ids need this once; later loads are offline.

    Returns:
        The episodes with observations flattened to ``(T+1, Do)`` float32, ``env_id`` from
        the dataset's env spec, and ``ref_min_score`` / ``ref_max_score`` from its metadata
        when present (official ``mujoco/*-v0`` sets have none). Arrow datasets with Box
        spaces are read with :func:`~rllib_diffusion.data.minari_arrow.read_arrow_episodes`
        (the same arrays as Minari's reader, several times faster for many short
        episodes); other datasets through Minari's reader.

    Raises:
        DatasetError: unknown id / path, malformed id, unreadable or unsupported dataset
            (a damaged episode file is named in the message).
    """
    import minari

    if isinstance(dataset, os.PathLike) or _looks_like_path(dataset):
        path = Path(os.path.expanduser(os.fspath(dataset))).resolve()
        return _to_episode_dataset(_open_minari_dataset(_data_dir_of(path), f"at '{path}'"))

    dataset_id = str(dataset)
    _check_dataset_id(dataset_id)
    root = minari_root()
    data_dir = root / dataset_id / "data"
    if data_dir.is_dir():
        return _to_episode_dataset(_open_minari_dataset(data_dir, f"'{dataset_id}'"))
    if not download:
        raise _not_found_error(dataset_id, root)
    try:
        mds = minari.load_dataset(dataset_id, download=True)
    except Exception as err:  # network, auth and "no such remote dataset" all end here
        raise DatasetError(
            f"Could not download Minari dataset '{dataset_id}': {type(err).__name__}: {err}. "
            "Check the id (`minari list remote`) and network access, or copy the dataset "
            f"directory into {root} from a machine that has network."
        ) from err
    return _to_episode_dataset(mds)


@contextlib.contextmanager
def _minari_root_set_to(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` for the duration of the block (process-wide, under a lock)."""
    with _ENV_LOCK:
        old = os.environ.get(_ENV_VAR)
        os.environ[_ENV_VAR] = str(root)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(_ENV_VAR, None)
            else:
                os.environ[_ENV_VAR] = old


def _spaces_for(
    env_id: str | None, obs_dim: int, action_dim: int, env_kwargs: dict[str, Any] | None = None
) -> tuple[gym.Space, gym.Space]:
    if env_id is None:
        # Without an env there are no known bounds; float32 matches the stored arrays.
        return (
            gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-np.inf, np.inf, (action_dim,), np.float32),
        )
    try:
        env = make_env(env_id, **(env_kwargs or {}))
    except gym.error.Error as err:
        raise DatasetError(
            f"Cannot make env '{env_id}' to describe the dataset: {err}. Import the package "
            "that registers it first, or pass env_id=None to store the dataset without an "
            "env spec."
        ) from err
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _flatdim(space: gym.Space) -> int:
    return int(gym.spaces.flatdim(space))


def write_minari(
    dataset: EpisodeDataset | Sequence[Episode],
    dataset_id: str,
    *,
    env_id: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
    data_format: str = "arrow",
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> str:
    """Write episodes as a Minari dataset under ``$MINARI_DATASETS_PATH/<dataset_id>``.

    Uses ``minari.create_dataset_from_buffers`` with ``EpisodeBuffer``s, so only pyarrow
    is needed (no jax); in the default arrow format the episode files are written in bulk
    by :func:`rllib_diffusion.data.minari_arrow.write_arrow_episodes` (the same files as
    Minari's, without its per-episode overhead). The dataset is built under a hidden
    scratch directory inside the Minari root and renamed into place at the end, so an
    interrupted or failed write never leaves a half-written dataset under the id (Minari
    itself writes in place).

    Args:
        dataset: the episodes, or an ``EpisodeDataset`` (whose ``env_id`` and reference
            scores are used when the corresponding arguments are ``None``).
        dataset_id: Minari id ``namespace/name-v<N>``, e.g. ``"rllib-diffusion/hopper/medium-v0"``.
        env_id: gymnasium id of the env that produced the data. Its spaces are stored (the
            arrays are cast to the spaces' dtypes, e.g. float64 for MuJoCo observations);
            ``None`` stores unbounded float32 Boxes and no env spec.
        ref_min_score, ref_max_score: reference returns for normalised scores. They are
            written into the metadata as given (Minari's own handling would silently drop a
            lone ``ref_min_score`` and would roll out a random policy for a missing one).
        algorithm_name, author, description: metadata for humans.
        data_format: ``"arrow"`` (default), ``"parquet"`` or ``"hdf5"`` (needs h5py).
        overwrite: replace an existing dataset with this id (swapped in only after the new
            one is complete).
        extra_metadata: JSON-serialisable keys added to the dataset's ``metadata.json``
            before it is moved into place (e.g. the provenance of synthetic data:
            :func:`read_extra_metadata` reads them back).
        env_kwargs: JSON-serialisable keyword arguments of the env (``make_env(env_id,
            **env_kwargs)``; default: the ``EpisodeDataset``'s), stored as
            ``metadata.json``'s ``env_kwargs`` and loaded back by :func:`load_minari`,
            so that every command makes the env the data came from.

    Returns:
        The path of the dataset directory (the one holding ``data/``), as a string.

    Raises:
        DatasetError: existing id without ``overwrite``, malformed id, empty dataset, or
            arrays whose dims do not match ``env_id``'s spaces.

    Note:
        While writing, ``MINARI_DATASETS_PATH`` is temporarily redirected in this process;
        do not read other Minari datasets from other threads of this process meanwhile.
    """
    # Imported first, so that a missing minari is reported before any other problem.
    from minari.data_collector.episode_buffer import EpisodeBuffer

    episodes, env_id, ref_scores = _episodes_and_defaults(
        dataset, env_id, ref_min_score, ref_max_score
    )
    if env_kwargs is None and isinstance(dataset, EpisodeDataset):
        env_kwargs = dataset.env_kwargs
    _check_write_request(dataset_id, data_format, episodes)
    check_output_id(dataset_id, overwrite=overwrite)
    root = minari_root()
    final = root / dataset_id
    obs_space, act_space = _checked_spaces(dataset_id, env_id, episodes, env_kwargs)
    if env_kwargs:
        extra_metadata = {**(extra_metadata or {}), ENV_KWARGS_KEY: dict(env_kwargs)}
    buffers = _episode_buffers(EpisodeBuffer, episodes, obs_space, act_space)
    spaces = {"env": env_id, "observation_space": obs_space, "action_space": act_space}
    about = {"algorithm_name": algorithm_name, "author": author, "description": description}
    create_kwargs = {**spaces, **about, "data_format": data_format}
    _build_and_move(
        root, dataset_id, final, buffers, create_kwargs, ref_scores, extra_metadata, overwrite
    )
    logger.info("Wrote Minari dataset '%s' (%d episodes) to %s", dataset_id, len(episodes), final)
    return str(final)


def _episodes_and_defaults(
    dataset: EpisodeDataset | Sequence[Episode],
    env_id: str | None,
    ref_min_score: float | None,
    ref_max_score: float | None,
) -> tuple[list[Episode], str | None, tuple[float | None, float | None]]:
    """The episodes, env id and reference scores, an ``EpisodeDataset`` filling in ``None``s."""
    if isinstance(dataset, EpisodeDataset):
        episodes = list(dataset.episodes)
        env_id = env_id if env_id is not None else dataset.env_id
        ref_min_score = ref_min_score if ref_min_score is not None else dataset.ref_min_score
        ref_max_score = ref_max_score if ref_max_score is not None else dataset.ref_max_score
    else:
        episodes = list(dataset)
    return episodes, env_id, (ref_min_score, ref_max_score)


def _check_write_request(dataset_id: str, data_format: str, episodes: list[Episode]) -> None:
    """Refuse a malformed id, an unknown data format or an empty dataset."""
    _check_dataset_id(dataset_id)
    if data_format not in _DATA_FORMATS:
        raise DatasetError(
            f"Unknown Minari data_format '{data_format}'; use one of {list(_DATA_FORMATS)} "
            "('arrow' needs only pyarrow, 'hdf5' needs h5py)."
        )
    if not episodes:
        raise DatasetError(
            f"Nothing to write to '{dataset_id}': the dataset has no episodes. Collect or load "
            "episodes first."
        )


def _checked_spaces(
    dataset_id: str,
    env_id: str | None,
    episodes: list[Episode],
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces to store, checked against every episode's dims."""
    obs_space, act_space = _spaces_for(
        env_id, episodes[0].observations.shape[1], episodes[0].actions.shape[1], env_kwargs
    )
    for name, space, arrays in (
        ("observation", obs_space, [ep.observations for ep in episodes]),
        ("action", act_space, [ep.actions for ep in episodes]),
    ):
        dims = {a.shape[1] for a in arrays}
        if len(dims) > 1:
            raise DatasetError(
                f"Cannot write '{dataset_id}': episodes have different {name} dims "
                f"{sorted(dims)}; all episodes must come from one env. Run validate_dataset(...) "
                "to find the odd episodes and drop them."
            )
        if not isinstance(space, gym.spaces.Box) or dims != {_flatdim(space)}:
            raise DatasetError(
                f"Cannot write '{dataset_id}': episode {name} dims {sorted(dims)} do not match "
                f"the {name} space {space} of env '{env_id}'. Pass the env_id the data was "
                "collected on, or env_id=None."
            )
    return obs_space, act_space


def _episode_buffers(
    buffer_cls: Any, episodes: list[Episode], obs_space: gym.Space, act_space: gym.Space
) -> list[Any]:
    """One Minari ``EpisodeBuffer`` per episode, arrays cast and shaped to the spaces."""
    return [
        buffer_cls(
            observations=ep.observations.astype(obs_space.dtype, copy=False).reshape(
                (-1, *obs_space.shape)
            ),
            actions=ep.actions.astype(act_space.dtype, copy=False).reshape((-1, *act_space.shape)),
            rewards=ep.rewards,
            terminations=ep.terminations,
            truncations=ep.truncations,
        )
        for ep in episodes
    ]


def _build_and_move(
    root: Path,
    dataset_id: str,
    final: Path,
    buffers: list[Any],
    create_kwargs: dict[str, Any],
    ref_scores: tuple[float | None, float | None],
    extra_metadata: dict[str, Any] | None,
    overwrite: bool,
) -> None:
    """Build the dataset in a hidden scratch root, then rename it into place at ``final``."""
    root.mkdir(parents=True, exist_ok=True)
    # Same filesystem as the destination, so the final rename is atomic; hidden, so that
    # Minari's listings skip it even if a crash (SIGKILL) leaves it behind.
    scratch = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        _create_in(scratch, dataset_id, buffers, create_kwargs)
        _write_ref_scores(scratch / dataset_id / "data", *ref_scores)
        _write_extra_metadata(scratch / dataset_id / "data", extra_metadata)
        _move_into_place(scratch, dataset_id, final, overwrite=overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _create_in(
    scratch: Path, dataset_id: str, buffers: list[Any], create_kwargs: dict[str, Any]
) -> None:
    """Have Minari create the dataset under the ``scratch`` root and fill it with ``buffers``."""
    import minari

    with _minari_root_set_to(scratch), warnings.catch_warnings():
        # Minari warns for every unset optional field (permalink, email, eval_env).
        warnings.filterwarnings("ignore", message=".*is set to None", category=UserWarning)
        warnings.filterwarnings("ignore", message="env_spec is None", category=UserWarning)
        # Created empty, then filled: Minari's storages re-measure the whole directory
        # (`get_size`) after every episode, which makes one call with all buffers
        # quadratic (1000 episodes: ~80 s). Measuring once at the end is equivalent.
        mds = minari.create_dataset_from_buffers(dataset_id, [], **create_kwargs)
        if can_write_in_bulk(mds.storage, buffers, create_kwargs["data_format"]):
            # Minari's own files, written in one pass (2-4x faster for single-step episodes).
            write_arrow_episodes(mds.storage, buffers)
        else:
            _fill_storage(mds.storage, buffers)


def _fill_storage(storage: Any, buffers: list[Any]) -> None:
    """Append ``buffers`` to a Minari storage, measuring the dataset size and rewriting
    its ``metadata.json`` only once (Minari does both after every episode, which
    dominates writing many short episodes, e.g. single-step synthetic transitions)."""
    measure = storage.get_size
    pending: dict[str, Any] = {}
    # Instance attributes: no other storage is affected. The episodes' own metadata
    # files are still written one by one; the dataset's is read by nothing meanwhile.
    storage.get_size = lambda: 0.0
    storage.update_metadata = pending.update
    try:
        storage.update_episodes(buffers)
    finally:
        del storage.get_size
        del storage.update_metadata
    storage.update_metadata({**pending, "dataset_size": measure()})


def _write_ref_scores(data_dir: Path, ref_min: float | None, ref_max: float | None) -> None:
    if ref_min is None and ref_max is None:
        return
    meta_path = data_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if ref_min is not None:
        meta["ref_min_score"] = float(ref_min)
    if ref_max is not None:
        meta["ref_max_score"] = float(ref_max)
    meta_path.write_text(json.dumps(meta))


def _write_extra_metadata(data_dir: Path, extra: dict[str, Any] | None) -> None:
    if not extra:
        return
    meta_path = data_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    clash = sorted(set(extra) & set(meta))
    if clash:
        raise DatasetError(f"extra_metadata keys {clash} would replace Minari's own; rename them.")
    meta.update(extra)
    meta_path.write_text(json.dumps(meta))


def read_extra_metadata(dataset: str | os.PathLike[str], key: str) -> Any:
    """The value stored under ``key`` in a local Minari dataset's ``metadata.json`` (by id
    or path, as :func:`load_minari` resolves them), or None where there is none."""
    if isinstance(dataset, os.PathLike) or _looks_like_path(str(dataset)):
        data_dir = _data_dir_of(Path(os.path.expanduser(os.fspath(dataset))).resolve())
    else:
        _check_dataset_id(str(dataset))
        data_dir = minari_root() / str(dataset) / "data"
        if not data_dir.is_dir():
            raise _not_found_error(str(dataset), minari_root())
    try:
        return json.loads((data_dir / "metadata.json").read_text()).get(key)
    except (OSError, ValueError) as err:
        raise DatasetError(f"Cannot read {data_dir / 'metadata.json'}: {err}.") from err


def _move_into_place(scratch: Path, dataset_id: str, final: Path, *, overwrite: bool) -> None:
    built = scratch / dataset_id
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if not overwrite:  # appeared while we were writing
            raise DatasetError(
                f"Minari dataset '{dataset_id}' appeared at {final} while writing; add "
                "--overwrite (overwrite=True from Python) to replace it, or choose a new version."
            )
        # Swap: old → scratch, new → final; restore the old one if the second rename fails.
        old = scratch / ".old"
        os.rename(final, old)
        try:
            os.rename(built, final)
        except OSError:
            os.rename(old, final)
            raise
    else:
        os.rename(built, final)
    _copy_namespace_metadata(scratch)


def _copy_namespace_metadata(scratch: Path) -> None:
    """Give the real root the ``namespace_metadata.json`` files Minari made in the scratch root.

    Minari lists a namespace only where that file exists; never overwrite an existing one.
    """
    real_root = scratch.parent
    for meta in scratch.glob("**/namespace_metadata.json"):
        rel = meta.relative_to(scratch)
        target = real_root / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(meta, target)
