"""Offline batches drawn from real and synthetic data with an exact real ratio.

RLlib builds every offline batch in one place, ``OfflineData`` (read parquet →
``map_batches(prelearner)`` → an iterator the Learner pulls minibatches from). This
subclass keeps a second ``OfflineData`` over the synthetic parquet and hands the
Learner an iterator that puts exactly ``n_real = real_ratio · B`` real and ``B − n_real``
synthetic rows in every minibatch of ``B`` (rows permuted within the batch). Both
streams drop their last partial batch, so no batch is short; the real stream defines
an epoch and the synthetic one restarts whenever it runs out.

Wired by :func:`rllib_diffusion.algorithms.offline_run.configure_offline` for every
offline algorithm (``--synthetic-dataset PATH --real-ratio R``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
from ray.rllib.utils.annotations import override

from rllib_diffusion.modules.model_config import ConfigError

#: Config attributes read by :class:`MixedOfflineData` (set by :func:`mix_offline_data`).
SYNTHETIC_INPUT = "synthetic_input_"
REAL_RATIO = "real_ratio"


def real_rows(real_ratio: float, batch_size: int) -> int:
    """Real rows per batch: ``real_ratio · batch_size``, which must be a whole number
    (else a one-line ``ConfigError`` naming the nearest ratios that are)."""
    if not 0.0 <= real_ratio <= 1.0:
        raise ConfigError(f"--real-ratio must be in [0, 1], got {real_ratio}.")
    exact = real_ratio * batch_size
    n = round(exact)
    if abs(exact - n) > 1e-9:
        lo, hi = int(np.floor(exact)), int(np.ceil(exact))
        raise ConfigError(
            f"--real-ratio {real_ratio} × batch {batch_size} = {exact:g} real rows per batch, "
            f"not a whole number: use --real-ratio {lo / batch_size:g} or {hi / batch_size:g}, "
            "or a batch size it divides."
        )
    return n


def mix_offline_data(config: Any, synthetic_path: str, real_ratio: float) -> Any:
    """Make ``config`` (any offline ``AlgorithmConfig``) draw each batch from its
    ``input_`` and from the parquet at ``synthetic_path`` with an exact ``real_ratio``."""
    real_rows(real_ratio, config.train_batch_size_per_learner)
    setattr(config, SYNTHETIC_INPUT, [synthetic_path])
    setattr(config, REAL_RATIO, float(real_ratio))
    return config.offline_data(offline_data_class=MixedOfflineData)


class MixedOfflineData(OfflineData):
    """``OfflineData`` whose batches mix real and synthetic rows at ``config.real_ratio``."""

    @override(OfflineData)
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        synthetic = config.copy(copy_frozen=False)
        synthetic.input_ = list(getattr(config, SYNTHETIC_INPUT))
        synthetic.offline_data_class = None
        self.synthetic = OfflineData(synthetic)
        self.real_ratio = float(getattr(config, REAL_RATIO))
        # Whole batches only: a short last batch would break the ratio.
        self.iter_batches_kwargs = {**self.iter_batches_kwargs, "drop_last": True}
        self.synthetic.iter_batches_kwargs = dict(self.iter_batches_kwargs)
        self._mixed_iterators: list[MixedDataIterator] | None = None

    def _share_learner_info(self) -> None:
        # Set on this object by the Algorithm after construction; the synthetic
        # stream needs the same to build its pre-learner.
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
        n_real = real_rows(self.real_ratio, num_samples)
        n_syn = num_samples - n_real
        if not return_iterator:
            parts = []
            if n_real:
                parts.append(super().sample(n_real, False, num_shards, module_state))
            if n_syn:
                parts.append(self.synthetic.sample(n_syn, False, num_shards, module_state))
            return _permuted(concat_samples(parts) if len(parts) > 1 else parts[0])
        if self._mixed_iterators is None:
            real = super().sample(num_samples, True, num_shards, module_state)
            syn = self.synthetic.sample(num_samples, True, num_shards, module_state)
            self._mixed_iterators = [
                MixedDataIterator(r, s, self.real_ratio) for r, s in zip(real, syn)
            ]
        return self._mixed_iterators


def _permuted(batch: MultiAgentBatch) -> MultiAgentBatch:
    rng = np.random.default_rng()
    policy_batches = {}
    for mid, b in batch.policy_batches.items():
        order = rng.permutation(b.count)
        policy_batches[mid] = SampleBatch({k: np.asarray(v)[order] for k, v in b.items()})
    return MultiAgentBatch(policy_batches, env_steps=batch.env_steps())


class MixedDataIterator:
    """Duck-typed ``ray.data.DataIterator`` for RLlib's Learner: ``iter_torch_batches``
    yields flat ``{column: tensor}`` batches of ``n_real`` real + ``B − n_real`` synthetic
    rows (permuted), ``B`` being the Learner's minibatch size."""

    def __init__(self, real: Any, synthetic: Any, real_ratio: float) -> None:
        self.real, self.synthetic, self.real_ratio = real, synthetic, float(real_ratio)

    def iter_torch_batches(self, *, batch_size: int, **kwargs: Any) -> _MixedBatches:
        n_real = real_rows(self.real_ratio, batch_size)
        return _MixedBatches(self, n_real, batch_size - n_real, {**kwargs, "drop_last": True})


class _MixedBatches:
    """Re-iterable: each ``iter()`` is one epoch of the real stream (or of the synthetic
    one when no row is real)."""

    def __init__(self, source: MixedDataIterator, n_real: int, n_syn: int, kwargs: dict) -> None:
        self.source, self.n_real, self.n_syn, self.kwargs = source, n_real, n_syn, kwargs

    def _stream(self, iterator: Any, n: int):
        return iter(iterator.iter_torch_batches(batch_size=n, **self.kwargs))

    def __iter__(self):
        import torch

        if self.n_real == 0:
            yield from self._stream(self.source.synthetic, self.n_syn)
            return
        synthetic = self._stream(self.source.synthetic, self.n_syn) if self.n_syn else None
        for real in self._stream(self.source.real, self.n_real):
            if synthetic is None:
                yield real
                continue
            syn = next(synthetic, None)
            if syn is None:  # the synthetic stream ran out: start it again
                synthetic = self._stream(self.source.synthetic, self.n_syn)
                syn = next(synthetic)
            order = torch.randperm(self.n_real + self.n_syn)
            yield {
                k: torch.cat([real[k], syn[k].to(real[k].dtype)])[order.to(real[k].device)]
                for k in real
            }
