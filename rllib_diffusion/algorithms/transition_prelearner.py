"""Pre-learner for offline RL on transition parquet (see ``data.offline.prepare_transition_data``).

The rows already are (s, a, r, s', terminated) samples; like ``WindowPreLearner`` this
maps the columns straight to the Learner batch instead of building one episode per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_prelearner import OfflinePreLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.window_prelearner import _stack

#: parquet column -> RLlib batch column
_COLUMNS = {
    C.OBS: Columns.OBS,
    C.ACTIONS: Columns.ACTIONS,
    C.REWARDS: Columns.REWARDS,
    C.NEXT_OBS: Columns.NEXT_OBS,
    C.TERMINATEDS: Columns.TERMINATEDS,
}


class TransitionPreLearner(OfflinePreLearner):
    @override(OfflinePreLearner)
    def __init__(self, *, config, spaces=None, module_state=None, **kwargs: Any) -> None:
        self.config = config

    @override(OfflinePreLearner)
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{DEFAULT_MODULE_ID}/{dst}": _stack(batch[src]) for src, dst in _COLUMNS.items()}
