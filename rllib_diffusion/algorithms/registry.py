"""Registry of algorithms, above the families: name → :class:`AlgorithmSpec`.

A spec names the ``AlgorithmConfig`` class by dotted path (imported only when used, so
that looking a name up imports one algorithm, not its siblings), the run kind (which
driver trains it) and the ``algorithm`` name its checkpoints carry. Everything else
(knobs and their defaults, per-task paper values, networks, module and learner) is the
config class's. Other families add themselves with :func:`register`.
"""

from __future__ import annotations

import dataclasses
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
#: Kind of data generators whose checkpoints roll a learning policy out during offline
#: training (``rllib-diffusion offline --dydiff-model``).
GENERATOR = "generator"


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
        model_config: ``"package.module:Dataclass"`` of a fine-tuning algorithm's model
            config: its fields (but ``policy``, the pretrained policy) are knobs too.
        family: ``"package.module:Class"`` of the :class:`~rllib_diffusion.run_loop.RunFamily`
            that runs a fine-tuning algorithm from ``FinetuneSettings``
            (``rllib-diffusion finetune --algo NAME``).
        run_defaults: run-control settings whose default for this algorithm is its
            official code's rather than the shared one (e.g. DSRL's 4 training envs,
            ``{"num_envs_per_env_runner": 4}``); a value the user gives wins.
        rollouts: ``"package.module:Class"`` of a generator's rollout source (built from
            a checkpoint path; ``generate(policy, start_obs, knobs, seed=...)``), used by
            :mod:`rllib_diffusion.algorithms.regenerated_rollouts`.
        replay_generator: ``"package.module:Class"`` of a generator's online state
            (built from the host's config; retrained on a replay, it makes the synthetic
            pool of :mod:`rllib_diffusion.algorithms.synthetic_replay`: online SynthER).
    """

    name: str
    config: str
    kind: str
    checkpoint_algorithm: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    model_config: str = ""
    family: str = ""
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    rollouts: str = ""
    replay_generator: str = ""

    @property
    def config_class(self) -> type:
        return _load(self.config)

    @property
    def rollouts_class(self) -> type:
        if not self.rollouts:
            raise ConfigError(f"algo={self.name!r} does not roll policies out.")
        return _load(self.rollouts)

    @property
    def replay_generator_class(self) -> type:
        if not self.replay_generator:
            raise ConfigError(f"algo={self.name!r} does not generate from a replay.")
        return _load(self.replay_generator)

    @property
    def model_config_class(self) -> type | None:
        return _load(self.model_config) if self.model_config else None

    @property
    def family_class(self) -> type:
        if not self.family:
            raise ConfigError(f"algo={self.name!r} is not run by `rllib-diffusion finetune`.")
        return _load(self.family)

    def knobs(self) -> list:
        """Declared knobs (:func:`rllib_diffusion.knobs.declared_knobs`) of the config
        (less those the run sets itself, its ``RUN_SET_KNOBS``), then the model config's
        fields."""
        return _declared(self.config, self.model_config)

    def split_knobs(self, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(training, model)`` knobs of ``given``, after :meth:`check_knobs`."""
        self.check_knobs(given)
        model_cls = self.model_config_class
        model_fields = {f.name for f in dataclasses.fields(model_cls)} if model_cls else set()
        model = {k: v for k, v in given.items() if k in model_fields}
        return {k: v for k, v in given.items() if k not in model}, model

    def check_knobs(self, given: Mapping[str, Any]) -> None:
        """One-line ``ConfigError`` if ``given`` holds a knob this algorithm does not use."""
        from rllib_diffusion.knobs import check_knobs

        check_knobs(self.name, self.knobs(), dict(given))


#: Specs by ``(name, kind)``: a name may be registered once per kind (``idql`` is the
#: offline Q-learner and the fine-tuning algorithm of ``finetune --algo idql``).
_REGISTRY: dict[tuple[str, str], AlgorithmSpec] = {}


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add ``spec`` (a name registered twice for one kind is a programming error)."""
    if (spec.name, spec.kind) in _REGISTRY:
        raise ValueError(f"algorithm {spec.name!r} is already registered.")
    _REGISTRY[(spec.name, spec.kind)] = spec
    return spec


def get(name: str, kind: str | None = None) -> AlgorithmSpec:
    """The spec of ``name`` of ``kind`` (None: the first registered under ``name``); a
    one-line ``ConfigError`` listing the names if unknown."""
    found = [s for (n, k), s in _REGISTRY.items() if n == name and kind in (None, k)]
    if not found:
        raise ConfigError(f"algo={name!r}; allowed: {', '.join(sorted(names(kind)))}.")
    return found[0]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names (of one ``kind``), in registration order."""
    return tuple(dict.fromkeys(n for n, k in _REGISTRY if kind is None or k == kind))


