"""Registry of algorithms, above the families: name → :class:`AlgorithmSpec`.

A spec names the ``AlgorithmConfig`` class by dotted path (imported only when used, so
that looking a name up imports one algorithm, not its siblings), the run kind (which
driver trains it) and the ``algorithm`` name its checkpoints carry. Everything else
(knobs and their defaults, per-task paper values, networks, module and learner) is the
config class's. Other families add themselves with :func:`register`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rllib_diffusion.modules.model_config import ConfigError

#: Run kind of the offline Q-learners (``rllib-diffusion offline``/``online``).
OFFLINE_Q = "offline_q"
#: Run kind of policy pretraining on a dataset (``pretrain``, ``pretrain-gaussian``).
PRETRAIN = "pretrain"
#: Run kind of online fine-tuning from a pretrained policy (``finetune``, ``finetune-gaussian``).
FINETUNE = "finetune"


@dataclass(frozen=True)
class AlgorithmSpec:
    """How to build and run one registered algorithm.

    Attributes:
        name: registry name (``--algo``), e.g. ``"dac"``.
        config: ``"package.module:ConfigClass"`` of its ``AlgorithmConfig``.
        kind: the run driver, e.g. :data:`OFFLINE_Q`.
        checkpoint_algorithm: ``meta["algorithm"]`` of its checkpoints.
        model_overrides: model-config values that make this variant (e.g. the flow
            actor of ``diffusion_ql_flow``) on top of the config's network defaults.
        description: one line for ``--help``.
    """

    name: str
    config: str
    kind: str
    checkpoint_algorithm: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def config_class(self) -> type:
        module, _, cls = self.config.partition(":")
        return getattr(importlib.import_module(module), cls)

    def knobs(self) -> list:
        """Declared knobs (:func:`rllib_diffusion.knobs.declared_knobs`) of the config."""
        return _declared(self.config_class)

    def check_knobs(self, given: Mapping[str, Any]) -> None:
        """One-line ``ConfigError`` if ``given`` holds a knob this algorithm does not use."""
        from rllib_diffusion.knobs import check_knobs

        check_knobs(self.name, self.knobs(), dict(given))


_REGISTRY: dict[str, AlgorithmSpec] = {}


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add ``spec`` (a name registered twice is a programming error)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"algorithm {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> AlgorithmSpec:
    """The spec of ``name``; a one-line ``ConfigError`` listing the names if unknown."""
    if name not in _REGISTRY:
        raise ConfigError(f"algo={name!r}; allowed: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names (of one ``kind``), in registration order."""
    return tuple(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def by_checkpoint_algorithm(algorithm: str | None) -> AlgorithmSpec | None:
    """The spec whose checkpoints carry ``meta["algorithm"] == algorithm`` (or None)."""
    return next((s for s in _REGISTRY.values() if s.checkpoint_algorithm == algorithm), None)


@functools.cache
def _declared(config_class: type) -> list:
    from rllib_diffusion.knobs import declared_knobs

    return declared_knobs(config_class)


def all_knob_names(kind: str = OFFLINE_Q) -> frozenset[str]:
    """Every knob some registered algorithm of ``kind`` declares."""
    return frozenset(k.name for n in names(kind) for k in get(n).knobs())


_Q = "rllib_diffusion.algorithms"
for _spec in (
    AlgorithmSpec(
        "diffusion_ql",
        f"{_Q}.diffusion_ql.diffusion_ql:DiffusionQLConfig",
        OFFLINE_Q,
        "diffusion_ql",
        {"policy": "ddpm"},
        "Diffusion-QL, DDPM actor (T=5, VP)",
    ),
    AlgorithmSpec(
        "diffusion_ql_flow",
        f"{_Q}.diffusion_ql.diffusion_ql:DiffusionQLConfig",
        OFFLINE_Q,
        "diffusion_ql_flow",
        {"policy": "flow"},
        "Diffusion-QL, flow-matching actor",
    ),
    AlgorithmSpec(
        "idql", f"{_Q}.idql.idql:IDQLConfig", OFFLINE_Q, "idql", {}, "IDQL-A (IQL critics)"
    ),
    AlgorithmSpec("dac", f"{_Q}.dac.dac:DACConfig", OFFLINE_Q, "dac", {}, "Diffusion Actor-Critic"),
    AlgorithmSpec("fql", f"{_Q}.fql.fql:FQLConfig", OFFLINE_Q, "fql", {}, "Flow Q-Learning"),
    AlgorithmSpec(
        "diffusion_bc",
        f"{_Q}.bc.diffusion_bc:DiffusionBCConfig",
        PRETRAIN,
        "DiffusionBC",
        description="diffusion/flow behaviour cloning (pretraining)",
    ),
    AlgorithmSpec(
        "dppo",
        f"{_Q}.dppo.dppo:DPPOConfig",
        FINETUNE,
        "DPPO",
        description="DPPO: PPO on the denoising chain of a pretrained diffusion policy",
    ),
    # The Gaussian baseline uses RLlib's own BC and PPO configs (no knobs of ours).
    AlgorithmSpec(
        "gaussian_bc",
        "ray.rllib.algorithms.bc:BCConfig",
        PRETRAIN,
        "GaussianBC",
        description="Gaussian-policy BC (the DPPO paper's baseline)",
    ),
    AlgorithmSpec(
        "gaussian_ppo",
        "ray.rllib.algorithms.ppo:PPOConfig",
        FINETUNE,
        "GaussianPPO",
        description="RLlib PPO from a Gaussian BC policy (baseline)",
    ),
):
    register(_spec)
