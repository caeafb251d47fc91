"""The ``precision`` knob: the learner's loss forward in fp32 (default, the references')
or under bf16 autocast.

* :class:`PrecisionConfigMixin` declares the knob once, for every config that mixes it in
  (diffusion BC / SynthER / DyDiff through ``DenoiserTrainingConfigMixin``, the offline
  Q-learners through ``OfflineQConfigMixin``, the chain-PPO family, which refuses bf16).
* :class:`MixedPrecisionMixin` applies it in a ``TorchLearner``: ``compute_losses`` runs
  under the autocast context (learners whose losses run the networks: the Q-learners),
  and modules whose ``forward_train`` runs the networks (:class:`TrainPrecisionAPI`) get
  the precision when the learner builds.

Only the forward is autocast; backward follows the forward's dtypes, gradients land in
the fp32 parameters, optimizers step in fp32, and networks return fp32 (``MLP``), so
losses, log-probs and TD targets are reduced in fp32. See docs/performance.md, "Mixed
precision", for what it buys per learner and why DPPO refuses it.
"""

from __future__ import annotations

from typing import Any, Literal

from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.apis import TrainPrecisionAPI
from rllib_diffusion.utils.precision import PRECISIONS, autocast


class PrecisionConfigMixin:
    """The ``precision`` knob. Host: ``<Algo>Config(..., PrecisionConfigMixin, <RLlib
    config>)``; its learner mixes in :class:`MixedPrecisionMixin`. A config whose learner
    must not run in bf16 sets :attr:`BF16_REFUSAL` to the reason."""

    #: Why this algorithm refuses ``precision="bf16"`` (None: it accepts it).
    BF16_REFUSAL: str | None = None

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class)
        self.precision = "fp32"

    def training(self, *, precision: Literal["fp32", "bf16"] | None = NotProvided, **kwargs: Any):
        """Args:
        precision: dtype of the learner's loss forward: ``fp32`` (the references') or
            ``bf16`` (torch.autocast on the learner's device: matmuls in bfloat16,
            losses and targets in fp32; faster on CPUs with AMX/AVX512-BF16 at batch ≥
            256 and on GPUs). DPPO, ReinFlow and DPOER refuse bf16 (its rounding moves
            the PPO ratio as far as the clip).
        **kwargs: the other ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(self, {"precision": precision})
        return self

    def validate(self) -> None:
        super().validate()
        if self.precision not in PRECISIONS:
            self._value_error(
                f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}."
            )
        if self.precision == "bf16" and self.BF16_REFUSAL:
            name = getattr(self.algo_class, "__name__", type(self).__name__)
            self._value_error(f"{name} refuses precision='bf16': {self.BF16_REFUSAL}")


class MixedPrecisionMixin:
    """Host: a ``TorchLearner`` of a config with :class:`PrecisionConfigMixin`
    (``class L(MixedPrecisionMixin, ..., TorchLearner)``): the loss forward at
    ``config.precision``."""

    def build(self) -> None:
        super().build()
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            if isinstance(module, TrainPrecisionAPI):
                module.train_precision = self.config.get_config_for_module(module_id).precision

    def compute_losses(self, *, fwd_out, batch):
        with autocast(self.config.precision, self._loss_device()):
            return super().compute_losses(fwd_out=fwd_out, batch=batch)

    def _loss_device(self) -> Any:
        for module_id in self.module.keys():
            for param in self.module[module_id].parameters():
                return param.device
        return "cpu"
