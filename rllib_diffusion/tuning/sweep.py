"""What a sweep is: the arguments a sweep module receives and the :class:`TuneSweep` it
returns (no ``ray`` import at module level; the CLI parser imports this)."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.modules.model_config import ConfigError

#: The function every sweep module defines.
SWEEP_FUNCTION = "make_sweep"
#: Where the best trial's checkpoint goes inside the experiment directory (by default).
BEST_CHECKPOINT_DIR = "best_checkpoint"
#: Summary of a finished (or interrupted) sweep inside the experiment directory.
SUMMARY_FILE = "sweep_summary.json"
#: Directory searched for sweep modules given by name (``dppo_hopper``).
SWEEP_DIR = "tune_configs"

# Paths into an RLlib result dict (as Tune flattens it) for sweep metrics and columns.
#: Mean return of the exploring policy over the episodes that ended this iteration
#: (absent before the first episode, NaN in iterations where none ended).
TRAIN_RETURN = "env_runners/episode_return_mean"
#: Mean return of the deterministic evaluation (only on evaluation iterations).
EVAL_RETURN = "evaluation/env_runners/episode_return_mean"
#: The sweep metric: the last measured return of the sweep's ``metric_source``, on every
#: result (see :mod:`rllib_diffusion.tuning.metric`).
SWEEP_METRIC = f"{M.SWEEP_NAMESPACE}/{M.SWEEP_RETURN}"
#: 1.0 when :data:`SWEEP_METRIC` was measured in this iteration, 0.0 when carried forward.
SWEEP_METRIC_FRESH = f"{M.SWEEP_NAMESPACE}/{M.SWEEP_RETURN_FRESH}"
#: Iteration at which :data:`SWEEP_METRIC` was measured (0: not yet).
SWEEP_METRIC_ITERATION = f"{M.SWEEP_NAMESPACE}/{M.SWEEP_RETURN_ITERATION}"
#: True env steps of DPPO (decisions × executed actions).
DPPO_ENV_STEPS = f"{M.DPPO_NAMESPACE}/{M.ENV_STEPS}"


def learner_metric(name: str) -> str:
    """Result path of a per-module learner metric (``rllib_diffusion.metrics`` names)."""
    return f"learners/default_policy/{name}"


def result_value(result: dict[str, Any], key: str) -> Any:
    """``result[key]`` where ``key`` is a ``/``-path into the nested (or flat) result."""
    if key in result:
        return result[key]
    node: Any = result
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class SweepError(ConfigError):
    """A sweep cannot be built, run, resumed or exported as asked (shown as one line)."""


@dataclass
class SweepArgs:
    """What the user passes to a sweep module (``rllib-diffusion tune`` flags).

    Attributes:
        checkpoint: pretrained checkpoint (DPPO sweeps: a DiffusionBC checkpoint).
        dataset: dataset id or path (DiffusionBC / offline sweeps).
        env_id: env to evaluate in (default: the dataset's / checkpoint's).
        download: let Minari download ``dataset``.
        num_samples: trials to sample (None: the sweep's default).
        max_iterations: iteration budget per trial (None: the sweep's default); sweeps
            use it for both the stop criterion and the scheduler's ``max_t``.
        seed: RNG seed of every trial.
        overrides: ``--set KEY=VALUE`` pairs: fields of the sweep's settings dataclass
            (e.g. ``FinetuneSettings.decisions_per_iteration``) fixed for all trials.
    """

    checkpoint: str | None = None
    dataset: str | None = None
    env_id: str | None = None
    download: bool = False
    num_samples: int | None = None
    max_iterations: int | None = None
    seed: int = 0
    overrides: dict[str, str] = field(default_factory=dict)

    def require(self, name: str, what: str) -> Any:
        """The value of ``name`` or a ConfigError that says which flag is missing."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"this sweep needs --{name.replace('_', '-')} ({what}).")
        return value

    def settings(self, cls: type, *, knobs: Sequence[Any] = (), **defaults: Any) -> Any:
        """Build settings dataclass ``cls``: ``defaults`` (the sweep's), then ``overrides``.

        Names of ``knobs`` (:class:`rllib_diffusion.knobs.Knob`, by name or flag spelling,
        e.g. ``clip_param`` or ``clip``) go into the settings' ``knobs`` dict. Override
        strings are parsed as Python literals (``1e-4``, ``32,32``, ``None``, ``true``)
        and checked against the field's or knob's type.
        """
        from rllib_diffusion.knobs import split_knobs

        names = {f.name for f in dataclasses.fields(cls)} - {"knobs"}
        hints = typing.get_type_hints(cls)
        by_name = {n: k for k in knobs for n in k.names()}
        values = dict(defaults)
        for key, raw in self.overrides.items():
            hint = hints[key] if key in names else getattr(by_name.get(key), "hint", None)
            if hint is None:
                allowed = ", ".join(sorted(names | {k.name for k in knobs}))
                raise ConfigError(
                    f"--set {key}=...: {cls.__name__} has no field {key!r}; allowed: {allowed}."
                )
            values[key] = coerce_value(raw, hint, f"--set {key}={raw}")
        kwargs, chosen = split_knobs(names, list(knobs), values, owner=cls.__name__)
        return cls(**kwargs, **({"knobs": chosen} if knobs or chosen else {}))


@dataclass
class TuneSweep:
    """Everything :func:`~rllib_diffusion.tuning.run.run_sweep` needs to run one sweep.

    Attributes:
        trainable: RLlib ``Algorithm`` subclass (Tune runs it as a class trainable).
        param_space: ``AlgorithmConfig`` (or its ``to_dict()``) holding Tune domains.
        checkpoint_meta: resolved trial config (``AlgorithmConfig.to_dict()`` form) →
            the ``rllib_diffusion.json`` meta of that trial's checkpoints (algorithm,
            env, policy config), e.g. ``algorithms.dppo.sweep.dppo_checkpoint_meta``.
        metric_source: the result path measuring a trial (:data:`EVAL_RETURN` or
            :data:`TRAIN_RETURN`). The sweep installs a callback that reports its last
            measured value as :data:`SWEEP_METRIC` on every iteration (NaN before the
            first measurement, with :data:`SWEEP_METRIC_FRESH` telling whether it was
            measured this iteration); schedulers and the best-trial choice use that.
        metric / mode: what the scheduler optimises and the best trial is chosen by (its
            value in each trial's last result). Default :data:`SWEEP_METRIC`; another key
            must be present in every result (Tune refuses a result without it).
        scheduler: a ``TrialScheduler`` built without metric/mode (Tune passes them);
            use ``tuning.schedulers`` (they skip results whose metric is still unknown).
        search_alg: optional ``Searcher`` (default: random / grid from the domains).
        num_samples: trials (``SweepArgs.num_samples`` overrides it in the module).
        stop: Tune stop criteria, e.g. ``{"training_iteration": 100}``.
        checkpoint_config: ``tune.CheckpointConfig``; keep ``checkpoint_at_end=True``
            so that every finished or early-stopped trial has a final checkpoint.
        max_concurrent_trials: cap on running trials (offline sweeps: Ray Data actors
            run outside the trials' placement groups and need spare CPUs).
        max_failures: restarts of a failed trial from its latest checkpoint before it is
            marked ERROR (Tune ``FailureConfig``; default 1: a lost node or a killed
            process is usually transient, a bug fails again quickly). Other trials go on
            either way (``fail_fast=False``); ``--resume`` retries ERROR trials.
        report_metrics: result keys shown in the progress table besides ``metric``.
        description: one line shown when the sweep starts.
    """

    trainable: type
    param_space: Any
    checkpoint_meta: Callable[[dict[str, Any]], dict[str, Any]]
    metric_source: str | None = EVAL_RETURN
    metric: str = SWEEP_METRIC
    mode: str = "max"
    scheduler: Any = None
    search_alg: Any = None
    num_samples: int = 4
    stop: dict[str, Any] | None = None
    checkpoint_config: Any = None
    max_concurrent_trials: int | None = None
    max_failures: int = 1
    report_metrics: list[str] = field(default_factory=list)
    description: str = ""
    source: str = ""  # set by build_sweep: the module's file

    def param_dict(self) -> dict[str, Any]:
        """The search space as Tune sees it (``AlgorithmConfig.to_dict()``)."""
        space = self.param_space
        return space.to_dict() if hasattr(space, "to_dict") else dict(space)

    def searched_keys(self) -> list[str]:
        """Flattened keys (``a/b``) of the hyperparameters Tune samples."""
        from ray.tune.search.sample import Domain
        from ray.tune.utils import flatten_dict

        flat = flatten_dict(self.param_dict(), delimiter="/")
        keys = {k for k, v in flat.items() if isinstance(v, Domain)}
        keys |= {k[: -len("/grid_search")] for k in flat if k.endswith("/grid_search")}
        return sorted(keys)

    def check(self) -> None:
        """Refuse a mode or metric set-up that cannot work (one-line SweepError)."""
        if self.mode not in ("min", "max"):
            raise SweepError(f"TuneSweep.mode must be 'min' or 'max', got {self.mode!r}.")
        if self.metric == SWEEP_METRIC and not self.metric_source:
            raise SweepError(
                f"TuneSweep.metric is {SWEEP_METRIC!r} but metric_source is unset: name the "
                f"result path that measures a trial (e.g. {EVAL_RETURN!r})."
            )


def coerce_value(raw: str, hint: Any, where: str) -> Any:
    """Parse ``raw`` as a Python literal and check it against the type ``hint``."""
    text = raw.strip()
    if text.lower() in ("true", "false"):
        value: Any = text.lower() == "true"
    elif text.lower() in ("none", "null"):
        value = None
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return None
    if tuple in allowed:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, list):
            value = tuple(value)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if str in allowed and not isinstance(value, str):
        value = text
    if not any(_isinstance(value, t) for t in allowed):
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {raw!r}.")
    return value


def _allowed_types(hint: Any) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(hint) for t in _allowed_types(a))
    if hint is type(None) or hint is None:
        return (type(None),)
    if origin is not None:
        return (origin,)
    return (hint,) if isinstance(hint, type) else (object,)


