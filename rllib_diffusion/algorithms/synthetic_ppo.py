"""Synthetic trajectory segments in on-policy (PPO-family) update batches, above the
families: DiffPPO (Gaussian PPO, ``gaussian/diffppo.py``) and DPPO (and its chain-PPO
siblings, ``dppo/dppo.py``) mix in the same knobs and the same per-iteration step.

Each iteration, between sampling and ``learner_group.update``
(:meth:`SyntheticSegmentsMixin.synthesize`):

1. the real episodes (chunks) are cut into segments of ``segment_length`` H steps
   (decisions) and pushed into a FIFO of the ``recent_segments`` most recent ones;
2. every ``generator_retrain_every`` iterations the generator is (re)trained
   (warm-started) for ``generator_gradient_steps`` steps on the FIFO: with policy
   actions a conditional DDPM dynamics model p(s′ − s, r, d | s, a) over the FIFO's
   one-step transitions (``synthetic_segments.segment_transitions``), with generated
   actions an unconditional DDPM of whole segments;
3. ``ceil(synthetic_ratio · real steps)`` synthetic steps are rolled out (topped up in
   up to 4 rounds where rollouts end terminated early): s_0 drawn from
   the FIFO's states, a_t from the *pre-update* policy exactly as an EnvRunner samples it
   (:func:`exploration_sample`: the module's ``forward_exploration`` and, where the module
   returns no actions, a sample of its action distribution; every output column is
   stored, e.g. DPPO's whole denoising chain and its per-step log-probs), the next state,
   reward and terminal flag from the model; a rollout stops terminated at its first
   generated terminal flag, else after H steps truncated. With generated actions
   (``synthetic_actions`` "generated") whole segments are generated instead and each
   step is scored by the pre-update policy: DiffPPO's log-prob filter
   (``gaussian/diffppo.py``), or for DPPO a denoising chain ending at each generated
   chunk drawn from the forward posterior (:meth:`generated_segments` with
   ``dppo.posterior_sample``);
4. each rollout becomes a :class:`SingleAgentEpisode` (id prefixed ``synthetic-``) and
   goes to the learner with the real ones: the family's own learner connectors compute
   values, GAE (bootstrapped from V(s_H) when truncated, 0 when terminated) and the
   ratio against the stored behaviour log-probs for every row alike.

For a chunked env (DPPO) a step is a decision: the model is trained on the EnvRunner's
decision-level transitions (stacked obs → stacked obs after the executed part of the
chunk, the chunk's summed reward, the chunk's terminal flag), which is exactly the MDP
the learner discounts per decision. ``synthetic_ratio`` 0 builds nothing and adds
nothing. The generator and FIFO travel with every checkpoint (:data:`GENERATOR_FILE`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.core.columns import Columns

from rllib_diffusion.algorithms.synthetic_segments import (
    SYNTHETIC_EPISODE_PREFIX,
    SegmentFIFO,
    SegmentGenerator,
    SegmentLayout,
    episode_segments,
    segment_transitions,
)
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.model_config import ConfigError

#: Metrics namespace of the augmentation's numbers in ``train()`` results (progress lines
#: carry them prefixed ``diffppo_``).
METRICS_NAMESPACE = "diffppo"
#: File of the generator + FIFO state inside a checkpoint directory.
GENERATOR_FILE = "diffppo_generator.pt"
#: Metric keys.
SYNTHETIC_STEPS = "synthetic_steps"
REAL_STEPS = "real_steps"
GENERATOR_LOSS = "generator_loss"
GENERATOR_SECONDS = "generator_seconds"
FIFO_SEGMENTS = "fifo_segments"
SYNTHETIC_REWARD_MEAN = "synthetic_reward_mean"
SYNTHETIC_KEPT = "synthetic_kept_fraction"
SYNTHETIC_SEGMENTS = "synthetic_segments"
REAL_REWARD_MEAN = "real_reward_mean"
#: Mean behaviour log-prob (``action_logp``; DPPO: summed over the K′ denoising steps)
#: of the real and of the synthetic steps: how likely π_old finds the synthetic actions.
REAL_LOGP_MEAN = "real_action_logp_mean"
SYNTHETIC_LOGP_MEAN = "synthetic_action_logp_mean"
UPDATE_MINIBATCH_SIZE = "update_minibatch_size"
#: ``synthetic_actions`` values: whole generated segments, actions included, or
#: dynamics-model rollouts with the policy's actions.
GENERATED_ACTIONS = "generated"
POLICY_ACTIONS = "policy"
#: Rounds of model rollouts per iteration (:meth:`SyntheticSegmentsMixin.policy_rollouts`).
ROLLOUT_ROUNDS = 4
#: The integer knobs (each >= 1).
INTEGER_KNOBS = (
    "segment_length",
    "recent_segments",
    "generator_retrain_every",
    "generator_gradient_steps",
    "generator_batch_size",
    "generator_width",
    "generator_depth",
    "generator_denoising_steps",
)


class SyntheticSegmentsConfigMixin:
    """The synthetic-segment knobs of an ``AlgorithmConfig`` (mixed in before
    ``PPOConfig``); ``synthetic_ratio`` defaults to 0 (off), ``synthetic_actions`` to
    "policy" (a host may change both defaults)."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.synthetic_ratio = 0.0
        self.synthetic_matched_updates = False
        self.synthetic_actions = POLICY_ACTIONS
        self.segment_length = 8
        self.recent_segments = 4096
        self.generator_retrain_every = 1
        self.generator_gradient_steps = 300
        self.generator_batch_size = 256
        self.generator_lr = 3e-4
        self.generator_width = 256
        self.generator_depth = 3
        self.generator_denoising_steps = 20

    def training(
        self,
        *,
        synthetic_ratio: float | None = NotProvided,
        synthetic_matched_updates: bool | None = NotProvided,
        synthetic_actions: Literal["generated", "policy"] | None = NotProvided,
        segment_length: int | None = NotProvided,
        recent_segments: int | None = NotProvided,
        generator_retrain_every: int | None = NotProvided,
        generator_gradient_steps: int | None = NotProvided,
        generator_batch_size: int | None = NotProvided,
        generator_lr: float | None = NotProvided,
        generator_width: int | None = NotProvided,
        generator_depth: int | None = NotProvided,
        generator_denoising_steps: int | None = NotProvided,
        **kwargs: Any,
    ):
        """Synthetic-segment knobs (rllib_diffusion/algorithms/synthetic_ppo.py).

        Args:
            synthetic_ratio: synthetic env steps (decisions, for chunked policies) added
                per real one in each update (1.0: half of every update batch is
                synthetic, SynthER's online 50/50 mix; 0: no generator, the plain
                algorithm).
            synthetic_matched_updates: scale each update's minibatch by (real + synthetic
                rows) / real rows, so that the augmented update takes as many minibatch
                steps as the real rows alone would (within one, from rounding the size
                to whole rows); false: the configured minibatch, so synthetic_ratio 1
                about doubles the steps.
            synthetic_actions: "policy": the generator is a dynamics model p(s′ − s, r, d |
                s, a) and segments are rolled out from FIFO states with actions sampled
                from the pre-update policy (exact behaviour log-probs; DPPO: its whole
                denoising chain); "generated": an unconditional model of whole segments,
                actions included, scored by the pre-update policy (DPPO: each generated
                chunk gets a denoising chain ending at it, drawn from the forward
                posterior, and the policy's per-step log-probs of that chain).
            segment_length: H, steps per synthetic segment (GAE runs inside a segment and
                bootstraps from V(s_H) unless it is generated terminal).
            recent_segments: capacity of the FIFO of recent real segments the generator
                trains on (about recent_segments·H / steps per iteration iterations).
            generator_retrain_every: (re)train the generator every this many iterations.
            generator_gradient_steps: gradient steps of each (warm-started) retraining.
            generator_batch_size: rows per generator gradient step.
            generator_lr: Adam learning rate of the generator.
            generator_width: hidden width of the generator's residual MLP denoiser.
            generator_depth: hidden layers of the generator's denoiser.
            generator_denoising_steps: DDPM steps K of the generator (training and
                sampling).
        """
        super().training(**kwargs)
        set_provided(
            self,
            dict(
                synthetic_ratio=synthetic_ratio,
                synthetic_matched_updates=synthetic_matched_updates,
                synthetic_actions=synthetic_actions,
                segment_length=segment_length,
                recent_segments=recent_segments,
                generator_retrain_every=generator_retrain_every,
                generator_gradient_steps=generator_gradient_steps,
                generator_batch_size=generator_batch_size,
                generator_lr=generator_lr,
                generator_width=generator_width,
                generator_depth=generator_depth,
                generator_denoising_steps=generator_denoising_steps,
            ),
        )
        return self