def by_checkpoint_algorithm(algorithm: str | None) -> AlgorithmSpec | None:
    """The spec whose checkpoints carry ``meta["algorithm"] == algorithm`` (or None)."""
    return next((s for s in _REGISTRY.values() if s.checkpoint_algorithm == algorithm), None)


def _load(dotted: str) -> type:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


@functools.cache
def _declared(config: str, model_config: str) -> list:
    from rllib_diffusion.knobs import declared_knobs, settings_knobs

    cls = _load(config)
    run_set = getattr(cls, "RUN_SET_KNOBS", ())
    knobs = [k for k in declared_knobs(cls) if k.name not in run_set]
    if model_config:
        knobs += settings_knobs(_load(model_config), exclude=("policy",))
    return knobs


def merged_knobs(
    algorithms: tuple[str, ...], kind: str | None = None
) -> list[tuple[Any, tuple[str, ...]]]:
    """Every knob of ``algorithms`` (of ``kind``) once, with the algorithms declaring it:
    ``[(Knob, (algo, ...)), ...]`` (the ``Knob`` of the first such algorithm; its help
    merges the algorithms' texts and, where they differ, lists each one's default)."""
    table: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name in algorithms:
        for knob in get(name, kind).knobs():
            table.setdefault(knob.name, (knob, {}))[1][name] = knob
    out = []
    for knob, per_algo in table.values():
        by_text: dict[str, list[str]] = {}
        for algo, k in per_algo.items():
            by_text.setdefault(k.help, []).append(algo)
        text = knob.help
        if len(by_text) > 1:  # e.g. eta: Diffusion-QL's Q weight, DAC's η₀
            text = " ".join(f"{', '.join(a)}: {t}" for t, a in by_text.items())
        if len({repr(k.default) for k in per_algo.values()}) > 1:  # e.g. ema_decay
            shown = "; ".join(f"{a} {_shown(k.default)}" for a, k in per_algo.items())
            text = f"{text} (defaults: {shown})"
        out.append((dataclasses.replace(knob, help=text), tuple(per_algo)))
    return out


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def finetune_names() -> tuple[str, ...]:
    """Algorithms ``rllib-diffusion finetune --algo`` runs (those naming a run family)."""
    return tuple(n for n in names(FINETUNE) if get(n, FINETUNE).family)


