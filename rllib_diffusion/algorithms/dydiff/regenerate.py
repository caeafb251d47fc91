"""DyDiff as the rollout source of regenerated rollouts during offline training (the
registry's ``dydiff`` generator; driven by
:class:`rllib_diffusion.algorithms.regenerated_rollouts.Regenerator`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rllib_diffusion.algorithms.dydiff.dydiff import ALGORITHM_NAME
from rllib_diffusion.algorithms.dydiff.rollout import Policy, filter_rollouts, roll_out


class DyDiffRollouts:
    """A DyDiff model checkpoint (loaded once, on CPU) that rolls policies out.

    Args:
        checkpoint: a DyDiff model checkpoint (``rllib-diffusion dydiff``).
        module: a ``DyDiffModule`` to use instead of loading ``checkpoint`` (tests).
    """

    def __init__(self, checkpoint: str | None, module: Any = None) -> None:
        from rllib_diffusion.checkpoints import load_policy_module

        if module is None:
            module, _ = load_policy_module(checkpoint, expect_algorithms=(ALGORITHM_NAME,))
        self.module, self.checkpoint = module, checkpoint

    def fingerprint(self) -> str:
        """sha256 of the model's weights (names, dtypes, shapes, values): which model a
        saved pool was generated with."""
        from rllib_diffusion.algorithms.synthetic_pool import array_sha256

        state = self.module.state_dict()
        names = sorted(state)
        tensors = [state[k].detach().cpu().numpy() for k in names]
        return array_sha256(np.frombuffer("\0".join(names).encode(), np.uint8), *tensors)

    def generate(
        self, policy: Policy, start_obs: np.ndarray, knobs: Any, *, seed: int
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Roll ``policy`` out from ``start_obs`` (N, Do) with ``knobs``'s injection
        rounds and state mix, filter with its filter; the kept rollouts' valid steps as
        transition columns and ``{"rollouts": N, "kept": kept rollouts}``."""
        rollouts = roll_out(
            self.module,
            policy,
            start_obs,
            rounds=knobs.injection_rounds,
            mix=knobs.state_mix,
            seed=seed,
            batch_size=len(start_obs),
        )
        keep = filter_rollouts(
            rollouts,
            knobs.filter,
            fraction=knobs.keep_fraction,
            threshold=knobs.disagreement_threshold,
            temperature=knobs.softmax_temperature,
            rng=np.random.default_rng(seed),
        )
        return rollouts.transitions(keep), {"rollouts": len(rollouts), "kept": int(keep.sum())}