def check_synthetic_knobs(config: Any) -> None:
    """One-line ConfigError naming the first synthetic-segment knob out of its range."""
    ratio = config.synthetic_ratio
    if isinstance(ratio, bool) or not (isinstance(ratio, (int, float)) and ratio >= 0):
        raise ConfigError(
            f"synthetic_ratio={ratio} (--synthetic-ratio) must be a number >= 0 (0: off)."
        )
    if not isinstance(config.synthetic_matched_updates, bool):
        raise ConfigError(
            f"synthetic_matched_updates={config.synthetic_matched_updates!r} "
            "(--synthetic-matched-updates) must be true or false."
        )
    if config.synthetic_actions not in (GENERATED_ACTIONS, POLICY_ACTIONS):
        raise ConfigError(
            f"synthetic_actions={config.synthetic_actions!r} (--synthetic-actions); allowed: "
            f"{GENERATED_ACTIONS}, {POLICY_ACTIONS}."
        )
    if not config.generator_lr > 0:
        raise ConfigError(f"generator_lr={config.generator_lr} (--generator-lr) must be > 0.")
    for name in INTEGER_KNOBS:
        value = getattr(config, name)
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name}={value!r} ({flag}) must be an integer >= 1.")


def update_rows(episodes: list) -> int:
    """Rows RLlib's PPO learner connectors build of ``episodes`` (per unit of the
    family's rows per step): each chunk's steps plus the one loss-masked step
    ``AddOneTsToEpisodesAndTruncate`` appends to it for the bootstrap value."""
    return sum(len(ep) + 1 for ep in episodes)


