"""DyDiff (Zhao et al. 2024): a diffusion model of trajectory segments conditioned on the
start state and the actions, used as a long-horizon dynamics model whose rollouts take
the learning policy's actions by iterated injection, filtered and mixed into offline RL.

``DyDiffConfig`` / ``DyDiff`` (algorithm), ``DyDiffModule`` (RLModule; learner: diffusion
BC's), :mod:`.rollout` (action injection, filters, terminations) and :func:`dydiff`
(the ``rllib-diffusion dydiff`` command).
"""

from rllib_diffusion.algorithms.dydiff.dydiff import ALGORITHM_NAME, DyDiff, DyDiffConfig
from rllib_diffusion.algorithms.dydiff.run import (
    DyDiffRolloutSettings,
    DyDiffSettings,
    dydiff,
    train_dydiff,
)

__all__ = [
    "ALGORITHM_NAME",
    "DyDiff",
    "DyDiffConfig",
    "DyDiffRolloutSettings",
    "DyDiffSettings",
    "dydiff",
    "train_dydiff",
]
