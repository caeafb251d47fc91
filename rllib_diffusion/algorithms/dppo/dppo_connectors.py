"""Learner-connector pieces of DPPO.

* :class:`RunningRewardScaling` (before GAE): divides chunk rewards by the running std
  of a discounted return and clips them, as the DPPO reference does for gym tasks.
* :class:`ExpandDenoisingSteps` (after GAE): turns each env-step row into K_ft rows,
  one per (env step, denoising step) pair, so RLlib's shuffled minibatches sample such
  pairs at random (DPPO.md, "PPO update").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

from rllib_diffusion import columns as C
from rllib_diffusion.modules.apis import DenoisingChainAPI

#: Columns of the expanded pair batch.
X_PREV = "x_prev"  # (M, Ta, Da) sample before the denoising step
X_NEXT = "x_next"  # (M, Ta, Da) sample after it
DENOISE_K = "denoise_k"  # (M,) index of the fine-tuned step, 0 = first
OLD_LOGP = "old_logp"  # (M,) log-prob at sampling time


class RunningRewardScaling(ConnectorV2):
    """Scale rewards by 1/std of the running discounted return (per episode stream), clip ±clip.

    The discounted return of an ongoing episode is carried across iterations by episode
    id; the running variance (Welford, all iterations) is part of the learner state and
    its checkpoints (``DPPOTorchLearner.get_state``).
    """

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        gamma: float = 0.99,
        clip: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.clip = gamma, clip
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self._returns: dict[str, float] = {}

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count > 1 else 1.0

    def _update(self, values: np.ndarray) -> None:
        n = len(values)
        if n == 0:
            return
        b_mean, b_var = float(values.mean()), float(values.var())
        delta = b_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += b_var * n + delta**2 * self.count * n / total
        self.count = total

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, **kwargs) -> Any:
        episodes = list(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        )
        for module_batch in batch.values():
            rewards = module_batch[Columns.REWARDS]
            r = rewards.detach().cpu().numpy() if torch.is_tensor(rewards) else np.asarray(rewards)
            r = r.astype(np.float64).reshape(-1)
            rets = np.empty_like(r)
            pos = 0
            for ep in episodes:
                n = len(ep)
                ret = self._returns.pop(ep.id_, 0.0)
                for j in range(pos, pos + n):
                    ret = ret * self.gamma + r[j]
                    rets[j] = ret
                if not ep.is_done:
                    self._returns[ep.id_] = ret
                pos += n
            self._update(rets[:pos])
            scaled = np.clip(r / (self.std + 1e-8), -self.clip, self.clip).astype(np.float32)
            module_batch[Columns.REWARDS] = (
                torch.as_tensor(scaled, device=rewards.device)
                if torch.is_tensor(rewards)
                else scaled
            )
        # Returns of episodes that never come back (e.g. runner restarts) must not pile up.
        if len(self._returns) > 10_000:
            self._returns.clear()
        return batch

    @override(ConnectorV2)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @override(ConnectorV2)
    def set_state(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = (
            int(state["count"]),
            float(state["mean"]),
            float(state["m2"]),
        )


class ExpandDenoisingSteps(ConnectorV2):
    """Rows of env steps → rows of PPO units: by default one per (env step, fine-tuned
    denoising step) pair; the module decides (``DenoisingChainAPI.ppo_units``).

    Needs ``chains`` (N, K_ft+1, Ta, Da) and ``chain_logp`` (N, K_ft) from the rollout, and
    GAE's advantages/value targets. Produces ``obs``, ``x_prev``, ``x_next``, ``denoise_k``,
    ``old_logp``, advantages, value targets and the loss mask, each with N·U rows (U units
    per env step; U = K_ft for DPPO). ``repeats`` goes to the module (ReinFlow's
    ``repeat_samples``: each whole chain ``repeats`` times).
    """

    def __init__(
        self, input_observation_space=None, input_action_space=None, *, repeats: int = 1, **kw
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kw)
        self.repeats = repeats

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, **kwargs) -> Any:
        for module_id, b in list(batch.items()):
            if C.CHAINS not in b:
                continue
            chains = torch.as_tensor(b[C.CHAINS])
            module = _chain_module(rl_module, module_id)
            x_prev, x_next, k, old_logp = module.ppo_units(
                chains, torch.as_tensor(b[C.CHAIN_LOGP]), self.repeats
            )
            units = x_prev.shape[0] // chains.shape[0]

            def rep(x: Any, units: int = units) -> torch.Tensor:
                return torch.as_tensor(x).repeat_interleave(units, dim=0)

            pairs = {
                Columns.OBS: rep(b[Columns.OBS]),
                X_PREV: x_prev,
                X_NEXT: x_next,
                DENOISE_K: k,
                OLD_LOGP: old_logp,
                Postprocessing.ADVANTAGES: rep(b[Postprocessing.ADVANTAGES]),
                Postprocessing.VALUE_TARGETS: rep(b[Postprocessing.VALUE_TARGETS]),
            }
            if Columns.LOSS_MASK in b:
                pairs[Columns.LOSS_MASK] = rep(b[Columns.LOSS_MASK])
            batch[module_id] = pairs
        return batch


def _chain_module(rl_module, module_id) -> DenoisingChainAPI:
    """The module that defines the units (per-transition ones without a module)."""
    if rl_module is None:
        return _PER_TRANSITION
    has_keys = hasattr(rl_module, "keys") and module_id in rl_module.keys()
    module = rl_module[module_id] if has_keys else rl_module
    return module.unwrapped() if hasattr(module, "unwrapped") else module


class _PerTransition:
    """The default units of :class:`DenoisingChainAPI` without a module (tests, tools)."""

    ppo_units = DenoisingChainAPI.ppo_units


_PER_TRANSITION = _PerTransition()
