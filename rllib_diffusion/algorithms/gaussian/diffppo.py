"""DiffPPO: RLlib PPO whose update batches are augmented with synthetic trajectory
segments from a diffusion model retrained on recent on-policy segments.

Each iteration (:meth:`DiffPPO.training_step`):

1. sample ``train_batch_size`` real env steps from the EnvRunners (as PPO);
2. cut the real episodes (chunks) into segments of ``segment_length`` H steps
   (:func:`~rllib_diffusion.algorithms.synthetic_segments.episode_segments`) and push
   them into a FIFO of the ``recent_segments`` most recent ones;
3. every ``generator_retrain_every`` iterations, train the segment generator
   (:class:`~rllib_diffusion.algorithms.synthetic_segments.SegmentGenerator`, warm-started)
   for ``generator_gradient_steps`` steps on the FIFO;
4. generate segments until they hold ``synthetic_ratio · real steps`` steps; score
   every generated (s_t, a_t) with the *pre-update* policy (:func:`behaviour_outputs`:
   ``action_dist_inputs`` and ``action_logp``); with ``synthetic_logp_filter`` cut each
   segment before its first action less likely than the least likely real action of
   the batch (:func:`plausible_prefixes`); turn each (prefix of a) segment into a
   :class:`SingleAgentEpisode`, terminated if its generated flag says so (whole segments
   only), else truncated (so GAE bootstraps from V of its last state);
5. ``learner_group.update(episodes=real + synthetic)``: PPO's own learner connectors
   compute values, GAE (normalised over the whole batch), value targets and the ratio
   π_θ(a|s)/π_old(a|s) for every row alike.

So a synthetic row's advantage is GAE(γ, λ) with the current critic over its segment,
and its ratio starts at exactly 1 in the first epoch (the behaviour log-prob is the
current policy's), moving only as θ moves, with PPO's clip on it (docs/algorithms.md,
"DiffPPO", states the estimator and its bias). ``synthetic_ratio`` 0 is plain PPO:
nothing is built, generated or trained and the batch is the real one. Steps 2-5 with
policy actions are shared with DPPO (:mod:`rllib_diffusion.algorithms.synthetic_ppo`);
the "generated" variant (:func:`plausible_prefixes`) is DiffPPO's own.

The generator, its optimizer and random state, and the FIFO are saved next to RLlib's
state in every checkpoint (``diffppo_generator.pt``) and restored with it, so
``--resume`` continues where the run stopped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.synthetic_ppo import (
    GENERATED_ACTIONS,
    GENERATOR_FILE,
    METRICS_NAMESPACE,
    SYNTHETIC_STEPS,
    SyntheticSegmentsConfigMixin,
    SyntheticSegmentsMixin,
    check_synthetic_knobs,
    cut_prefix,
)
from rllib_diffusion.knobs import set_provided

__all__ = ["GENERATOR_FILE", "METRICS_NAMESPACE", "SYNTHETIC_STEPS", "DiffPPO", "DiffPPOConfig"]

#: ``CheckpointMeta.algorithm`` of DiffPPO runs.
ALGORITHM_NAME = "DiffPPO"
#: Generation rounds of :meth:`DiffPPO._plausible_segments` (each ``wanted`` segments).
GENERATION_ROUNDS = 4


class DiffPPOConfig(SyntheticSegmentsConfigMixin, PPOConfig):
    """Config of :class:`DiffPPO`: RLlib's ``PPOConfig``, the synthetic-segment knobs
    (:class:`~rllib_diffusion.algorithms.synthetic_ppo.SyntheticSegmentsConfigMixin`,
    ``synthetic_ratio`` 1 and ``synthetic_actions`` "generated" here) and the one below."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffPPO)
        self.synthetic_ratio = 1.0
        self.synthetic_logp_filter = True
        self.synthetic_actions = GENERATED_ACTIONS

    @override(PPOConfig)
    def training(
        self,
        *,
        synthetic_logp_filter: bool | None = NotProvided,
        **kwargs: Any,
    ) -> DiffPPOConfig:
        """DiffPPO knobs (plus the synthetic-segment knobs and RLlib's PPO ``training()``
        args).

        Args:
            synthetic_logp_filter: cut each generated segment before its first action
                that is less likely under the pre-update policy than the least likely
                real action of the same batch (the cut prefix ends truncated; up to 4
                rounds of generation fill the quota). False keeps every generated step;
                outlying actions then make PPO's ratio, and the gradients, overflow.
                Applies to "generated" synthetic actions only.
        """
        super().training(**kwargs)
        set_provided(self, {"synthetic_logp_filter": synthetic_logp_filter})
        return self

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        check_diffppo_knobs(self)


def check_diffppo_knobs(config: Any) -> None:
    """One-line ConfigError naming the first DiffPPO knob out of its range."""
    check_synthetic_knobs(config)


