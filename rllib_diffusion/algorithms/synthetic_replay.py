"""Online SynthER's knobs (the replay fine-tuners' ``AlgorithmConfig`` mixin), shared
above the families: the host (:mod:`rllib_diffusion.algorithms.replay_finetune`) declares
them without importing the SynthER family, whose generator it finds through the registry
(:attr:`~rllib_diffusion.algorithms.registry.AlgorithmSpec.replay_generator`; the state
and the retrains: :mod:`rllib_diffusion.algorithms.synther.online`)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.annotations import override

from rllib_diffusion.knobs import set_provided

#: Knob → default (``synther_real_ratio`` 1.0: off).
DEFAULTS: dict[str, Any] = {
    "synther_real_ratio": 1.0,
    "synther_retrain_every": 10_000,
    "synther_pool_size": 20_000,
    "synther_gradient_steps": 2_000,
    "synther_batch_size": 256,
    "synther_lr": 3e-4,
    "synther_width": 256,
    "synther_depth": 3,
    "synther_denoising_steps": 20,
}


class SynthEROnlineConfigMixin:
    """Online SynthER's knobs of an ``AlgorithmConfig`` (the replay fine-tuners'; see the
    module doc). Off unless ``synther_real_ratio`` < 1."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        for name, value in DEFAULTS.items():
            setattr(self, name, value)

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        synther_real_ratio: float | None = NotProvided,
        synther_retrain_every: int | None = NotProvided,
        synther_pool_size: int | None = NotProvided,
        synther_gradient_steps: int | None = NotProvided,
        synther_batch_size: int | None = NotProvided,
        synther_lr: float | None = NotProvided,
        synther_width: int | None = NotProvided,
        synther_depth: int | None = NotProvided,
        synther_denoising_steps: int | None = NotProvided,
        **kwargs: Any,
    ):
        """Args:
        synther_real_ratio: online SynthER: the replay's share of every minibatch once a
            synthetic pool exists, exactly (ratio × minibatch must be whole); the rest
            comes from the pool. 1.0 is off (SynthER: 0.5).
        synther_retrain_every: env steps between generator retrains; retrain k runs at
            the first iteration that reaches k × this (SynthER: 10,000).
        synther_pool_size: synthetic transitions generated per retrain, replacing the
            previous pool (SynthER: 200,000 per retrain into a 1M buffer; CPU-sized).
        synther_gradient_steps: gradient steps of each retrain; the generator starts
            fresh each time, as SynthER's (SynthER: 100,000; CPU-sized).
        synther_batch_size: transitions per generator gradient step (SynthER: 256).
        synther_lr: the generator's Adam learning rate, constant (SynthER: 3e-4 cosine).
        synther_width: hidden width of the generator's residual MLP (SynthER online:
            1024).
        synther_depth: hidden layers of the generator (SynthER: 6).
        synther_denoising_steps: DDPM steps K of the generator (SynthER: 128 EDM steps).
        **kwargs: the host's and RLlib's ``training()`` args.
        """
        given = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        super().training(**kwargs)
        set_provided(self, given)
        return self

    @property
    def synther_enabled(self) -> bool:
        """Whether online SynthER runs (``synther_real_ratio`` < 1)."""
        return self.synther_real_ratio < 1.0

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        batch = self.minibatch_size if isinstance(self.minibatch_size, int) else None
        error = knob_error({name: getattr(self, name) for name in DEFAULTS}, batch)
        if error:  # (a missing minibatch size: the host's error)
            self._value_error(error)


class SynthEROnlineKnobs(SynthEROnlineConfigMixin, AlgorithmConfig):
    """Online SynthER's knobs alone (their declaration: :class:`SynthEROnlineConfigMixin`),
    for a host whose own config does not declare them: ``rllib-diffusion online`` lists
    them by :func:`synther_knobs` and hands the values given to the offline
    Q-learner's ``online_phase(synther=...)``."""


def synther_knobs() -> list[Any]:
    """The knobs (``rllib_diffusion.knobs.Knob``) of :class:`SynthEROnlineConfigMixin`:
    names, help and defaults as declared there."""
    from rllib_diffusion.knobs import declared_knobs

    return declared_knobs(SynthEROnlineKnobs)


def knob_error(values: dict[str, Any], minibatch_size: int | None) -> str | None:
    """The first problem of online SynthER's knob ``values`` (every name of
    :data:`DEFAULTS`) for gradient steps of ``minibatch_size`` rows (None: the split is
    not checked), or None: a ratio outside [0, 1], a size not > 0, a real share of the
    minibatch that is not whole (``real_rows``), or a knob set while SynthER is off."""
    from rllib_diffusion.algorithms.mixed_offline_data import real_rows
    from rllib_diffusion.modules.model_config import ConfigError

    ratio = values["synther_real_ratio"]
    if not 0.0 <= ratio <= 1.0:
        return f"--synther-real-ratio must be in [0, 1], got {ratio}."
    for name in DEFAULTS:
        if name != "synther_real_ratio" and not values[name] > 0:
            return f"{name} must be > 0, got {values[name]}."
    if ratio < 1.0:
        try:
            if minibatch_size is not None:
                real_rows(ratio, minibatch_size, flag="--synther-real-ratio")
        except ConfigError as err:
            return str(err)
        return None
    for name, default in DEFAULTS.items():
        if name != "synther_real_ratio" and values[name] != default:
            flag = "--" + name.replace("_", "-")
            return (
                f"{flag} is set but online SynthER is off: add --synther-real-ratio "
                f"< 1 (SynthER: 0.5) or drop {flag}."
            )
    return None


#: Registry name of the generator that online SynthER retrains on the replay.
REPLAY_GENERATOR = "synther"


def online_synther(config: Any) -> Any:
    """The online SynthER state of a host run (``config``: its ``AlgorithmConfig``),
    built by the registry's :data:`REPLAY_GENERATOR` (``AlgorithmSpec.replay_generator``),
    so the host imports no family."""
    from rllib_diffusion.algorithms import registry

    spec = registry.get(REPLAY_GENERATOR, registry.GENERATOR)
    return spec.replay_generator_class(config)


def online_synther_of(knobs: dict[str, Any], seed: int | None) -> Any:
    """The online SynthER state (:func:`online_synther`) of the knob values ``knobs``
    given (the others: :data:`DEFAULTS`) and ``seed``, for a host that keeps them in a
    dict (the offline Q-learners' online phase); None while off (ratio 1)."""
    from types import SimpleNamespace

    values = {**DEFAULTS, **knobs}
    if values["synther_real_ratio"] >= 1.0:
        return None
    return online_synther(SimpleNamespace(**values, seed=seed))
