"""Learner-connector pieces of DPPO.

* :class:`RunningRewardScaling` (first, on the episodes): divides chunk rewards by the
  running std of a discounted return and clips them, as the DPPO reference does for gym
  tasks.
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
from rllib_diffusion.algorithms.synthetic_segments import is_synthetic_episode
from rllib_diffusion.modules.apis import DenoisingChainAPI

#: Columns of the expanded pair batch.
X_PREV = "x_prev"  # (M, Ta, Da) sample before the denoising step
X_NEXT = "x_next"  # (M, Ta, Da) sample after it
DENOISE_K = "denoise_k"  # (M,) index of the fine-tuned step, 0 = first
OLD_LOGP = "old_logp"  # (M,) log-prob at sampling time


class RunningRewardScaling(ConnectorV2):
    """Divide rewards by the running std of a discounted return and clip them (DPPO's
    ``RunningRewardScaler``).

    ``R_t = r_t + γ·R_{t−1}`` (``R`` restarts at each episode's start), then
    ``r̃_t = clip(r_t / sqrt(var(R) + 1e-8), ±clip)`` where ``var`` is a running variance
    over every ``R_t`` seen so far (``RunningMeanStd``: prior count 1e-4, mean 0, var 1;
    ``var = M2 / (count − 1)``), updated with the whole iteration before it scales it.

    It runs first in the learner pipeline, on the episodes themselves (it rewrites their
    rewards), so it sees each chunk before RLlib's ``AddOneTsToEpisodesAndTruncate``
    renames it, marks it truncated and appends a zero-reward bootstrap step: the return
    of an ongoing episode is carried to its next chunk by episode id, as the reference
    carries it across iterations per env, and the bootstrap step never enters the
    statistics. Synthetic episodes (``synthetic-…`` ids, DPPO's ``synthetic_ratio``) are
    scaled by the same std but do not enter the statistics. The statistics are learner
    state (``DPPOTorchLearner.get_state``); the carried returns are not (a resumed run
    restarts them). With several learners each keeps its own statistics over the
    episodes it is given.
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
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0
        self._returns: dict[str, float] = {}

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var + 1e-8))

    def _update(self, values: np.ndarray) -> None:
        """Chan et al.'s parallel update of the running mean and variance."""
        n = len(values)
        if n == 0:
            return
        b_mean, b_var = float(values.mean()), float(values.var())
        delta = b_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / (total - 1)
        self.count = total

    def _episode_returns(self, episode) -> np.ndarray:
        """``R_t`` over the chunk's steps, starting from the return carried from the
        episode's previous chunk; carries the last one on if the episode goes on."""
        rewards = np.asarray(episode.get_rewards(), dtype=np.float64).reshape(-1)
        rets = np.empty_like(rewards)
        ret = self._returns.pop(episode.id_, 0.0)
        for j, r in enumerate(rewards):
            ret = ret * self.gamma + r
            rets[j] = ret
        if not episode.is_done:
            self._returns[episode.id_] = ret
        return rets

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, **kwargs) -> Any:
        episodes = list(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        )
        # Synthetic episodes (model rollouts) are scaled alike but stay out of the
        # statistics: the scale is that of the real returns.
        returns = [self._episode_returns(ep) for ep in episodes if not is_synthetic_episode(ep)]
        if returns:
            self._update(np.concatenate(returns))
        for ep in episodes:
            rewards = np.asarray(ep.get_rewards(), dtype=np.float64).reshape(-1)
            scaled = np.clip(rewards / self.std, -self.clip, self.clip).astype(np.float32)
            if ep.is_numpy:
                # Episodes from remote EnvRunners arrive with read-only arrays.
                ep.rewards.data = np.array(ep.rewards.data)
            ep.set_rewards(new_data=scaled if ep.is_numpy else scaled.tolist())
        # Returns of episodes that never come back (e.g. runner restarts) must not pile up.
        if len(self._returns) > 10_000:
            self._returns.clear()
        return batch

    @override(ConnectorV2)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    @override(ConnectorV2)
    def set_state(self, state: dict[str, Any]) -> None:
        """Also reads the earlier layout (population ``m2`` with a zero prior count)."""
        self.count, self.mean = float(state["count"]), float(state["mean"])
        if "var" in state:
            self.var = float(state["var"])
        else:
            self.var = float(state["m2"]) / (self.count - 1) if self.count > 1 else 1.0


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