def matched_minibatch_size(minibatch_size: int, real_rows: int, all_rows: int) -> int:
    """The minibatch size that cuts ``all_rows`` into as many minibatches as
    ``minibatch_size`` cuts ``real_rows``: scaled by ``all_rows / real_rows`` and
    rounded to whole rows. RLlib's cyclic iterator takes ``ceil(epochs · rows /
    minibatch)`` steps, so the counts agree up to that rounding (at most one step); the
    scaling also commutes with a learner's cap of the minibatch at the batch (DPPO's:
    both sides are capped alike) and with rows counted in any per-step unit (DPPO's
    denoising-step pairs)."""
    if real_rows < 1:
        return minibatch_size
    return max(1, round(minibatch_size * all_rows / real_rows))


# ------------------------------------------------------------------ episodes <-> arrays
def real_segments(episodes: list, layout: SegmentLayout) -> np.ndarray:
    """Flattened segments ``(N, D)`` of a list of sampled SingleAgentEpisodes."""
    rows = []
    for ep in episodes:
        if len(ep) < layout.horizon:
            continue  # too short for a segment (also: empty chunks)
        obs = np.asarray(ep.get_observations(), np.float32).reshape(len(ep) + 1, -1)
        actions = np.asarray(ep.get_actions(), np.float32).reshape(len(ep), -1)
        rewards = np.asarray(ep.get_rewards(), np.float32)
        parts = episode_segments(obs, actions, rewards, ep.is_terminated, layout.horizon)
        rows.append(layout.flatten(*parts))
    return np.concatenate(rows) if rows else np.zeros((0, layout.dim), np.float32)


def exploration_sample(module: Any, obs: np.ndarray) -> dict[str, np.ndarray]:
    """What an EnvRunner stores for actions it samples from ``module`` at flat ``obs``
    (B, Do): ``actions`` (B, Da flat) and every other output of ``forward_exploration``
    (e.g. ``action_dist_inputs``, or DPPO's ``chains`` (B, K_ft+1, Ta, Da) and
    ``chain_logp`` (B, K_ft)) plus ``action_logp`` (B,). Modules that return no actions
    get them sampled from their exploration distribution (RLlib's ``GetActions``)."""
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    device = next(iter(module.parameters())).device
    shape = module.observation_space.shape
    x = torch.as_tensor(np.asarray(obs, np.float32).reshape(len(obs), *shape), device=device)
    with torch.no_grad():
        out = dict(module.forward_exploration({Columns.OBS: x}))
        if Columns.ACTIONS not in out:
            dist = module.get_exploration_action_dist_cls().from_logits(
                out[Columns.ACTION_DIST_INPUTS]
            )
            out[Columns.ACTIONS] = dist.sample()
            out[Columns.ACTION_LOGP] = dist.logp(out[Columns.ACTIONS])
    actions = out.pop(Columns.ACTIONS)
    result = {"actions": actions.reshape(len(obs), -1).cpu().numpy().astype(np.float32)}
    result.update({k: v.cpu().numpy().astype(np.float32) for k, v in out.items()})
    return result


