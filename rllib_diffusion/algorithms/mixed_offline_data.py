"""Offline batches drawn from real and synthetic data with an exact real ratio.

RLlib builds every offline batch in one place, ``OfflineData`` (read parquet →
``map_batches(prelearner)`` → an iterator the Learner pulls minibatches from). This
subclass keeps a second ``OfflineData`` over the synthetic parquet and hands the
Learner an iterator that puts exactly ``n_real = real_ratio · B`` real and ``B − n_real``
synthetic rows in every minibatch of ``B`` (rows permuted within the batch). Both
streams drop their last partial batch, so no batch is short; the real stream defines
an epoch and the synthetic one restarts whenever it runs out.

Wired by :func:`rllib_diffusion.algorithms.offline_run.configure_offline` for every
offline algorithm (``--synthetic-dataset PATH --real-ratio R``). Without a synthetic
parquet the synthetic part is an in-memory pool that :meth:`MixedOfflineData.replace_synthetic`
sets and replaces while training (regenerated model rollouts, ``--dydiff-model``): the
next batch the Learner pulls already takes its synthetic rows from the new pool, and the
real stream goes on where it was. Such a pool may also be replaced *inside* an RLlib
iteration: a :class:`BatchClock` (:meth:`MixedOfflineData.set_batch_clock`) is told before
the synthetic rows of every batch the Learner pulls are drawn (it may replace the pool
then) and after each batch is drawn, so it counts the Learner's gradient steps. The pool
lives in the driver, so it takes the driver's local Learner (``num_learners=0``; refused
with remote Learners, which would train on a copy of the first pool).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
from ray.rllib.utils.annotations import override

from rllib_diffusion.modules.model_config import ConfigError

#: Config attributes read by :class:`MixedOfflineData` (set by :func:`mix_offline_data`).
SYNTHETIC_INPUT = "synthetic_input_"
REAL_RATIO = "real_ratio"


class BatchClock(Protocol):
    """Told about every batch the Learner pulls from a :class:`MixedOfflineData`."""

    def before_batch(self) -> None:
        """Before the batch's synthetic rows are drawn (may replace the pool; called
        again for the same batch when a pass ends before it is drawn)."""

    def batch_drawn(self) -> None:
        """The batch was drawn and goes to the Learner (one gradient step)."""


def real_rows(real_ratio: float, batch_size: int, *, flag: str = "--real-ratio") -> int:
    """Real rows per batch: ``real_ratio · batch_size``, which must be a whole number
    (else a one-line ``ConfigError`` naming the nearest ratios that are; ``flag``: the
    ratio's flag in it)."""
    if not 0.0 <= real_ratio <= 1.0:
        raise ConfigError(f"{flag} must be in [0, 1], got {real_ratio}.")
    exact = real_ratio * batch_size
    n = round(exact)
    if abs(exact - n) > 1e-9:
        lo, hi = int(np.floor(exact)), int(np.ceil(exact))
        raise ConfigError(
            f"{flag} {real_ratio} × batch {batch_size} = {exact:g} real rows per batch, "
            f"not a whole number: use {flag} {lo / batch_size:g} or {hi / batch_size:g}, "
            "or a batch size it divides."
        )
    return n


def mixed_rows(
    real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One batch of ``n_real`` real and ``n_syn`` synthetic rows ``{column: (n, ...)}``
    (the columns of ``real``; either part may be empty), in a random order drawn from
    ``rng``: ``concat(real, synthetic)[perm]``, each column cast to the real one's dtype."""
    parts = [p for p in (real, synthetic) if p and len(next(iter(p.values())))]
    keys = list(parts[0])
    rows = {
        k: np.concatenate([np.asarray(p[k]).astype(parts[0][k].dtype) for p in parts]) for k in keys
    }
    order = rng.permutation(len(rows[keys[0]]))
    return {k: v[order] for k, v in rows.items()}


def mix_offline_data(config: Any, synthetic_path: str | None, real_ratio: float) -> Any:
    """Make ``config`` (any offline ``AlgorithmConfig``) draw each batch from its
    ``input_`` and from the parquet at ``synthetic_path`` (None: from the in-memory pool
    set by :meth:`MixedOfflineData.replace_synthetic`) with an exact ``real_ratio``."""
    real_rows(real_ratio, config.train_batch_size_per_learner)
    setattr(config, SYNTHETIC_INPUT, [] if synthetic_path is None else [synthetic_path])
    setattr(config, REAL_RATIO, float(real_ratio))
    return config.offline_data(offline_data_class=MixedOfflineData)


class MixedOfflineData(OfflineData):
    """``OfflineData`` whose batches mix real and synthetic rows at ``config.real_ratio``."""

    @override(OfflineData)
    def __init__(self, config: Any) -> None:
        check_local_pool(config)
        super().__init__(config)
        self.real_ratio = float(getattr(config, REAL_RATIO))
        # Whole batches only: a short last batch would break the ratio.
        self.iter_batches_kwargs = {**self.iter_batches_kwargs, "drop_last": True}
        self.synthetic: OfflineData | ArrayStream | None = None
        if getattr(config, SYNTHETIC_INPUT):
            synthetic = config.copy(copy_frozen=False)
            synthetic.input_ = list(getattr(config, SYNTHETIC_INPUT))
            synthetic.offline_data_class = None
            self.synthetic = OfflineData(synthetic)
            self.synthetic.iter_batches_kwargs = dict(self.iter_batches_kwargs)
        self._mixed_iterators: list[MixedDataIterator] | None = None
        self.batch_clock: BatchClock | None = None

    def set_batch_clock(self, clock: BatchClock | None) -> None:
        """Tell ``clock`` about every batch from now on (running iterators included)."""
        self.batch_clock = clock
        for iterator in self._mixed_iterators or []:
            iterator.clock = clock

    @property
    def has_synthetic(self) -> bool:
        """Whether there is a synthetic stream (a parquet, or a pool set already)."""
        return self.synthetic is not None

    def replace_synthetic(self, columns: dict[str, np.ndarray], *, seed: int) -> int:
        """Make ``columns`` (rows in the form of the real parquet, e.g. transitions) the
        synthetic pool, mapped by the config's pre-learner, from the next batch on;
        returns its rows. Rows are served in seeded random order (:class:`ArrayStream`)."""
        prelearner = self.prelearner_class(config=self.config, spaces=None, module_state=None)
        return self.set_synthetic(ArrayStream(prelearner(dict(columns)), seed=seed))

    def set_synthetic(self, stream: ArrayStream) -> int:
        """Make ``stream`` (rows already in the Learner batch's form, e.g. a pool restored
        from a checkpoint) the synthetic pool from the next batch on; returns its rows."""
        self.synthetic = stream
        for iterator in self._mixed_iterators or []:
            iterator.replace_synthetic(stream)
        return stream.num_rows

    def _share_learner_info(self) -> None:
        # Set on this object by the Algorithm after construction; the synthetic
        # stream needs the same to build its pre-learner.
        if not isinstance(self.synthetic, OfflineData):
            return
        for name in ("learner_handles", "locality_hints", "module_spec", "spaces"):
            if hasattr(self, name):
                setattr(self.synthetic, name, getattr(self, name))

    @override(OfflineData)
    def sample(
        self,
        num_samples: int,
        return_iterator: bool = False,
        num_shards: int = 1,
        module_state: dict[str, Any] | None = None,
    ):
        self._share_learner_info()
        if self.synthetic is None:
            raise RuntimeError(
                "MixedOfflineData has no synthetic pool yet: call replace_synthetic() "
                "before the first train() (the regenerated-rollouts driver does)."
            )
        n_real = real_rows(self.real_ratio, num_samples)
        n_syn = num_samples - n_real
        if not return_iterator:
            parts = []
            if n_real:
                parts.append(super().sample(n_real, False, num_shards, module_state))
            if self.batch_clock is not None:
                self.batch_clock.before_batch()
            if n_syn:
                parts.append(self.synthetic.sample(n_syn, False, num_shards, module_state))
            if self.batch_clock is not None:
                self.batch_clock.batch_drawn()
            return _permuted(concat_samples(parts) if len(parts) > 1 else parts[0])
        if self._mixed_iterators is None:
            real = super().sample(num_samples, True, num_shards, module_state)
            syn = self.synthetic.sample(num_samples, True, num_shards, module_state)
            self._mixed_iterators = [
                MixedDataIterator(r, s, self.real_ratio, clock=self.batch_clock)
                for r, s in zip(real, syn)
            ]
        return self._mixed_iterators


def check_local_pool(config: Any) -> None:
    """One-line ``ConfigError`` for an in-memory pool (no synthetic parquet: regenerated
    rollouts) with remote Learners: the pool is replaced in the driver's objects, and a
    remote Learner trains on its own copy of the iterator (the first pool, forever)."""
    if getattr(config, SYNTHETIC_INPUT) or not getattr(config, "num_learners", 0):
        return
    raise ConfigError(
        f"regenerated rollouts (--dydiff-model) replace the synthetic pool in the driver's "
        f"local Learner only, and num_learners={config.num_learners} would train on remote "
        "copies of the first pool: use num_learners=0 (config.learners(num_learners=0))."
    )


def _permuted(batch: MultiAgentBatch) -> MultiAgentBatch:
    rng = np.random.default_rng()
    policy_batches = {
        mid: SampleBatch(mixed_rows({k: np.asarray(v) for k, v in b.items()}, {}, rng))
        for mid, b in batch.policy_batches.items()
    }
    return MultiAgentBatch(policy_batches, env_steps=batch.env_steps())


class MixedDataIterator:
    """Duck-typed ``ray.data.DataIterator`` for RLlib's Learner: ``iter_torch_batches``
    yields flat ``{column: tensor}`` batches of ``n_real`` real + ``B − n_real`` synthetic
    rows (permuted), ``B`` being the Learner's minibatch size; ``clock`` (a
    :class:`BatchClock`, or None) is told about every batch."""

    def __init__(
        self, real: Any, synthetic: Any, real_ratio: float, *, clock: BatchClock | None = None
    ) -> None:
        self.real, self.synthetic, self.real_ratio = real, synthetic, float(real_ratio)
        self.clock = clock
        #: Bumped by :meth:`replace_synthetic`; running epochs switch pools when it changes.
        self.generation = 0

    def replace_synthetic(self, synthetic: Any) -> None:
        self.synthetic = synthetic
        self.generation += 1

    def iter_torch_batches(self, *, batch_size: int, **kwargs: Any) -> _MixedBatches:
        n_real = real_rows(self.real_ratio, batch_size)
        return _MixedBatches(self, n_real, batch_size - n_real, {**kwargs, "drop_last": True})


class _MixedBatches:
    """Re-iterable: each ``iter()`` is one epoch of the real stream (or a pass of the
    synthetic one when no row is real); the source's clock hears of every batch."""

    def __init__(self, source: MixedDataIterator, n_real: int, n_syn: int, kwargs: dict) -> None:
        self.source, self.n_real, self.n_syn, self.kwargs = source, n_real, n_syn, kwargs

    def _stream(self, iterator: Any, n: int):
        return iter(iterator.iter_torch_batches(batch_size=n, **self.kwargs))

    def _synthetic(self):
        """Endless synthetic batches: the stream restarts when it runs out, and the next
        batch after a replaced pool comes from the new one."""
        generation, stream = None, None
        while True:
            if generation != self.source.generation:
                generation = self.source.generation
                stream = self._stream(self.source.synthetic, self.n_syn)
            batch = next(stream, None)
            if batch is None:  # the synthetic stream ran out: start it again
                stream = self._stream(self.source.synthetic, self.n_syn)
                batch = next(stream)
            yield batch

    def _before_batch(self) -> None:
        if self.source.clock is not None:
            self.source.clock.before_batch()

    def _batch_drawn(self) -> None:
        if self.source.clock is not None:
            self.source.clock.batch_drawn()

    def _synthetic_pass(self):
        """One pass of the synthetic pool (no real rows); a pool replaced during it
        takes over from the next batch, and the pass ends with the new pool's."""
        generation, stream = None, None
        while True:
            self._before_batch()
            if generation != self.source.generation:
                generation = self.source.generation
                stream = self._stream(self.source.synthetic, self.n_syn)
            batch = next(stream, None)
            if batch is None:
                return
            self._batch_drawn()
            yield batch

    def __iter__(self):
        if self.n_real == 0:
            yield from self._synthetic_pass()
            return
        synthetic = self._synthetic() if self.n_syn else None
        for real in self._stream(self.source.real, self.n_real):
            self._before_batch()  # may replace the pool: this batch draws from the new one
            batch = real if synthetic is None else _mixed(real, next(synthetic))
            self._batch_drawn()
            yield batch


def _mixed(real: dict[str, Any], syn: dict[str, Any]) -> dict[str, Any]:
    """The rows of two ``{column: tensor}`` batches together, in a random order."""
    import torch

    order = torch.randperm(len(next(iter(real.values()))) + len(next(iter(syn.values()))))
    return {
        k: torch.cat([real[k], syn[k].to(real[k].dtype)])[order.to(real[k].device)] for k in real
    }


class ArrayStream:
    """In-memory rows in the Learner batch's form (flattened ``module/column`` keys), in
    the two ways RLlib pulls offline data: ``iter_torch_batches`` (a
    ``ray.data.DataIterator``'s: each ``iter()`` runs to the end of the current pass) and
    ``sample`` (an ``OfflineData``'s).

    Batch ``j`` of size ``B`` is a pure function of ``(seed, j, B)``: pass
    ``p = j // ⌊rows / B⌋`` is the permutation seeded ``(seed, p)``, cut into ``⌊rows / B⌋``
    whole batches (a pool smaller than a batch fills each batch from successive
    permutations seeded ``(seed, j)``; rows repeat). So the stream's whole state is its
    columns, ``seed`` and ``served`` (batches handed out so far): a stream rebuilt from
    them (a checkpoint's pool) goes on with exactly the batches the original would have.
    """

    def __init__(self, columns: dict[str, np.ndarray], *, seed: int, served: int = 0) -> None:
        self.columns = {k: np.ascontiguousarray(v) for k, v in columns.items()}
        self.num_rows = len(next(iter(self.columns.values())))
        if self.num_rows == 0:
            raise ValueError("an ArrayStream needs at least one row.")
        self.seed, self.served = int(seed), int(served)
        self._pass: tuple[int, int, np.ndarray] | None = None  # (pass, B, its permutation)

    def batches_per_pass(self, batch_size: int) -> int:
        return max(self.num_rows // batch_size, 1)

    def batch_indices(self, j: int, batch_size: int) -> np.ndarray:
        """Row indices of batch ``j`` (0, 1, ...) of ``batch_size`` rows."""
        n, per_pass = self.num_rows, self.batches_per_pass(batch_size)
        if n < batch_size:
            rng = np.random.default_rng([self.seed, j])
            reps = -(-batch_size // n)
            return np.concatenate([rng.permutation(n) for _ in range(reps)])[:batch_size]
        p, k = divmod(j, per_pass)
        if self._pass is None or self._pass[:2] != (p, batch_size):
            self._pass = (p, batch_size, np.random.default_rng([self.seed, p]).permutation(n))
        return self._pass[2][k * batch_size : (k + 1) * batch_size]

    def next_indices(self, batch_size: int) -> np.ndarray:
        """Row indices of the next batch (counted in ``served``)."""
        idx = self.batch_indices(self.served, batch_size)
        self.served += 1
        return idx

    def iter_torch_batches(self, *, batch_size: int, device: Any = None, **_: Any):
        return _ArrayEpochs(self, batch_size, device)

    def sample(self, num_samples: int, return_iterator: bool = False, *_: Any, **__: Any):
        if return_iterator:
            return [self]
        from ray.rllib.utils import unflatten_dict

        idx = self.next_indices(num_samples)
        rows = unflatten_dict({k: v[idx] for k, v in self.columns.items()})
        return MultiAgentBatch(
            {mid: SampleBatch(cols) for mid, cols in rows.items()}, env_steps=len(idx)
        )


class _ArrayEpochs:
    """Re-iterable passes of an :class:`ArrayStream` as ``{column: tensor}`` batches; each
    ``iter()`` goes on from the stream's ``served`` batches to the end of that pass."""

    def __init__(self, stream: ArrayStream, batch_size: int, device: Any) -> None:
        self.stream, self.batch_size, self.device = stream, batch_size, device

    def __iter__(self):
        import torch

        stream, per_pass = self.stream, self.stream.batches_per_pass(self.batch_size)
        while True:
            idx = stream.next_indices(self.batch_size)
            yield {
                k: torch.as_tensor(v[idx], device=self.device) for k, v in stream.columns.items()
            }
            if stream.served % per_pass == 0:  # the end of a pass
                return
