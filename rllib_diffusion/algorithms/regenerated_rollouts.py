"""Model rollouts regenerated with the learning policy during offline training (DyDiff's
loop), shared above the families: the knobs, the cadence and the driver.

Every ``dydiff_regenerate_every`` gradient steps (DyDiff: 500), at that exact step even
inside an RLlib iteration: ``dydiff_num_rollouts`` start
states (DyDiff: 2,048) are drawn from the data, the current Learner's policy (its
deterministic action, as the evaluation EnvRunner acts) is rolled out through the
generator named by ``dydiff_model`` with iterated action injection, the rollouts are
filtered, and the kept transitions replace the synthetic pool that
:class:`~rllib_diffusion.algorithms.mixed_offline_data.MixedOfflineData` mixes into every
batch at exactly ``real_ratio``. The generator is found through the registry (its
``rollouts`` class, e.g. DyDiff's), so no family imports another.

Cadence: a regeneration at every gradient step ``t`` with ``t % every == 0`` (0, N,
2N, ...), whatever the iteration size. The run loop calls :meth:`Regenerator.start_iteration`
before each iteration with its gradient step (the first pool is made there), and the
mixed data's :class:`~rllib_diffusion.algorithms.mixed_offline_data.BatchClock`
(:class:`RegenerationClock`) counts the batches the driver's local Learner pulls inside
the iteration and regenerates right before the synthetic rows of batch ``t`` are drawn,
i.e. with the weights after exactly ``t`` gradient steps. Remote Learners are refused
(:func:`~rllib_diffusion.algorithms.mixed_offline_data.check_local_pool`).
Regeneration ``k = t // every`` draws its start states and samples with seeds derived
from ``(seed, k)``. The pool in use is saved with every checkpoint
(:meth:`Regenerator.save`, :mod:`~rllib_diffusion.algorithms.synthetic_pool`) and
restored on ``--resume`` (:meth:`Regenerator.restore`), so a run resumed between two
regenerations goes on with the pool, and the synthetic batches, of the uninterrupted
run; a checkpoint written before pools were saved has none, and the resumed run
regenerates once at its first iteration (index ``step // every``, restored weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from rllib_diffusion.knobs import Count, NonNegative, NonNegativeFloat, PositiveFloat, Probability
from rllib_diffusion.modules.model_config import ConfigError

#: Rollout filters: DyDiff's two (by the rollouts' predicted returns) and ensemble disagreement.
FILTERS = ("hardmax", "softmax", "disagreement")
#: Registry name of the generator whose checkpoints ``dydiff_model`` takes.
GENERATOR = "dydiff"

#: Progress-line keys of a regeneration (the last in the iteration, in its line).
REGENERATION = "dydiff_regeneration"
AT_STEP = "dydiff_at_step"
ROLLOUTS = "dydiff_rollouts"
KEPT = "dydiff_rollouts_kept"
TRANSITIONS = "dydiff_transitions"
TERMINAL_RATE = "dydiff_terminal_rate"
REWARD_MEAN = "dydiff_reward_mean"
SECONDS = "dydiff_seconds"
#: Progress-line key: the gradient steps of every regeneration in the iteration.
STEPS = "dydiff_at_steps"

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(kw_only=True)
class DyDiffRolloutKnobs:
    """How DyDiff rolls a policy out and which rollouts it keeps (``rllib-diffusion
    dydiff`` and the regenerated rollouts of ``rllib-diffusion offline``).

    Attributes:
        injection_rounds: diffusion regenerations, each followed by new policy actions
            (DyDiff's configs: 2).
        state_mix: weight of each regenerated state sequence against the previous one
            (DyDiff averages: 0.5; 1: replace).
        filter: hardmax (top --keep-fraction by predicted return; DyDiff's), softmax
            (draw --keep-fraction by softmax of standardised returns / temperature;
            DyDiff's) or disagreement (one-step ensemble disagreement <= threshold).
        keep_fraction: fraction of rollouts hardmax/softmax keep (DyDiff: 0.6).
        disagreement_threshold: largest ensemble disagreement (standardised state-change
            units) of a kept rollout, for --filter disagreement.
        softmax_temperature: temperature of the softmax filter (DyDiff: 0.05).
    """

    injection_rounds: NonNegative = 2
    state_mix: Probability = 0.5
    filter: Literal["hardmax", "softmax", "disagreement"] = "hardmax"
    keep_fraction: Probability = 0.6
    disagreement_threshold: NonNegativeFloat = 1.0
    softmax_temperature: PositiveFloat = 0.05

    def check_filter(self) -> None:
        if self.filter not in FILTERS:
            raise ConfigError(f"--filter {self.filter!r}; allowed: {', '.join(FILTERS)}.")


@dataclass(kw_only=True)
class RegenerationSettings(DyDiffRolloutKnobs):
    """Rollouts regenerated with the learning policy during offline training (DyDiff's
    loop; off unless ``dydiff_model`` is given).

    Attributes:
        dydiff_model: a DyDiff model checkpoint (`rllib-diffusion dydiff`, trained on
            --dataset) that rolls the current policy out every --dydiff-regenerate-every
            gradient steps; its kept transitions are the synthetic part of every batch
            (give --real-ratio < 1, DyDiff: 0.6). None: off.
        dydiff_regenerate_every: gradient steps between regenerations (DyDiff: 500), at
            exactly those steps (inside an iteration too).
        dydiff_num_rollouts: rollouts per regeneration, from start states drawn from
            --dataset (DyDiff: 2,048).
    """

    dydiff_model: str | None = None
    dydiff_regenerate_every: Count = 500
    dydiff_num_rollouts: Count = 2_048

    @property
    def regenerates(self) -> bool:
        return self.dydiff_model is not None

    def check_regeneration(self) -> None:
        """One-line ``ConfigError``s (before any data is read): a regeneration knob changed
        without ``dydiff_model``, a model without ``real_ratio`` < 1 or together with
        ``synthetic_dataset``."""
        self.check_filter()
        if not self.regenerates:
            changed = [f.name for f in fields(RegenerationSettings) if _changed(self, f)]
            if changed:
                flags = ", ".join("--" + n.replace("_", "-") for n in changed)
                raise ConfigError(
                    f"{flags} apply only with --dydiff-model (regenerated DyDiff rollouts); "
                    "give --dydiff-model CKPT or drop them."
                )
            return
        if getattr(self, "synthetic_dataset", None) is not None:
            raise ConfigError(
                "--dydiff-model regenerates the synthetic data itself: drop --synthetic-dataset "
                "(or --dydiff-model to train on that fixed set)."
            )
        if getattr(self, "real_ratio", 1.0) >= 1.0:
            raise ConfigError(
                "--dydiff-model needs --real-ratio < 1, the real share of every batch (DyDiff: "
                "0.6, e.g. --real-ratio 0.6 --batch-size 320)."
            )


def _changed(settings: Any, f: Any) -> bool:
    return f.name != "dydiff_model" and getattr(settings, f.name) != f.default


def check_generator_checkpoint(path: str, dataset: str) -> str:
    """The resolved path of ``--dydiff-model`` after checking it is a checkpoint of the
    registry's :data:`GENERATOR` trained on ``dataset`` (one-line errors)."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.data.synthetic import checked_generator

    spec = registry.get(GENERATOR, registry.GENERATOR)
    return checked_generator(
        path,
        algorithm=spec.checkpoint_algorithm,
        dataset=dataset,
        flag="--dydiff-model",
        command="rllib-diffusion dydiff",
    )


# --------------------------------------------------------------------------- policy
def data_unit_policy(act: Callable[[np.ndarray], np.ndarray], env_config: dict) -> Policy:
    """``obs (N, Do) -> actions (N, Da)`` in data units from ``act``, a module's
    deterministic action on the env wrapper's observations: observations normalised as
    the chunked env of ``env_config`` does, the first action of a chunk unnormalised and
    clipped to the env's bounds (what an EnvRunner with that env executes)."""
    from rllib_diffusion.envs.chunking import make_chunked_env

    env = make_chunked_env(env_config)
    low, high = env.unwrapped.action_space.low, env.unwrapped.action_space.high
    env.close()

    def policy(obs: np.ndarray) -> np.ndarray:
        z = np.asarray(env.normalize_obs(np.asarray(obs, np.float32)), np.float32)
        chunk = np.asarray(act(z))
        first = chunk.reshape(len(z), env.horizon, -1)[:, 0]
        return np.clip(env.unnormalize_action(first), low, high).astype(np.float32)

    return policy


def module_actions(module: Any, obs: np.ndarray) -> np.ndarray:
    """``module``'s deterministic actions (``forward_inference``, no autograd) on ``obs``."""
    import torch

    from rllib_diffusion.evaluation import policy_actions

    with torch.no_grad():
        return policy_actions(module, torch.as_tensor(obs), deterministic=True).cpu().numpy()


def learner_policy(algo: Any, env_config: dict) -> Policy:
    """The current policy of ``algo``'s (first) Learner in data units: its RLModule's
    deterministic action, on the Learner itself (RLlib's ``foreach_learner``)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    def act(z: np.ndarray) -> np.ndarray:
        fn = lambda learner: module_actions(learner.module[DEFAULT_MODULE_ID], z)  # noqa: E731
        return next(iter(algo.learner_group.foreach_learner(fn))).get()

    return data_unit_policy(act, env_config)


# --------------------------------------------------------------------------- driver
def regeneration_seed(seed: int, index: int) -> int:
    """The seed of regeneration ``index`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def start_states(obs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` states drawn uniformly with replacement from ``obs`` (N, Do)."""
    return obs[np.random.default_rng(seed).integers(0, len(obs), n)]


class Regenerator:
    """Regenerates the synthetic pool of a running offline algorithm (see module doc).

    Args:
        settings: the run's :class:`RegenerationSettings` (with ``seed``).
        states: ``(N, Do)`` states of the real data start states are drawn from.
        env_config: the chunked env the policy acts in (its normalisation).
        policy_fn: ``algo -> policy`` (default :func:`learner_policy`).
        source: the rollout source (default: the registry's :data:`GENERATOR`'s
            ``rollouts`` class loaded from ``settings.dydiff_model``).
    """

    def __init__(
        self,
        settings: RegenerationSettings,
        states: np.ndarray,
        env_config: dict,
        *,
        policy_fn: Callable[[Any], Policy] | None = None,
        source: Any | None = None,
    ) -> None:
        from rllib_diffusion.algorithms import registry

        self.s, self.states = settings, np.asarray(states, np.float32)
        self.policy_fn = policy_fn or (lambda algo: learner_policy(algo, env_config))
        if source is None:
            spec = registry.get(GENERATOR, registry.GENERATOR)
            source = spec.rollouts_class(settings.dydiff_model)
        self.source = source
        #: ``(regeneration, step)`` of the pool in use (None: none yet).
        self.pool_at: tuple[int, int] | None = None
        #: The gradient step of the next batch the Learner draws (None: not started).
        self.step: int | None = None
        #: The step of the last regeneration tried (kept or not): one try per step.
        self.tried_at: int | None = None
        #: Progress fields of the regenerations since :meth:`take_lines`.
        self.lines: list[dict[str, Any]] = []
        self._provenance: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        """The model and dataset a pool of this run comes from (names and fingerprints)."""
        from rllib_diffusion.algorithms.synthetic_pool import array_sha256

        if self._provenance is None:
            self._provenance = {
                "model": self.s.dydiff_model,
                "model_sha256": self.source.fingerprint(),
                "dataset": getattr(self.s, "dataset", None),
                "dataset_sha256": array_sha256(self.states),
            }
        return self._provenance

    def save(self, algo: Any, directory: Any) -> dict[str, Any]:
        """Write the pool in use into the checkpoint being saved in ``directory``; the
        ``CheckpointMeta`` field recording it (none before the first pool)."""
        from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD, save_pool

        stream = algo.offline_data.synthetic
        if self.pool_at is None or stream is None:
            return {}
        regeneration, at_step = self.pool_at
        record = save_pool(
            directory, stream, regeneration=regeneration, at_step=at_step, **self.provenance()
        )
        return {POOL_FIELD: record.to_dict()}

    def restore(self, algo: Any, checkpoint: Any, record: Any, step: int) -> dict[str, Any]:
        """Make the pool saved in ``checkpoint`` (``record``: its meta's
        ``synthetic_pool``; None: written before pools were saved) ``algo``'s, as it was at
        gradient step ``step``; what ``result.json["resumed"]`` records about it."""
        from rllib_diffusion.algorithms.mixed_offline_data import ArrayStream
        from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD, load_pool

        if record is None:
            differs = step % self.s.dydiff_regenerate_every != 0
            effect = (
                "its pool differs from an uninterrupted run's until the next regeneration"
                if differs
                else "a regeneration step, so the pool is the uninterrupted run's"
            )
            print(
                f"[dydiff] checkpoint '{checkpoint}' holds no regenerated pool (saved before "
                f"pools were checkpointed): regenerating at step {step} with the restored "
                f"policy; {effect}.",
                flush=True,
            )
            return {POOL_FIELD: None}
        columns, rec = load_pool(checkpoint, record, step=step, expect=self.provenance())
        algo.offline_data.set_synthetic(ArrayStream(columns, seed=rec.seed, served=rec.served))
        self.pool_at = (rec.regeneration, rec.at_step)
        print(
            f"[dydiff] restored the pool of regeneration {rec.regeneration} (step "
            f"{rec.at_step}): {rec.rows} transitions, {rec.served} batches served",
            flush=True,
        )
        return {POOL_FIELD: {k: getattr(rec, k) for k in ("regeneration", "at_step", "rows")}}

    def due(self, step: int, has_pool: bool) -> bool:
        """Whether to regenerate before the batch of gradient step ``step``: on the
        cadence (once per step), or when there is no pool yet."""
        if not has_pool:
            return True
        return step % self.s.dydiff_regenerate_every == 0 and step != self.tried_at

    def maybe_regenerate(self, algo: Any, step: int) -> dict[str, Any] | None:
        """Regenerate ``algo.offline_data``'s synthetic pool if due at gradient step
        ``step``; the progress fields (also kept for :meth:`take_lines`)."""
        if not self.due(step, algo.offline_data.has_synthetic):
            return None
        line = self.regenerate(algo, step)
        self.lines.append(line)
        return line

    def start_iteration(self, algo: Any, step: int) -> dict[str, Any] | None:
        """Before the iteration that starts at gradient step ``step`` (the run loop's
        count): the clock set to ``step`` and installed in ``algo.offline_data`` (once),
        and the first pool made (or one due at ``step`` with a Learner that draws no
        batch through the clock)."""
        self.step = step
        if getattr(algo.offline_data, "batch_clock", None) is None:
            algo.offline_data.set_batch_clock(RegenerationClock(self, algo))
        return self.maybe_regenerate(algo, step)

    def take_lines(self) -> dict[str, Any]:
        """The progress fields of the regenerations since the last call: the last one's,
        and :data:`STEPS` listing all their steps (empty dict: none)."""
        lines, self.lines = self.lines, []
        return {**lines[-1], STEPS: [x[AT_STEP] for x in lines]} if lines else {}

    def rollouts(self, policy: Policy, index: int) -> tuple[dict[str, np.ndarray], dict]:
        """Kept transition columns and statistics of regeneration ``index`` of ``policy``."""
        seed = regeneration_seed(self.s.seed, index)
        s0 = start_states(self.states, self.s.dydiff_num_rollouts, seed)
        return self.source.generate(policy, s0, self.s, seed=seed)

    def regenerate(self, algo: Any, step: int) -> dict[str, Any]:
        """Regeneration ``step // N`` with ``algo``'s current policy, made the pool of
        ``algo.offline_data`` (the previous one stays if the filter kept nothing); its
        progress fields, also printed."""
        started = time.perf_counter()
        self.tried_at = step
        index = step // self.s.dydiff_regenerate_every
        columns, stats = self.rollouts(self.policy_fn(algo), index)
        n = len(columns["obs"])
        if n:
            algo.offline_data.replace_synthetic(
                columns, seed=regeneration_seed(self.s.seed, index) + 1
            )
            self.pool_at = (index, step)
        elif not algo.offline_data.has_synthetic:
            raise ConfigError(
                f"the {self.s.filter} filter kept none of {stats['rollouts']} rollouts at the "
                "first regeneration; raise --disagreement-threshold or --keep-fraction."
            )
        line = {
            REGENERATION: index,
            AT_STEP: step,
            ROLLOUTS: stats["rollouts"],
            KEPT: stats["kept"],
            TRANSITIONS: n,
            TERMINAL_RATE: float(columns["terminateds"].mean()) if n else 0.0,
            REWARD_MEAN: float(columns["rewards"].mean()) if n else 0.0,
            SECONDS: time.perf_counter() - started,
        }
        print(format_regeneration(line), flush=True)
        return line


class RegenerationClock:
    """The :class:`~rllib_diffusion.algorithms.mixed_offline_data.BatchClock` of a
    :class:`Regenerator`: regenerates (if due) before the synthetic rows of each batch the
    Learner draws, at the regenerator's step, and counts the batches drawn."""

    def __init__(self, regenerator: Regenerator, algo: Any) -> None:
        self.regenerator, self.algo = regenerator, algo

    def before_batch(self) -> None:
        """Regenerate if due at the coming batch's gradient step (at most once a step)."""
        if self.regenerator.step is not None:
            self.regenerator.maybe_regenerate(self.algo, self.regenerator.step)

    def batch_drawn(self) -> None:
        """One more gradient step."""
        if self.regenerator.step is not None:
            self.regenerator.step += 1


def format_regeneration(line: dict[str, Any]) -> str:
    """The printed line of a regeneration's progress fields."""
    kept = "kept previous pool: " if not line[TRANSITIONS] else ""
    return (
        f"[dydiff] regeneration {line[REGENERATION]} at step {line[AT_STEP]}: {kept}"
        f"{line[KEPT]}/{line[ROLLOUTS]} rollouts kept, {line[TRANSITIONS]} transitions, "
        f"terminal rate {line[TERMINAL_RATE]:.3f}, reward {line[REWARD_MEAN]:.2f}, "
        f"{line[SECONDS]:.1f}s"
    )
