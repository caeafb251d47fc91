"""Maps parquet rows of pre-computed (obs window, action chunk) samples to learner batches.

RLlib's default ``OfflinePreLearner`` turns every row into a one-step
``SingleAgentEpisode`` and runs the learner connector pipeline on it. Our rows are
already normalised, windowed training samples with nothing left for a connector to
do, so this pre-learner reshapes the columns straight into the flattened
``{module_id}/{column}`` batch the Learner's ray.data iterator expects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_prelearner import OfflinePreLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import columns as C

#: ``map_batches`` settings for the column-reshaping pre-learners: one light actor.
#: RLlib's default (two actors of one CPU each) takes both CPUs of a 2-core machine and
#: deadlocks the parquet read tasks that feed it.
LIGHT_PRELEARNER_KWARGS: dict[str, Any] = {"concurrency": 1, "num_cpus": 0.25}
#: Learner-side iteration over the materialised data: prefetch and a local shuffle, so
#: minibatches do not follow the parquet row order epoch after epoch.
SHUFFLED_ITER_KWARGS: dict[str, Any] = {"prefetch_batches": 2, "local_shuffle_buffer_size": 4096}


def seed_local_shuffle(config: Any) -> Any:
    """Seed the learner-side local shuffle of ``config``'s offline data with the run's seed
    (``config.seed``, from ``debugging(seed=...)``); returns ``config``.

    ray.data draws an unseeded local shuffle otherwise, so two runs with one ``--seed``
    saw different minibatches (with ray.data keeping block order, see
    :func:`rllib_diffusion.utils.runtime.configure_ray_data`, they now see the same ones).
    """
    kwargs = dict(config.iter_batches_kwargs)
    if "local_shuffle_buffer_size" in kwargs and config.seed is not None:
        kwargs["local_shuffle_seed"] = int(config.seed)
    config.iter_batches_kwargs = kwargs
    return config


class WindowPreLearner(OfflinePreLearner):
    """``map_batches`` callable: rows of ``obs`` (To*Do,) and ``actions`` (Ta*Da,)."""

    @override(OfflinePreLearner)
    def __init__(self, *, config, spaces=None, module_state=None, **kwargs: Any) -> None:
        # No module or connector is needed to reshape columns.
        self.config = config
        self.observation_space, self.action_space = spaces or (None, None)

    @override(OfflinePreLearner)
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = _stack(batch[C.OBS])
        actions = _stack(batch[C.ACTIONS])
        if self.action_space is not None:
            actions = actions.reshape((len(actions), *self.action_space.shape))
        return {
            f"{DEFAULT_MODULE_ID}/{Columns.OBS}": obs,
            f"{DEFAULT_MODULE_ID}/{Columns.ACTIONS}": actions,
        }


def _stack(column: Any) -> np.ndarray:
    """ray.data hands list columns over as object arrays of arrays; stack them."""
    arr = np.asarray(column)
    if arr.dtype == object:
        arr = np.stack([np.asarray(x, dtype=np.float32) for x in column])
    return arr.astype(np.float32, copy=False)