def _isinstance(value: Any, t: type) -> bool:
    if t is int and isinstance(value, bool):
        return False
    return isinstance(value, t)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def search_model_config(config: Any, model_class: type, **space: Any) -> Any:
    """Search fields of the model config object ``model_class`` (a dataclass with
    ``from_dict``/``to_dict``, e.g. ``DPPOModelConfig``) held in ``config.model_config``.

    Each key must be a field of ``model_class``, and every candidate of a categorical or
    grid domain must give a config that ``model_class`` accepts (its own validation), so
    a bad value fails when the sweep is built, not inside a trial. Returns ``config``.
    """
    base = model_class.from_dict(dict(config.model_config or {})).to_dict()
    names = {f.name for f in dataclasses.fields(model_class)}
    for key, domain in space.items():
        if key not in names:
            raise SweepError(
                f"{model_class.__name__} has no field {key!r} to search; "
                f"fields: {', '.join(sorted(names))}."
            )
        for value in _candidates(domain):
            model_class.from_dict({**base, key: value})
    config.rl_module(model_config={**base, **space})
    return config


def _candidates(domain: Any) -> list[Any]:
    """The finite values of a Tune domain (``tune.choice`` / grid search), else none."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return list(domain["grid_search"])
    return list(getattr(domain, "categories", None) or [])