def all_knob_names(kind: str = OFFLINE_Q) -> frozenset[str]:
    """Every knob some registered algorithm of ``kind`` declares."""
    return frozenset(k.name for n in names(kind) for k in get(n, kind).knobs())


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
        "td3bc",
        f"{_Q}.td3bc.td3bc:TD3BCConfig",
        OFFLINE_Q,
        "td3bc",
        {},
        "TD3+BC (deterministic actor, BC-regularised)",
    ),
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
        model_config=f"{_Q}.dppo.dppo_rl_module:DPPOModelConfig",
        family=f"{_Q}.dppo.finetune:DPPOFamily",
    ),
    AlgorithmSpec(
        "reinflow",
        f"{_Q}.dppo.reinflow:ReinFlowConfig",
        FINETUNE,
        "ReinFlow",
        description="ReinFlow: PPO on a flow policy's Euler chain with a learned noise std",
        model_config=f"{_Q}.dppo.reinflow_rl_module:ReinFlowModelConfig",
        family=f"{_Q}.dppo.finetune:DPPOFamily",
    ),
    AlgorithmSpec(
        "dpoer",
        f"{_Q}.dppo.dpoer:DPOERConfig",
        FINETUNE,
        "DPOER",
        description="DPOER: DPPO plus a SAC-style learned temperature (seed 001's variant)",
        model_config=f"{_Q}.dppo.dppo_rl_module:DPPOModelConfig",
        family=f"{_Q}.dppo.finetune:DPPOFamily",
    ),
    AlgorithmSpec(
        "dsrl",
        f"{_Q}.dsrl.dsrl:DSRLConfig",
        FINETUNE,
        "DSRL",
        description="DSRL: SAC over the initial noise of a frozen diffusion/flow policy",
        model_config=f"{_Q}.dsrl.dsrl:DSRLModelConfig",
        family=f"{_Q}.dsrl.finetune:DSRLFamily",
        run_defaults={"num_envs_per_env_runner": 4},  # official: 4 training envs
    ),
    AlgorithmSpec(
        "drwr",
        f"{_Q}.awr.awr:DRWRConfig",
        FINETUNE,
        "DRWR",
        description="DRWR: return-weighted denoising regression on complete episodes",
        model_config=f"{_Q}.awr.awr_rl_module:RWRModelConfig",
        family=f"{_Q}.awr.finetune:RewardWeightedFamily",
    ),
    AlgorithmSpec(
        "dawr",
        f"{_Q}.awr.awr:DAWRConfig",
        FINETUNE,
        "DAWR",
        description="DAWR: advantage-weighted denoising regression on a replay buffer",
        model_config=f"{_Q}.awr.awr_rl_module:AWRModelConfig",
        family=f"{_Q}.awr.finetune:RewardWeightedFamily",
    ),
    AlgorithmSpec(
        "dipo",
        f"{_Q}.qgrad.qgrad:DIPOConfig",
        FINETUNE,
        "DIPO",
        description="DIPO: denoising BC on replay actions improved along the critic's gradient",
        model_config=f"{_Q}.qgrad.qgrad_rl_module:DIPOModelConfig",
        family=f"{_Q}.replay_finetune:ReplayFinetuneFamily",
    ),
    AlgorithmSpec(
        "qsm",
        f"{_Q}.qgrad.qgrad:QSMConfig",
        FINETUNE,
        "QSM",
        description="QSM: the denoiser's score matched to the critic's action gradient",
        model_config=f"{_Q}.qgrad.qgrad_rl_module:QSMModelConfig",
        family=f"{_Q}.replay_finetune:ReplayFinetuneFamily",
    ),
    AlgorithmSpec(
        "dql",
        f"{_Q}.diffusion_ql.finetune:DQLConfig",
        FINETUNE,
        "DQL",
        description="DQL: online Diffusion-QL of the pretrained denoiser from an empty replay",
        model_config=f"{_Q}.pretrained_actor_critic:PretrainedActorCriticConfig",
        family=f"{_Q}.replay_finetune:ReplayFinetuneFamily",
    ),
    AlgorithmSpec(
        "idql",
        f"{_Q}.idql.finetune:IDQLFinetuneConfig",
        FINETUNE,
        "IDQL",
        description="IDQL: online IQL critics + denoising BC from an empty replay, Q-ranked acting",
        model_config=f"{_Q}.idql.finetune:IDQLFinetuneModelConfig",
        family=f"{_Q}.replay_finetune:ReplayFinetuneFamily",
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
    # Data generators (their own commands train them; offline runs roll out with DyDiff's).
    AlgorithmSpec(
        "dydiff",
        f"{_Q}.dydiff.dydiff:DyDiffConfig",
        GENERATOR,
        "DyDiff",
        description="DyDiff segment dynamics model (policy rollouts for offline RL)",
        rollouts=f"{_Q}.dydiff.regenerate:DyDiffRollouts",
    ),
    AlgorithmSpec(
        "synther",
        f"{_Q}.synther.synther:SynthERConfig",
        GENERATOR,
        "SynthER",
        description="SynthER transition generator (synthetic data; online SynthER)",
        replay_generator=f"{_Q}.synther.online:OnlineSynthER",
    ),
    # DiffPPO: `finetune-gaussian` with DiffPPO knobs (no family: not a `finetune --algo`).
    AlgorithmSpec(
        "diffppo",
        "rllib_diffusion.algorithms.gaussian.diffppo:DiffPPOConfig",
        FINETUNE,
        "DiffPPO",
        description="PPO from a Gaussian BC policy with synthetic segments of a diffusion model",
    ),
):
    register(_spec)