def behaviour_outputs(module: Any, obs: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """The policy's ``action_dist_inputs`` on ``obs`` (B, Do) and the log-prob
    ``log π(actions | obs)`` (B,) under its exploration distribution: exactly what an
    EnvRunner stores for an action it sampled from this policy."""
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    device = next(iter(module.parameters())).device
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: torch.as_tensor(obs, device=device)})
        inputs = out[Columns.ACTION_DIST_INPUTS]
        dist = module.get_exploration_action_dist_cls().from_logits(inputs)
        logp = dist.logp(torch.as_tensor(actions, device=device))
    return {
        Columns.ACTION_DIST_INPUTS: inputs.cpu().numpy().astype(np.float32),
        Columns.ACTION_LOGP: logp.cpu().numpy().astype(np.float32),
    }


def real_logp_floor(episodes: list) -> float:
    """The lowest behaviour log-prob of a real action in ``episodes``."""
    return float(min(np.min(ep.get_extra_model_outputs(Columns.ACTION_LOGP)) for ep in episodes))


def plausible_prefixes(segs: dict, behaviour: dict, floor: float) -> list[dict[str, Any]]:
    """Each generated segment cut before its first action whose behaviour log-prob is
    below ``floor`` (segments whose first action is below it are dropped). A prefix is
    ``{obs (k+1, Do), actions (k, Da), rewards (k,), terminated, <behaviour columns>
    (k, ...)}``; it keeps the generated terminal flag only when it is the whole segment
    (a cut prefix ends truncated at s_k, so GAE bootstraps from V(s_k))."""
    n, h = segs["actions"].shape[:2]
    per_step = {k: v.reshape(n, h, *v.shape[1:]) for k, v in behaviour.items()}
    ok = np.asarray(per_step[Columns.ACTION_LOGP]) >= floor
    lengths = np.where(ok.all(axis=1), h, np.argmin(ok, axis=1))
    out = []
    for i, k in enumerate(lengths):
        if k == 0:
            continue
        prefix = {
            "obs": segs["obs"][i, : k + 1],
            "actions": segs["actions"][i, :k],
            "rewards": segs["rewards"][i, :k],
            "terminated": bool(segs["terminated"][i]) and k == h,
        }
        prefix.update({col: v[i, :k] for col, v in per_step.items()})
        out.append(prefix)
    return out


class DiffPPO(SyntheticSegmentsMixin, PPO):
    """RLlib PPO with synthetic-segment augmentation of every update batch (module doc)."""

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> DiffPPOConfig:
        return DiffPPOConfig()

    @override(PPO)
    def setup(self, config: Any) -> None:
        super().setup(config)
        self.setup_synthetic()

    @override(PPO)
    def training_step(self) -> None:
        from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
        from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

        episodes, runner_results = synchronous_parallel_sample(
            worker_set=self.env_runner_group,
            max_env_steps=self.config.total_train_batch_size,
            sample_timeout_s=self.config.sample_timeout_s,
            _uses_new_env_runners=True,
            _return_metrics=True,
        )
        if not episodes:
            return
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        learner_results = self.update_learners(
            episodes, self.config.minibatch_size, self.config.shuffle_batch_per_epoch
        )
        self.sync_runner_weights(learner_results)

    @override(SyntheticSegmentsMixin)
    def synthetic_prefixes(self, episodes: list, wanted: int) -> tuple[list[dict], int]:
        if self.uses_policy_actions():
            return super().synthetic_prefixes(episodes, wanted)
        floor = real_logp_floor(episodes) if self.config.synthetic_logp_filter else -np.inf
        return self._plausible_segments(wanted, floor)

    def _plausible_segments(self, wanted: int, floor: float) -> tuple[list, int]:
        """Plausible prefixes (:func:`plausible_prefixes`) of generated segments until they
        hold ``wanted`` steps (at most :data:`GENERATION_ROUNDS` rounds of
        ``ceil(wanted / H)`` segments, the last prefix cut to fit), and the number of
        steps generated."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        h = self.config.segment_length
        n = math.ceil(wanted / h)
        kept: list[dict[str, Any]] = []
        have = generated = 0
        for _ in range(GENERATION_ROUNDS):
            segs = self.layout.split(self.generator.generate(n))
            generated += n * h
            obs = segs["obs"][:, :-1].reshape(n * h, -1)
            actions = segs["actions"].reshape(n * h, -1)
            behaviour = self.on_first_learner(
                lambda lrn, obs=obs, actions=actions: behaviour_outputs(
                    lrn.module[DEFAULT_MODULE_ID], obs, actions
                )
            )
            for prefix in plausible_prefixes(segs, behaviour, floor):
                prefix = cut_prefix(prefix, wanted - have)
                kept.append(prefix)
                have += len(prefix["actions"])
                if have >= wanted:
                    return kept, generated
        return kept, generated