def cut_prefix(prefix: dict[str, Any], steps: int) -> dict[str, Any]:
    """``prefix`` shortened to at most ``steps`` steps (then not terminated)."""
    k = len(prefix["actions"])
    if k <= steps:
        return prefix
    out = {key: v[:steps] for key, v in prefix.items() if key not in ("obs", "terminated")}
    return {**out, "obs": prefix["obs"][: steps + 1], "terminated": False}


def rollout_prefixes(steps: list[dict], last_obs: np.ndarray, wanted: int) -> list[dict]:
    """Per-rollout dicts (``obs`` (k+1, Do), ``actions``, ``rewards``, behaviour columns
    (k, ...), ``terminated``) from H per-step batches: a rollout stops after its first
    step with ``done`` (terminated), else runs H steps (truncated); at most ``wanted``
    steps in total (the last rollout cut)."""
    cols = [k for k in steps[0] if k not in ("obs", "done")]
    obs = np.stack([st["obs"] for st in steps] + [last_obs], axis=1)
    done = np.stack([st["done"] for st in steps], axis=1)
    h = done.shape[1]
    out, have = [], 0
    for i in range(len(obs)):
        hit = np.flatnonzero(done[i])
        k = int(hit[0]) + 1 if len(hit) else h
        prefix = {c: np.stack([st[c][i] for st in steps[:k]]) for c in cols}
        prefix.update(obs=obs[i, : k + 1], terminated=bool(len(hit)))
        prefix = cut_prefix(prefix, wanted - have)
        out.append(prefix)
        have += len(prefix["actions"])
        if have >= wanted:
            break
    return out


def other_outputs(episode: Any, skip: set[str]) -> dict[str, Any]:
    """The extra model outputs of a real episode's last step not in ``skip`` (the
    synthetic rows' own columns; e.g. RLlib's ``weights_seq_no``: every row of a batch
    must have every column)."""
    keys = [k for k in episode.extra_model_outputs.keys() if k not in skip]
    return {k: episode.get_extra_model_outputs(k, -1) for k in keys}


#: Keys of a prefix that are not extra model outputs.
PREFIX_KEYS = ("obs", "actions", "rewards", "terminated")


def synthetic_episodes(
    prefixes: list[dict[str, Any]],
    spaces: tuple[Any, Any],
    constants: dict[str, Any] | None = None,
) -> list:
    """One SingleAgentEpisode (numpy, no lookback, id ``synthetic-…``) per rollout or
    generated segment: terminated if its flag says so, else truncated; its behaviour
    columns (every key but :data:`PREFIX_KEYS`) become the extra model outputs, and
    ``constants`` (e.g. the EnvRunner's ``weights_seq_no``) are repeated at every step."""
    import uuid

    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    obs_space, act_space = spaces
    out = []
    for p in prefixes:
        k = len(p["actions"])
        extra = {col: list(v) for col, v in p.items() if col not in PREFIX_KEYS}
        extra.update({key: [v] * k for key, v in (constants or {}).items()})
        ep = SingleAgentEpisode(
            id_=SYNTHETIC_EPISODE_PREFIX + uuid.uuid4().hex,
            observations=list(p["obs"].reshape(k + 1, *obs_space.shape)),
            actions=list(p["actions"].reshape(k, *act_space.shape)),
            rewards=[float(r) for r in p["rewards"]],
            extra_model_outputs=extra,
            terminated=p["terminated"],
            truncated=not p["terminated"],
            observation_space=obs_space,
            action_space=act_space,
            len_lookback_buffer=0,
        )
        out.append(ep.to_numpy())
    return out


