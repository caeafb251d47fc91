"""Ray Tune sweeps over this package's RLlib algorithms (``rllib-diffusion tune``).

A sweep is a Python module (``tune_configs/*.py``) that defines

    def make_sweep(args: SweepArgs) -> TuneSweep

which returns the trainable (an RLlib ``Algorithm`` class such as ``DPPO``), the search
space (an ``AlgorithmConfig`` whose fields hold ``tune.loguniform`` / ``tune.choice``
domains), scheduler, metric, stop criteria, ``CheckpointConfig`` and how to describe a
trial's checkpoint (the ``rllib_diffusion.json`` meta that ``evaluate`` needs).
:func:`run_sweep` runs it with ``tune.Tuner(...).fit()`` (or ``Tuner.restore`` with
``resume=True``), then exports the best trial's latest checkpoint, with that meta, to
``<storage>/<name>/best_checkpoint`` and writes ``<storage>/<name>/sweep_summary.json``.

Nothing here imports ``ray`` at module level; the CLI parser imports this module.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import math
import os
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
#: Mean return of the exploring policy over the last episodes (every iteration).
TRAIN_RETURN = "env_runners/episode_return_mean"
#: Mean return of the deterministic evaluation (only on evaluation iterations).
EVAL_RETURN = "evaluation/env_runners/episode_return_mean"
#: True env steps of DPPO (decisions × executed actions).
DPPO_ENV_STEPS = f"{M.DPPO_NAMESPACE}/{M.ENV_STEPS}"


def learner_metric(name: str) -> str:
    """Result path of a per-module learner metric (``rllib_diffusion.metrics`` names)."""
    return f"learners/default_policy/{name}"


class SweepError(ConfigError):
    """A sweep cannot be built, run, resumed or exported as asked (shown as one line)."""


# --------------------------------------------------------------------------- sweep API
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

    def settings(self, cls: type, **defaults: Any) -> Any:
        """Build settings dataclass ``cls``: ``defaults`` (the sweep's), then ``overrides``.

        Override strings are parsed as Python literals (``1e-4``, ``32,32``, ``None``,
        ``true``) and checked against the field's type.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = dict(defaults)
        for key, raw in self.overrides.items():
            if key not in names:
                raise ConfigError(
                    f"--set {key}=...: {cls.__name__} has no field {key!r}; "
                    f"allowed: {', '.join(sorted(names))}."
                )
            kwargs[key] = coerce_value(raw, hints[key], f"--set {key}={raw}")
        return cls(**kwargs)


@dataclass
class TuneSweep:
    """Everything :func:`run_sweep` needs to run one sweep.

    Attributes:
        trainable: RLlib ``Algorithm`` subclass (Tune runs it as a class trainable).
        param_space: ``AlgorithmConfig`` (or its ``to_dict()``) holding Tune domains.
        metric / mode: what the scheduler optimises and the best trial is chosen by
            (its value in each trial's last result), e.g.
            ``"env_runners/episode_return_mean"``, ``"max"``.
        checkpoint_meta: resolved trial config (``AlgorithmConfig.to_dict()`` form) →
            the ``rllib_diffusion.json`` meta of that trial's checkpoints (algorithm,
            env, policy config) — see :func:`dppo_checkpoint_meta` and friends.
        scheduler: a ``TrialScheduler`` built without metric/mode (Tune passes them).
        search_alg: optional ``Searcher`` (default: random / grid from the domains).
        num_samples: trials (``SweepArgs.num_samples`` overrides it in the module).
        stop: Tune stop criteria, e.g. ``{"training_iteration": 100}``.
        checkpoint_config: ``tune.CheckpointConfig``; keep ``checkpoint_at_end=True``
            so that every finished or early-stopped trial has a final checkpoint.
        max_concurrent_trials: cap on running trials (offline sweeps: Ray Data actors
            run outside the trials' placement groups and need spare CPUs).
        report_metrics: result keys shown in the progress table besides ``metric``.
        description: one line shown when the sweep starts.
    """

    trainable: type
    param_space: Any
    metric: str
    mode: str
    checkpoint_meta: Callable[[dict[str, Any]], dict[str, Any]]
    scheduler: Any = None
    search_alg: Any = None
    num_samples: int = 4
    stop: dict[str, Any] | None = None
    checkpoint_config: Any = None
    max_concurrent_trials: int | None = None
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


# ----------------------------------------------------------------------- module loading
def load_sweep_module(spec: str) -> types.ModuleType:
    """Load a sweep module given as a file path (``tune_configs/dppo_hopper.py``), a name
    in ``tune_configs/`` (``dppo_hopper``, looked up in the working directory, then next
    to this package), or an importable dotted name (``my_sweeps.hopper``)."""
    path = _sweep_path(spec)
    if path is None:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as err:
            if err.name is None or not spec.startswith(err.name):
                raise  # the module exists but one of its own imports is missing
            raise FileNotFoundError(
                f"Sweep config {spec!r} not found: not a file, not in "
                f"{' or '.join(str(d) for d in _sweep_dirs())}, and not an importable "
                f"module. Available: {', '.join(available_sweeps()) or 'none'}."
            ) from None
    else:
        name = f"rllib_diffusion_sweeps.{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"Sweep config '{path}' is not a Python module (.py file).")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    if not callable(getattr(module, SWEEP_FUNCTION, None)):
        raise ConfigError(
            f"Sweep config '{getattr(module, '__file__', spec)}' defines no "
            f"{SWEEP_FUNCTION}(args) function; see {SWEEP_DIR}/README.md."
        )
    # Functions defined in a sweep module (e.g. PBT explore hooks) end up in Tune's
    # pickled experiment state: pickle them by value so a resume can unpickle them.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _sweep_dirs() -> list[Path]:
    here = Path.cwd() / SWEEP_DIR
    repo = Path(__file__).resolve().parents[1] / SWEEP_DIR
    return [here] if here.resolve() == repo.resolve() else [here, repo]


def _sweep_path(spec: str) -> Path | None:
    """The file behind ``spec`` or None when it should be imported as a module."""
    looks_like_path = spec.endswith(".py") or os.sep in spec or "/" in spec
    if looks_like_path:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Sweep config file not found: '{spec}'. "
                f"Available in {SWEEP_DIR}/: {', '.join(available_sweeps()) or 'none'}."
            )
        return path
    if "." not in spec:
        for d in _sweep_dirs():
            if (d / f"{spec}.py").is_file():
                return d / f"{spec}.py"
    return None


