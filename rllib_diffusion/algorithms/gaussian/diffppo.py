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
nothing is generated or trained and the batch is the real one.

The generator, its optimizer and random state, and the FIFO are saved next to RLlib's
state in every checkpoint (``diffppo_generator.pt``) and restored with it, so
``--resume`` continues where the run stopped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.synthetic_segments import (
    SegmentFIFO,
    SegmentGenerator,
    SegmentLayout,
    episode_segments,
    segment_transitions,
)
from rllib_diffusion.modules.model_config import ConfigError

#: ``CheckpointMeta.algorithm`` of DiffPPO runs.
ALGORITHM_NAME = "DiffPPO"
#: Metrics namespace of DiffPPO's own numbers in ``train()`` results.
METRICS_NAMESPACE = "diffppo"
#: File of the generator + FIFO state inside a checkpoint directory.
GENERATOR_FILE = "diffppo_generator.pt"
#: Metric keys (the progress line carries them under the same names).
SYNTHETIC_STEPS = "synthetic_steps"
REAL_STEPS = "real_steps"
GENERATOR_LOSS = "generator_loss"
GENERATOR_SECONDS = "generator_seconds"
FIFO_SEGMENTS = "fifo_segments"
SYNTHETIC_REWARD_MEAN = "synthetic_reward_mean"
SYNTHETIC_KEPT = "synthetic_kept_fraction"
SYNTHETIC_SEGMENTS = "synthetic_segments"
#: ``synthetic_actions`` values.
GENERATED_ACTIONS = "generated"
POLICY_ACTIONS = "policy"
#: Generation rounds of :meth:`DiffPPO._plausible_segments` (each ``wanted`` segments).
GENERATION_ROUNDS = 4
REAL_REWARD_MEAN = "real_reward_mean"