def behaviour_logp_means(episodes: list, prefixes: list[dict[str, Any]]) -> dict[str, float]:
    """:data:`REAL_LOGP_MEAN` and :data:`SYNTHETIC_LOGP_MEAN` of the real ``episodes`` and
    the synthetic ``prefixes`` (empty where their steps carry no ``action_logp``)."""
    key = Columns.ACTION_LOGP
    if not all(key in p for p in prefixes):
        return {}
    real = [np.asarray(ep.get_extra_model_outputs(key), np.float64) for ep in episodes if len(ep)]
    synthetic = np.concatenate([np.asarray(p[key], np.float64) for p in prefixes])
    return {
        REAL_LOGP_MEAN: float(np.concatenate(real).mean()),
        SYNTHETIC_LOGP_MEAN: float(synthetic.mean()),
    }


# ------------------------------------------------------------------ algorithm mixin
class SyntheticSegmentsMixin:
    """Algorithm side (mixed in before ``PPO``): call :meth:`setup_synthetic` at the end
    of ``setup``, and per iteration :meth:`update_learners` on the real episodes (it calls
    :meth:`synthesize` and updates on both) and :meth:`sync_runner_weights`. Checkpoints
    carry :data:`GENERATOR_FILE` while ``synthetic_ratio`` > 0."""

    def uses_policy_actions(self) -> bool:
        """Whether synthetic actions come from the policy (dynamics-model rollouts)."""
        return self.config.synthetic_actions == POLICY_ACTIONS

    def setup_synthetic(self) -> None:
        from ray.rllib.core import DEFAULT_MODULE_ID

        c = self.config
        self.generator = self.fifo = self.layout = None
        if not c.synthetic_ratio > 0:
            return  # the plain algorithm: nothing built, nothing drawn
        self.spaces = self.on_first_learner(
            lambda lrn: (
                lrn.module[DEFAULT_MODULE_ID].observation_space,
                lrn.module[DEFAULT_MODULE_ID].action_space,
            )
        )
        obs_dim, act_dim = (int(np.prod(space.shape)) for space in self.spaces)
        self.layout = SegmentLayout(obs_dim, act_dim, c.segment_length)
        self.fifo = SegmentFIFO(c.recent_segments, self.layout.dim)
        policy = self.uses_policy_actions()
        self.generator = SegmentGenerator(
            obs_dim + 2 if policy else self.layout.dim,
            cond_dim=obs_dim + act_dim if policy else 0,
            width=c.generator_width,
            depth=c.generator_depth,
            denoising_steps=c.generator_denoising_steps,
            lr=c.generator_lr,
            batch_size=c.generator_batch_size,
            seed=int(c.seed or 0) + 7_919,
        )

    def on_first_learner(self, fn: Any) -> Any:
        """``fn(learner)`` on the first Learner (local or remote), its result."""
        return next(iter(self.learner_group.foreach_learner(fn))).get()

    def synthesize(self, episodes: list) -> list:
        """Steps 1-4 of the module doc: synthetic episodes with the pre-update policy's
        behaviour outputs (empty, and nothing done, when ``synthetic_ratio`` is 0)."""
        c, t0 = self.config, time.perf_counter()
        if self.generator is None:
            return []
        self.fifo.add(real_segments(episodes, self.layout))
        real_steps = sum(len(ep) for ep in episodes)
        rewards = np.concatenate([np.asarray(ep.get_rewards(), np.float64) for ep in episodes])
        stats = {REAL_STEPS: real_steps, FIFO_SEGMENTS: len(self.fifo), SYNTHETIC_STEPS: 0}
        stats[REAL_REWARD_MEAN] = float(rewards.mean())
        out: list = []
        if len(self.fifo):
            if self.iteration % c.generator_retrain_every == 0 or self.generator.normalizer is None:
                stats[GENERATOR_LOSS] = self._train_generator()
            prefixes, generated = self.synthetic_prefixes(
                episodes, math.ceil(c.synthetic_ratio * real_steps)
            )
            own = {col for p in prefixes[:1] for col in p if col not in PREFIX_KEYS}
            out = synthetic_episodes(prefixes, self.spaces, other_outputs(episodes[-1], own))
            steps = sum(len(p["actions"]) for p in prefixes)
            stats.update({SYNTHETIC_STEPS: steps, SYNTHETIC_SEGMENTS: len(prefixes)})
            stats[SYNTHETIC_KEPT] = steps / max(generated, 1)
            if prefixes:
                syn_rewards = np.concatenate([p["rewards"] for p in prefixes])
                stats[SYNTHETIC_REWARD_MEAN] = float(syn_rewards.mean())
                stats.update(behaviour_logp_means(episodes, prefixes))
        stats[GENERATOR_SECONDS] = time.perf_counter() - t0
        for key, value in stats.items():
            self.metrics.log_value((METRICS_NAMESPACE, key), value, window=1)
        return out

    def update_minibatch_size(self, minibatch_size: int, episodes: list, synthetic: list) -> int:
        """The minibatch of an update on ``episodes`` (real) plus ``synthetic``: the
        configured ``minibatch_size``, or with ``synthetic_matched_updates`` the size
        that gives the real rows' number of minibatch steps
        (:func:`matched_minibatch_size`; logged as :data:`UPDATE_MINIBATCH_SIZE`)."""
        if not (synthetic and self.config.synthetic_matched_updates):
            return minibatch_size
        real = update_rows(episodes)
        size = matched_minibatch_size(minibatch_size, real, real + update_rows(synthetic))
        self.metrics.log_value((METRICS_NAMESPACE, UPDATE_MINIBATCH_SIZE), size, window=1)
        return size

    def update_learners(self, episodes: list, minibatch_size: int, shuffle: bool) -> list:
        """The PPO update of one iteration, as RLlib's ``PPO.training_step`` runs it, on the
        real episodes plus :meth:`synthesize`'s: ``num_epochs`` epochs of minibatches of
        ``minibatch_size`` rows (:meth:`update_minibatch_size`: scaled to the real rows'
        number of steps with ``synthetic_matched_updates``); the learners' results are
        aggregated and returned."""
        from ray.rllib.core import ALL_MODULES
        from ray.rllib.utils.metrics import (
            ENV_RUNNER_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_MODULE_STEPS_TRAINED_LIFETIME,
        )

        synthetic = self.synthesize(episodes)  # [] unless synthetic_ratio > 0
        learner_results = self.learner_group.update(
            episodes=list(episodes) + synthetic if synthetic else episodes,
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                ),
                NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                    (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0
                ),
            },
            num_epochs=self.config.num_epochs,
            minibatch_size=self.update_minibatch_size(minibatch_size, episodes, synthetic),
            shuffle_batch_per_epoch=shuffle,
        )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        return learner_results

    def sync_runner_weights(self, learner_results: list) -> None:
        """The updated modules' inference-only weights to every EnvRunner."""
        from ray.rllib.core import ALL_MODULES

        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group,
            policies=set(learner_results[0].keys()) - {ALL_MODULES},
            inference_only=True,
        )

    def synthetic_prefixes(self, episodes: list, wanted: int) -> tuple[list[dict], int]:
        """Rollout dicts holding ``wanted`` steps, and the number of steps generated."""
        prefixes = self.policy_rollouts(wanted)
        return prefixes, sum(len(p["actions"]) for p in prefixes)

    def generated_segments(self, wanted: int, behaviour_fn: Any) -> tuple[list[dict], int]:
        """Whole generated segments holding ``wanted`` steps: ``ceil(wanted / H)`` of them,
        every step kept (the last segment cut to fit, then truncated), and the number of
        steps generated. Each step's action and behaviour columns are
        ``behaviour_fn(module, obs (N, Do), actions (N, Da), seed)`` of the first
        Learner's pre-update module, in :func:`exploration_sample`'s format (``actions``
        replaces the generated ones, e.g. clamped to the action space); ``seed`` is drawn
        from the generator's RNG (checkpointed), so runs repeat."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        h = self.config.segment_length
        n = math.ceil(wanted / h)
        segs = self.layout.split(self.generator.generate(n))
        obs = segs["obs"][:, :-1].reshape(n * h, -1)
        actions = segs["actions"].reshape(n * h, -1)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator.rng))
        behaviour = self.on_first_learner(
            lambda lrn: behaviour_fn(lrn.module[DEFAULT_MODULE_ID], obs, actions, seed)
        )
        per_step = {k: v.reshape(n, h, *v.shape[1:]) for k, v in behaviour.items()}
        out, have = [], 0
        for i in range(n):
            prefix = {"obs": segs["obs"][i], "rewards": segs["rewards"][i]}
            prefix.update({col: v[i] for col, v in per_step.items()})
            prefix = cut_prefix(
                {**prefix, "terminated": bool(segs["terminated"][i])}, wanted - have
            )
            out.append(prefix)
            have += len(prefix["actions"])
        return out, n * h

    def _train_generator(self) -> float:
        """(Re)train the generator on the FIFO: the one-step transitions of its segments
        (:func:`segment_transitions`), or whole segments (generated actions)."""
        steps = self.config.generator_gradient_steps
        if self.uses_policy_actions():
            x, cond = segment_transitions(self.layout.split(self.fifo.data))
            return self.generator.train(x, steps, cond)
        return self.generator.train(self.fifo.data, steps)

    def policy_rollouts(self, wanted: int, module_fn: Any = None) -> list[dict[str, Any]]:
        """Model rollouts holding ``wanted`` steps in total (the last one cut): rounds of
        ``ceil(missing / H)`` rollouts (:meth:`_rollout_round`) until they do, at most
        :data:`ROLLOUT_ROUNDS` rounds (rollouts that end terminated early leave steps
        missing). ``module_fn(learner)`` picks the acting module (default: the
        Learner's pre-update policy)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        module_fn = module_fn or (lambda lrn: lrn.module[DEFAULT_MODULE_ID])
        out: list[dict[str, Any]] = []
        have = 0
        for _ in range(ROLLOUT_ROUNDS):
            if have >= wanted:
                break
            n = math.ceil((wanted - have) / self.config.segment_length)
            steps, last = self._rollout_round(n, module_fn)
            new = rollout_prefixes(steps, last, wanted - have)
            out += new
            have += sum(len(p["actions"]) for p in new)
        return out

    def _rollout_round(self, n: int, module_fn: Any) -> tuple[list[dict], np.ndarray]:
        """``n`` rollouts of H steps: s_0 drawn uniformly from the FIFO's states
        (generator RNG), a_t and its behaviour columns from :func:`exploration_sample` of
        ``module_fn(learner)``, (s_{t+1} − s_t, r_t, d_t) from the dynamics model. Returns
        the per-step batches (``obs``, ``actions``, behaviour columns, ``rewards``,
        ``done``) and s_H."""
        h, do = self.config.segment_length, self.layout.obs_dim
        states = self.layout.split(self.fifo.data)["obs"][:, :-1].reshape(-1, do)
        s = states[torch.randint(0, len(states), (n,), generator=self.generator.rng).numpy()]
        steps: list[dict[str, np.ndarray]] = []
        for _ in range(h):
            act = self.on_first_learner(lambda lrn, s=s: exploration_sample(module_fn(lrn), s))
            x = self.generator.generate(n, np.concatenate([s, act["actions"]], axis=1))
            steps.append({"obs": s, **act, "rewards": x[:, do], "done": x[:, do + 1] >= 0.5})
            s = (s + x[:, :do]).astype(np.float32)
        return steps, s

    # ------------------------------------------------------------- checkpoints
    def generator_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "fifo": self.fifo.get_state()}

    def set_generator_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.fifo.set_state(state["fifo"])

    def save_to_path(self, path=None, **kwargs) -> str:
        path = super().save_to_path(path, **kwargs)
        if self.generator is not None:
            target = Path(path) / GENERATOR_FILE
            tmp = target.with_name(target.name + ".tmp")
            torch.save(self.generator_state(), tmp)
            tmp.replace(target)  # atomic (the run loop also saves into a temp dir first)
        return path

    def restore_from_path(self, path, **kwargs) -> None:
        from rllib_diffusion.checkpoints import CheckpointError

        super().restore_from_path(path, **kwargs)
        if kwargs.get("component") or self.generator is None:
            return
        file = Path(path) / GENERATOR_FILE
        if not file.is_file():
            raise CheckpointError(
                f"'{path}' has no {GENERATOR_FILE}: it was saved without synthetic segments "
                "(synthetic_ratio 0) or is incomplete; resume with --synthetic-ratio 0 or "
                "start a new --out."
            )
        self.set_generator_state(torch.load(file, weights_only=False))