def available_sweeps() -> list[str]:
    """Names of the sweep modules in ``tune_configs/``."""
    names: set[str] = set()
    for d in _sweep_dirs():
        if d.is_dir():
            names |= {p.stem for p in d.glob("*.py") if not p.name.startswith("_")}
    return sorted(names)


def build_sweep(spec: str, args: SweepArgs) -> TuneSweep:
    """Load the sweep module ``spec`` and call its ``make_sweep(args)``."""
    module = load_sweep_module(spec)
    sweep = getattr(module, SWEEP_FUNCTION)(args)
    if not isinstance(sweep, TuneSweep):
        raise ConfigError(
            f"{module.__name__}.{SWEEP_FUNCTION}() returned {type(sweep).__name__}, "
            "expected rllib_diffusion.tuning.TuneSweep."
        )
    sweep.source = getattr(module, "__file__", None) or spec
    if sweep.mode not in ("min", "max"):
        raise ConfigError(f"TuneSweep.mode must be 'min' or 'max', got {sweep.mode!r}.")
    return sweep


# ------------------------------------------------------------------------------ running
def run_sweep(
    spec: str,
    args: SweepArgs,
    *,
    storage_path: str = "runs/tune",
    name: str | None = None,
    resume: bool = False,
    export_dir: str | None = None,
    max_concurrent_trials: int | None = None,
    verbose: int = 1,
    callbacks: list[Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep ``spec``; export the best checkpoint; return the summary.

    Args:
        spec: sweep module (path, name in ``tune_configs/`` or dotted module name).
        args: what the sweep module is built from (same values again when resuming).
        storage_path: local directory or URI (``s3://…``, ``gs://…``) for
            ``RunConfig.storage_path``; the experiment lives in ``<storage_path>/<name>``.
        name: experiment name (default: the sweep module's name).
        resume: continue ``<storage_path>/<name>`` with ``Tuner.restore`` (unfinished
            trials continue, errored trials restart from their last checkpoint).
        export_dir: where the best checkpoint goes (default
            ``<storage_path>/<name>/best_checkpoint``).
        max_concurrent_trials: overrides the sweep's cap.
        verbose: Tune's output verbosity (0 silent, 1 status table, 2 every result).
        callbacks: extra Tune callbacks (first run only; used by tests).
        command: the command line, recorded in the summary and checkpoint meta.
    """
    from ray import tune

    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    limit_threads()
    sweep = build_sweep(spec, args)
    name = name or _default_name(spec)
    storage = _storage_root(storage_path)
    exp_path = _join(storage, name)
    init_ray()
    # Tune's default ("AIR") output prints every trial's full RLlib config (hundreds of
    # keys); the classic CLIReporter shows only the searched keys and chosen metrics.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    exists = tune.Tuner.can_restore(exp_path)
    if resume and not exists:
        raise SweepError(f"Nothing to resume at '{exp_path}' (no tuner.pkl); run without --resume.")
    if not resume and exists:
        raise SweepError(
            f"Experiment '{exp_path}' already exists; pass --resume to continue it or "
            "choose another --name."
        )
    print(
        f"[tune] {'resuming' if resume else 'starting'} sweep {name!r} "
        f"({sweep.description or spec}); metric {sweep.metric} ({sweep.mode}); "
        f"searching {', '.join(sweep.searched_keys()) or 'nothing'}; storage {exp_path}",
        flush=True,
    )
    tuner = _make_tuner(
        sweep, name, storage, exp_path, resume, max_concurrent_trials, verbose, callbacks
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started

    summary = export_best(grid, sweep, exp_path, export_dir=export_dir, command=command)
    summary.update(wall_seconds=wall, resumed=resume)
    write_json(_join(exp_path, SUMMARY_FILE), summary)
    _print_summary(summary)
    return summary


def _make_tuner(
    sweep: TuneSweep,
    name: str,
    storage: str,
    exp_path: str,
    resume: bool,
    max_concurrent_trials: int | None,
    verbose: int,
    callbacks: list[Any] | None,
) -> Any:
    """A new ``tune.Tuner`` for ``sweep``, or ``Tuner.restore`` of ``exp_path``."""
    from ray import tune

    if resume:
        # The same param space again: Tune keeps non-primitive config values (classes,
        # functions) out of its saved state and resolves them from this one.
        return tune.Tuner.restore(
            exp_path,
            trainable=sweep.trainable,
            param_space=sweep.param_dict(),
            resume_errored=True,
        )
    return tune.Tuner(
        sweep.trainable,
        param_space=sweep.param_space,
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=sweep.scheduler,
            search_alg=sweep.search_alg,
            num_samples=sweep.num_samples,
            max_concurrent_trials=max_concurrent_trials or sweep.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            stop=sweep.stop,
            checkpoint_config=sweep.checkpoint_config,
            callbacks=callbacks,
            progress_reporter=_reporter(sweep),
            verbose=verbose,
        ),
    )


def export_best(
    grid: Any,
    sweep: TuneSweep,
    exp_path: str,
    *,
    export_dir: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Pick the best trial of ``grid`` (a ``ResultGrid``), export its latest checkpoint
    with our meta, and return the sweep summary (every trial's row, the best one)."""
    from rllib_diffusion.utils.runtime import run_metadata

    trials = [_trial_row(r, sweep) for r in grid]
    unfinished = _unfinished_trials(exp_path, sweep)
    errored = [t["trial_id"] for t in trials if t["error"]]
    best_row = _best_trial(trials, sweep.mode)
    if best_row is None:
        raise SweepError(
            f"No trial of '{exp_path}' reported a finite {sweep.metric!r} and saved a "
            f"checkpoint ({len(errored)} of {len(trials)} errored); nothing to export. "
            "Check the metric name and the trial logs."
        )
    best = next(r for r in grid if _trial_id(r) == best_row["trial_id"])
    tune_meta = {
        "experiment": exp_path,
        "sweep": sweep.source,
        "trial_id": best_row["trial_id"],
        "trial_path": best.path,
        "source_checkpoint": best.checkpoint.path,
        "metric": sweep.metric,
        "mode": sweep.mode,
        "metric_value": best_row["metric_value"],
        "training_iteration": best_row["training_iteration"],
        # The exported checkpoint's own iteration and metric (equal to the above for
        # finished trials; an interrupted trial may not have saved its last iteration).
        **_checkpoint_result(best, sweep.metric),
        "config": best_row["config"],
        "experiment_complete": not unfinished,
    }
    run = run_metadata()
    meta = {**sweep.checkpoint_meta(best.config), "tune": tune_meta, "command": command, "run": run}
    dest = export_dir or _join(exp_path, BEST_CHECKPOINT_DIR)
    return {
        "experiment": exp_path,
        "sweep": sweep.source,
        "description": sweep.description,
        "metric": sweep.metric,
        "mode": sweep.mode,
        "searched": sweep.searched_keys(),
        "num_trials": len(trials),
        "errored_trials": errored,
        "unfinished_trials": unfinished,
        "best": best_row,
        "best_checkpoint": export_checkpoint(best.checkpoint, dest, meta),
        "trials": trials,
        "command": command,
        "run": run,
    }


def _default_name(spec: str) -> str:
    """``tune_configs/dppo_hopper.py``, ``dppo_hopper``, ``pkg.dppo_hopper`` → dppo_hopper."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        return Path(spec).stem
    return spec.rsplit(".", 1)[-1]


def _reporter(sweep: TuneSweep) -> Any:
    """Tune's CLIReporter: searched keys, the sweep metric and its report columns."""
    from ray.tune import CLIReporter

    columns = {"training_iteration": "iter", sweep.metric: _short(sweep.metric)}
    for key in sweep.report_metrics:
        columns.setdefault(key, _short(key))
    columns["time_total_s"] = "seconds"
    return CLIReporter(
        metric_columns=columns,
        parameter_columns={k: _short(k) for k in sweep.searched_keys()},
        max_report_frequency=30,
        sort_by_metric=True,  # by TuneConfig's metric / mode
    )


def _short(key: str) -> str:
    """Column title: the key without namespaces Tune tables need not repeat."""
    for prefix in ("_model_config/", "env_runners/", "learners/default_policy/"):
        key = key.replace(prefix, "")
    return key.replace("evaluation/episode_return_mean", "eval_return_mean")


def _storage_root(storage_path: str) -> str:
    if _is_uri(storage_path):
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve())


def _is_uri(path: str) -> bool:
    return "://" in str(path)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if _is_uri(base) else str(Path(base, *parts))


def _trial_id(result: Any) -> str | None:
    return (result.metrics or {}).get("trial_id")


def _metric(metrics: dict[str, Any], key: str) -> Any:
    """``metrics[key]`` where ``key`` is a ``/``-path into the nested result."""
    if key in metrics:
        return metrics[key]
    node: Any = metrics
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _trial_row(result: Any, sweep: TuneSweep) -> dict[str, Any]:
    from ray.tune.utils import flatten_dict

    metrics = result.metrics or {}
    config = flatten_dict(result.config or {}, delimiter="/")
    return {
        "trial_id": _trial_id(result),
        "path": result.path,
        "config": {k: config.get(k) for k in sweep.searched_keys()},
        "metric_value": _finite(_metric(metrics, sweep.metric)),
        "training_iteration": metrics.get("training_iteration"),
        "has_checkpoint": result.checkpoint is not None,
        "error": repr(result.error) if result.error else None,
    }


def _checkpoint_result(result: Any, metric: str) -> dict[str, Any]:
    """Iteration and metric recorded with ``result.checkpoint`` (the exported one)."""
    for ckpt, metrics in result.best_checkpoints or []:
        if ckpt.path == result.checkpoint.path:
            return {
                "checkpoint_iteration": metrics.get("training_iteration"),
                "checkpoint_metric_value": _finite(_metric(metrics, metric)),
            }
    return {"checkpoint_iteration": None, "checkpoint_metric_value": None}


def _best_trial(rows: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The trial whose last ``metric`` is best, among trials with a checkpoint."""
    ok = [r for r in rows if r["metric_value"] is not None and r["has_checkpoint"]]
    if not ok:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda r: sign * r["metric_value"])


def _unfinished_trials(exp_path: str, sweep: TuneSweep) -> list[str]:
    """Trials an interrupted run left to do: saved as neither TERMINATED nor ERROR, plus
    ``"<not started: N>"`` for samples never created. ``fit()`` marks running trials
    TERMINATED in memory when stopped by Ctrl+C, so read the state saved on storage."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(exp_path).trials
    left = [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]
    missing = _expected_trials(sweep) - len(trials)
    if missing > 0:
        left.append(f"<not started: {missing}>")
    return left


def _expected_trials(sweep: TuneSweep) -> int:
    """num_samples × the size of the grid (``tune.grid_search`` entries)."""
    from ray.tune.utils import flatten_dict

    grid = 1
    for key, value in flatten_dict(sweep.param_dict(), delimiter="/").items():
        if key.endswith("/grid_search") and isinstance(value, list):
            grid *= len(value)
    return sweep.num_samples * grid


def _print_summary(s: dict[str, Any]) -> None:
    best = s["best"]
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best["config"].items())
    print(
        f"[tune] {s['num_trials']} trials in {s['wall_seconds']:.0f}s "
        f"({len(s['errored_trials'])} errored, {len(s['unfinished_trials'])} unfinished)",
        flush=True,
    )
    print(
        f"[tune] best trial {best['trial_id']} (iteration {best['training_iteration']}): "
        f"{s['metric']} = {best['metric_value']:.4g}; {params}",
        flush=True,
    )
    print(f"[tune] best checkpoint: {s['best_checkpoint']}", flush=True)
    if _is_uri(s["best_checkpoint"]):
        print("[tune] download it, then: rllib-diffusion evaluate --checkpoint <local copy>")
    else:
        print(f"[tune] evaluate it: rllib-diffusion evaluate --checkpoint {s['best_checkpoint']}")
    if s["errored_trials"] or s["unfinished_trials"]:
        print(
            "[tune] some trials did not finish; rerun the same command with --resume to "
            "continue them (errored trials restart from their last checkpoint).",
            flush=True,
        )


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- export
def export_checkpoint(checkpoint: Any, dest: str, meta: dict[str, Any]) -> str:
    """Copy a Tune ``Checkpoint`` to ``dest`` (local path or URI) with our meta file.

    Local: written to a temp dir next to ``dest``, then renamed into place (an existing
    export is replaced only once the new one is complete). URI: uploaded file by file
    with the meta file last, so a partial upload is never taken for a checkpoint.
    """
    from rllib_diffusion.checkpoints import META_FILE, CheckpointMeta, write_checkpoint_dir

    text = CheckpointMeta.from_dict(meta, where=dest).to_json()
    if _is_uri(dest):
        import pyarrow.fs

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.to_directory(tmp)
            fs, path = pyarrow.fs.FileSystem.from_uri(dest)
            fs.create_dir(path, recursive=True)
            fs.delete_dir_contents(path, missing_dir_ok=True)
            pyarrow.fs.copy_files(tmp, path, destination_filesystem=fs)
            with fs.open_output_stream(f"{path}/{META_FILE}") as f:
                f.write(text.encode())
        return dest
    return write_checkpoint_dir(dest, lambda tmp: checkpoint.to_directory(str(tmp)), text)


def write_json(dest: str, obj: Any) -> str:
    """Write JSON to a local path (atomically) or a URI."""
    if not _is_uri(dest):
        from rllib_diffusion.utils.io import write_json_atomic

        return write_json_atomic(dest, obj)
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(dest)
    with fs.open_output_stream(path) as f:
        f.write(_json_text(obj).encode())
    return dest


def _json_text(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, default=str)


# --------------------------------------------------------- checkpoint meta per algorithm
def _model_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("_model_config") or config.get("model_config") or {}


def dppo_checkpoint_meta(settings: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Meta of DPPO trial checkpoints, as ``finetune`` writes it; ``settings`` is the
    sweep's base ``FinetuneSettings`` (searched values are in the trial config)."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        from rllib_diffusion.algorithms.dppo.dppo import ALGORITHM_NAME

        model = _model_config(config)
        policy = model["policy"]
        return {
            "algorithm": ALGORITHM_NAME,
            "env_id": policy.get("env_id"),
            "policy_config": policy,
            "dppo_model_config": model,
            "settings": dataclasses.asdict(settings),
            "pretrained_checkpoint": config.get("pretrained_checkpoint"),
        }

    return meta


def diffusion_bc_checkpoint_meta(settings: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Meta of DiffusionBC trial checkpoints, as ``pretrain`` writes it."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        from rllib_diffusion.algorithms.bc.pretrain import ALGORITHM_NAME

        policy = _model_config(config)
        return {
            "algorithm": ALGORITHM_NAME,
            "env_id": policy.get("env_id"),
            "policy_config": policy,
            "settings": dataclasses.asdict(settings),
        }

    return meta


def offline_checkpoint_meta(settings: Any, env_id: str) -> Callable[[dict[str, Any]], dict]:
    """Meta of offline-RL trial checkpoints (Diffusion-QL, IDQL, DAC, FQL), as
    ``rllib-diffusion offline`` writes it."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        from rllib_diffusion.algorithms.diffusion_ql.train import offline_env_config

        return {
            "algorithm": settings.algo,
            "env_id": env_id,
            "env_config": offline_env_config(env_id),
            "model_config": _model_config(config),
            "hyperparameters": {k: config.get(k) for k in ("eta", "grad_clip", "tau")},
            "settings": dataclasses.asdict(settings),
        }

    return meta


# --------------------------------------------------------------- shared sweep helpers
def dppo_sweep_config(args: SweepArgs, *, env_id: str | None = None, **defaults: Any):
    """``(DPPOConfig, FinetuneSettings)`` built from ``args.checkpoint``: the sweep's
    ``defaults``, then the user's ``--set`` overrides; checks the checkpoint's env."""
    from rllib_diffusion.algorithms.dppo.finetune import (
        FinetuneSettings,
        dppo_config_from_pretrained,
    )
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    checkpoint = args.require("checkpoint", "a DiffusionBC checkpoint from `pretrain`")
    meta = read_checkpoint_meta(checkpoint)
    policy = meta.get("policy_config") or {}
    if "denoising_steps" in policy and "ft_denoising_steps" not in defaults:
        # Sweeps usually search K_ft; the fixed default must fit short chains too.
        k = int(policy["denoising_steps"])
        defaults["ft_denoising_steps"] = min(FinetuneSettings.ft_denoising_steps, k)
    settings = args.settings(FinetuneSettings, checkpoint=checkpoint, seed=args.seed, **defaults)
    config = dppo_config_from_pretrained(settings.checkpoint, settings)
    found = meta.get("env_id")
    if env_id is not None and found != env_id:
        raise ConfigError(
            f"This sweep is for {env_id}; checkpoint '{settings.checkpoint}' is a {found} "
            f"policy. Copy the sweep module and set its env (see {SWEEP_DIR}/README.md)."
        )
    return config, settings


def ft_denoising_choices(config: Any) -> list[int]:
    """K_ft candidates for a DPPO sweep: K/4, K/2 and K of the sampled chain."""
    policy = config.model_config["policy"]
    k = int(policy.get("ddim_steps") or policy["denoising_steps"])
    return sorted({v for v in (k // 4, k // 2, k) if v >= 1})


def offline_trial_resources(config: Any, cpus: float = 0.5) -> Any:
    """Reserve ``cpus`` (< 1) per offline trial so Ray Data fits beside it.

    Ray Data's read tasks (1 CPU each) and pre-learner actor (0.25 CPU) run outside the
    trial's placement group; a trial reserving a whole CPU on a 2-CPU machine leaves
    them waiting forever. The trial process still uses a full core when it computes.
    """
    return config.resources(num_cpus_for_main_process=cpus).learners(num_cpus_per_learner=cpus)


def asha_sweep(
    *, max_t: int, num_samples: int, checkpoint_frequency: int, **fields: Any
) -> TuneSweep:
    """A :class:`TuneSweep` with ASHA on ``training_iteration`` (grace ``max_t // 10``,
    reduction 3), stopped at ``max_t`` iterations, keeping the 2 latest checkpoints
    (every ``checkpoint_frequency`` iterations) plus the final one. ``fields``: the
    remaining ``TuneSweep`` fields (trainable, param_space, metric, checkpoint_meta ...).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    return TuneSweep(
        mode=fields.pop("mode", "max"),
        scheduler=ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=max(1, max_t // 10),
            reduction_factor=3,
        ),
        num_samples=num_samples,
        stop={"training_iteration": max_t},
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_frequency=checkpoint_frequency, checkpoint_at_end=True
        ),
        **fields,
    )


def dppo_asha_sweep(
    args: SweepArgs,
    *,
    env_id: str,
    search: dict[str, Any],
    max_iterations: int = 100,
    num_samples: int = 8,
    **defaults: Any,
) -> TuneSweep:
    """The DPPO fine-tuning sweep of ``tune_configs/``: DPPO from ``args.checkpoint``
    (which must be an ``env_id`` policy), ``defaults`` (``FinetuneSettings`` fields; a
    10-episode evaluation and a checkpoint every 10 iterations unless given; then the
    user's ``--set``), the ``search`` space of ``config.training`` keys plus K_ft over
    K/4, K/2 and K; ASHA on the training return."""
    from ray import tune

    from rllib_diffusion.algorithms.dppo import DPPO

    defaults = {"eval_interval": 10, "eval_episodes": 10, "checkpoint_interval": 10, **defaults}
    config, settings = dppo_sweep_config(args, env_id=env_id, **defaults)
    config.training(**search)
    config.rl_module(
        model_config={
            **config.model_config,
            "ft_denoising_steps": tune.choice(ft_denoising_choices(config)),
        }
    )
    return asha_sweep(
        max_t=args.max_iterations or max_iterations,
        num_samples=args.num_samples or num_samples,
        checkpoint_frequency=settings.checkpoint_interval,
        trainable=DPPO,
        param_space=config,
        metric=TRAIN_RETURN,
        checkpoint_meta=dppo_checkpoint_meta(settings),
        report_metrics=[EVAL_RETURN, DPPO_ENV_STEPS, learner_metric(M.APPROX_KL)],
        description=f"DPPO on {env_id}, ASHA over {', '.join(search)}, K_ft",
    )


def offline_sweep_settings(args: SweepArgs, settings_class: type, max_t: int) -> Any:
    """Settings of a DiffusionBC/offline sweep trial: ``--dataset`` required, 1,000
    gradient steps per iteration, a 5-episode evaluation every iteration (the sweep
    metric), ``gradient_steps`` covering ``max_t`` iterations."""
    dataset_id = args.require("dataset", "Minari id, dataset directory, .npz or .hdf5")
    s = args.settings(
        settings_class,
        dataset=dataset_id,
        env_id=args.env_id,
        download=args.download,
        steps_per_iteration=1000,
        eval_interval=1,
        eval_episodes=5,
        seed=args.seed,
    )
    s.gradient_steps = max_t * s.steps_per_iteration
    return s