class DiffPPOConfig(PPOConfig):
    """Config of :class:`DiffPPO`: RLlib's ``PPOConfig`` plus the knobs below."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffPPO)
        self.synthetic_ratio = 1.0
        self.segment_length = 8
        self.recent_segments = 4096
        self.generator_retrain_every = 1
        self.generator_gradient_steps = 300
        self.generator_batch_size = 256
        self.generator_lr = 3e-4
        self.generator_width = 256
        self.generator_depth = 3
        self.generator_denoising_steps = 20
        self.synthetic_logp_filter = True
        self.synthetic_actions = GENERATED_ACTIONS

    @override(PPOConfig)
    def training(
        self,
        *,
        synthetic_ratio: float | None = NotProvided,
        segment_length: int | None = NotProvided,
        recent_segments: int | None = NotProvided,
        generator_retrain_every: int | None = NotProvided,
        generator_gradient_steps: int | None = NotProvided,
        generator_batch_size: int | None = NotProvided,
        generator_lr: float | None = NotProvided,
        generator_width: int | None = NotProvided,
        generator_depth: int | None = NotProvided,
        generator_denoising_steps: int | None = NotProvided,
        synthetic_logp_filter: bool | None = NotProvided,
        synthetic_actions: Literal["generated", "policy"] | None = NotProvided,
        **kwargs: Any,
    ) -> DiffPPOConfig:
        """DiffPPO knobs (plus RLlib's PPO ``training()`` args).

        Args:
            synthetic_ratio: synthetic env steps added per real env step in each PPO
                update (1.0: half of every update batch is synthetic, SynthER's online
                50/50 mix; 0: plain PPO, no generator).
            segment_length: H, env steps per synthetic segment (GAE runs inside a
                segment and bootstraps from V(s_H) unless it is generated terminal).
            recent_segments: capacity of the FIFO of recent real segments the
                generator trains on (about recent_segments·H / train_batch_size
                iterations of data).
            generator_retrain_every: (re)train the generator every this many iterations.
            generator_gradient_steps: gradient steps of each (warm-started) retraining.
            generator_batch_size: segments per generator gradient step.
            generator_lr: Adam learning rate of the generator.
            generator_width: hidden width of the generator's residual MLP denoiser.
            generator_depth: hidden layers of the generator's denoiser.
            generator_denoising_steps: DDPM steps K of the generator (training and
                sampling).
            synthetic_logp_filter: cut each generated segment before its first action
                that is less likely under the pre-update policy than the least likely
                real action of the same batch (the cut prefix ends truncated; up to 4
                rounds of generation fill the quota). False keeps every generated step;
                outlying actions then make PPO's ratio, and the gradients, overflow.
            synthetic_actions: "generated": the generator is an unconditional model of
                whole segments, actions included (the issue's design); "policy": it is
                a dynamics model p(s′ − s, r, d | s, a) and segments are rolled out from
                FIFO states with actions sampled from the pre-update policy (exact
                behaviour log-probs; no log-prob filter needed).
        """
        super().training(**kwargs)
        for name, value in (
            ("synthetic_ratio", synthetic_ratio),
            ("segment_length", segment_length),
            ("recent_segments", recent_segments),
            ("generator_retrain_every", generator_retrain_every),
            ("generator_gradient_steps", generator_gradient_steps),
            ("generator_batch_size", generator_batch_size),
            ("generator_lr", generator_lr),
            ("generator_width", generator_width),
            ("generator_depth", generator_depth),
            ("generator_denoising_steps", generator_denoising_steps),
            ("synthetic_logp_filter", synthetic_logp_filter),
            ("synthetic_actions", synthetic_actions),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        check_diffppo_knobs(self)


def check_diffppo_knobs(config: Any) -> None:
    """One-line ConfigError naming the first DiffPPO knob out of its range."""
    if not (isinstance(config.synthetic_ratio, (int, float)) and config.synthetic_ratio >= 0):
        raise ConfigError(
            f"synthetic_ratio={config.synthetic_ratio} (--synthetic-ratio) must be a number "
            ">= 0 (0: plain PPO)."
        )
    if not config.generator_lr > 0:
        raise ConfigError(f"generator_lr={config.generator_lr} (--generator-lr) must be > 0.")
    for name in (
        "segment_length",
        "recent_segments",
        "generator_retrain_every",
        "generator_gradient_steps",
        "generator_batch_size",
        "generator_width",
        "generator_depth",
        "generator_denoising_steps",
    ):
        value = getattr(config, name)
        if not (isinstance(value, int) and value >= 1):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name}={value!r} ({flag}) must be an integer >= 1.")
    if config.synthetic_actions not in (GENERATED_ACTIONS, POLICY_ACTIONS):
        raise ConfigError(
            f"synthetic_actions={config.synthetic_actions!r} (--synthetic-actions); allowed: "
            f"{GENERATED_ACTIONS}, {POLICY_ACTIONS}."
        )


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


def cut_prefix(prefix: dict[str, Any], steps: int) -> dict[str, Any]:
    """``prefix`` shortened to at most ``steps`` steps (then not terminated)."""
    k = len(prefix["actions"])
    if k <= steps:
        return prefix
    out = {key: v[:steps] for key, v in prefix.items() if key not in ("obs", "terminated")}
    return {**out, "obs": prefix["obs"][: steps + 1], "terminated": False}


def policy_sample(module: Any, obs: np.ndarray) -> dict[str, np.ndarray]:
    """Actions sampled from the policy's exploration distribution at ``obs`` (B, Do) with
    their ``action_dist_inputs`` and ``action_logp`` (as an EnvRunner stores them)."""
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    device = next(iter(module.parameters())).device
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: torch.as_tensor(obs, device=device)})
        inputs = out[Columns.ACTION_DIST_INPUTS]
        dist = module.get_exploration_action_dist_cls().from_logits(inputs)
        actions = dist.sample()
        logp = dist.logp(actions)
    return {
        "actions": actions.cpu().numpy().astype(np.float32),
        Columns.ACTION_DIST_INPUTS: inputs.cpu().numpy().astype(np.float32),
        Columns.ACTION_LOGP: logp.cpu().numpy().astype(np.float32),
    }


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


def other_outputs(episode: Any) -> dict[str, Any]:
    """The extra model outputs of a real episode's last step other than the behaviour
    ones (RLlib's ``weights_seq_no``: every row of a batch must have every column)."""
    skip = {Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS}
    keys = [k for k in episode.extra_model_outputs.keys() if k not in skip]
    return {k: episode.get_extra_model_outputs(k, -1) for k in keys}


def synthetic_episodes(
    prefixes: list[dict[str, Any]],
    spaces: tuple[Any, Any],
    constants: dict[str, Any] | None = None,
) -> list:
    """One SingleAgentEpisode (numpy, no lookback) per generated segment (prefix) of
    :func:`plausible_prefixes`: terminated if its flag says so, else truncated; its
    behaviour columns become the extra model outputs, and ``constants`` (e.g. the
    EnvRunner's ``weights_seq_no``) are repeated at every step."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    obs_space, act_space = spaces
    behaviour_cols = (Columns.ACTION_DIST_INPUTS, Columns.ACTION_LOGP)
    out = []
    for p in prefixes:
        k = len(p["actions"])
        extra = {col: list(p[col]) for col in behaviour_cols}
        extra.update({key: [v] * k for key, v in (constants or {}).items()})
        ep = SingleAgentEpisode(
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


class DiffPPO(PPO):
    """RLlib PPO with synthetic-segment augmentation of every update batch (module doc)."""

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> DiffPPOConfig:
        return DiffPPOConfig()

    @override(PPO)
    def setup(self, config: Any) -> None:
        super().setup(config)
        c = self.config
        module = self._learner_module_spaces()
        obs_dim = int(np.prod(module[0].shape))
        act_dim = int(np.prod(module[1].shape))
        self.spaces = module
        self.layout = SegmentLayout(obs_dim, act_dim, c.segment_length)
        self.fifo = SegmentFIFO(c.recent_segments, self.layout.dim)
        policy_actions = c.synthetic_actions == POLICY_ACTIONS
        self.generator = SegmentGenerator(
            obs_dim + 2 if policy_actions else self.layout.dim,
            cond_dim=obs_dim + act_dim if policy_actions else 0,
            width=c.generator_width,
            depth=c.generator_depth,
            denoising_steps=c.generator_denoising_steps,
            lr=c.generator_lr,
            batch_size=c.generator_batch_size,
            seed=int(c.seed or 0) + 7_919,
        )

    def _learner_module_spaces(self) -> tuple[Any, Any]:
        from ray.rllib.core import DEFAULT_MODULE_ID

        return self.on_first_learner(
            lambda lrn: (
                lrn.module[DEFAULT_MODULE_ID].observation_space,
                lrn.module[DEFAULT_MODULE_ID].action_space,
            )
        )

    def on_first_learner(self, fn: Any) -> Any:
        """``fn(learner)`` on the first Learner (local or remote), its result."""
        return next(iter(self.learner_group.foreach_learner(fn))).get()

    @override(PPO)
    def training_step(self) -> None:
        from ray.rllib.core import ALL_MODULES
        from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
        from ray.rllib.utils.metrics import (
            ENV_RUNNER_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_MODULE_STEPS_TRAINED_LIFETIME,
        )

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
        synthetic = self.synthesize(episodes)
        learner_results = self.learner_group.update(
            episodes=list(episodes) + synthetic,
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                ),
                NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                    (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0
                ),
            },
            num_epochs=self.config.num_epochs,
            minibatch_size=self.config.minibatch_size,
            shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
        )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group,
            policies=set(learner_results[0].keys()) - {ALL_MODULES},
            inference_only=True,
        )

    def synthesize(self, episodes: list) -> list:
        """Steps 2-4 of the module doc: FIFO, (re)training, generated episodes with the
        pre-update policy's behaviour outputs (empty when ``synthetic_ratio`` is 0)."""
        c, t0 = self.config, time.perf_counter()
        self.fifo.add(real_segments(episodes, self.layout))
        real_steps = sum(len(ep) for ep in episodes)
        rewards = np.concatenate([np.asarray(ep.get_rewards(), np.float64) for ep in episodes])
        stats = {REAL_STEPS: real_steps, FIFO_SEGMENTS: len(self.fifo), SYNTHETIC_STEPS: 0}
        stats[REAL_REWARD_MEAN] = float(rewards.mean())
        out: list = []
        if c.synthetic_ratio > 0 and len(self.fifo):
            if self.iteration % c.generator_retrain_every == 0 or self.generator.normalizer is None:
                stats[GENERATOR_LOSS] = self._train_generator()
            wanted = math.ceil(c.synthetic_ratio * real_steps)
            if c.synthetic_actions == POLICY_ACTIONS:
                prefixes = self._policy_rollouts(wanted)
                generated = sum(len(p["actions"]) for p in prefixes)
            else:
                floor = real_logp_floor(episodes) if c.synthetic_logp_filter else -np.inf
                prefixes, generated = self._plausible_segments(wanted, floor)
            out = synthetic_episodes(prefixes, self.spaces, other_outputs(episodes[-1]))
            steps = sum(len(p["actions"]) for p in prefixes)
            stats[SYNTHETIC_STEPS] = steps
            stats[SYNTHETIC_SEGMENTS] = len(prefixes)
            stats[SYNTHETIC_KEPT] = steps / max(generated, 1)
            if prefixes:
                syn_rewards = np.concatenate([p["rewards"] for p in prefixes])
                stats[SYNTHETIC_REWARD_MEAN] = float(syn_rewards.mean())
        stats[GENERATOR_SECONDS] = time.perf_counter() - t0
        for key, value in stats.items():
            self.metrics.log_value((METRICS_NAMESPACE, key), value, window=1)
        return out

    def _train_generator(self) -> float:
        """(Re)train the generator on the FIFO: whole segments, or (policy actions) the
        one-step transitions of the segments (:func:`segment_transitions`)."""
        steps = self.config.generator_gradient_steps
        if self.config.synthetic_actions == POLICY_ACTIONS:
            x, cond = segment_transitions(self.layout.split(self.fifo.data))
            return self.generator.train(x, steps, cond)
        return self.generator.train(self.fifo.data, steps)

    def _policy_rollouts(self, wanted: int) -> list[dict[str, Any]]:
        """``ceil(wanted / H)`` model rollouts of H steps: s_0 drawn uniformly from the
        FIFO's states, a_t ~ π_old(·|s_t) (the Learner's pre-update policy, which also
        gives the behaviour outputs), (s_{t+1} − s_t, r_t, d_t) from the dynamics model;
        a rollout ends terminated at its first d_t >= 0.5. Returns
        :func:`plausible_prefixes`-style dicts, cut to ``wanted`` steps in total."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        h, do = self.config.segment_length, self.layout.obs_dim
        n = math.ceil(wanted / h)
        states = self.layout.split(self.fifo.data)["obs"][:, :-1].reshape(-1, do)
        s = states[torch.randint(0, len(states), (n,), generator=self.generator.rng).numpy()]
        steps: list[dict[str, np.ndarray]] = []
        for _ in range(h):
            act = self.on_first_learner(
                lambda lrn, s=s: policy_sample(lrn.module[DEFAULT_MODULE_ID], s)
            )
            x = self.generator.generate(n, np.concatenate([s, act["actions"]], axis=1))
            steps.append({"obs": s, **act, "rewards": x[:, do], "done": x[:, do + 1] >= 0.5})
            s = (s + x[:, :do]).astype(np.float32)
        return rollout_prefixes(steps, s, wanted)

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

    # ------------------------------------------------------------- checkpoints
    def generator_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "fifo": self.fifo.get_state()}

    def set_generator_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.fifo.set_state(state["fifo"])

    @override(PPO)
    def save_to_path(self, path=None, **kwargs) -> str:
        path = super().save_to_path(path, **kwargs)
        target = Path(path) / GENERATOR_FILE
        tmp = target.with_name(target.name + ".tmp")
        torch.save(self.generator_state(), tmp)
        tmp.replace(target)  # atomic (the run loop also saves into a temp dir first)
        return path

    @override(PPO)
    def restore_from_path(self, path, **kwargs) -> None:
        from rllib_diffusion.checkpoints import CheckpointError

        super().restore_from_path(path, **kwargs)
        if kwargs.get("component"):
            return
        file = Path(path) / GENERATOR_FILE
        if not file.is_file():
            raise CheckpointError(
                f"'{path}' has no {GENERATOR_FILE}: it is not a DiffPPO checkpoint (or an "
                "incomplete one); start a new --out."
            )
        self.set_generator_state(torch.load(file, weights_only=False))
