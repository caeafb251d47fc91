"""Find and build sweep modules (``tune_configs/*.py`` defining ``make_sweep(args)``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.tuning.sweep import (
    SWEEP_DIR,
    SWEEP_FUNCTION,
    SWEEP_METRIC,
    SweepArgs,
    TuneSweep,
)


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
        except BaseException as err:
            sys.modules.pop(name, None)
            if isinstance(err, Exception):
                raise ConfigError(_where_it_failed(path, err)) from err
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


def _where_it_failed(path: Path, err: Exception) -> str:
    """``Sweep config 'path', line N: <error>`` (the deepest line of ``path`` in the
    traceback; a syntax error's own line)."""
    import traceback

    line = getattr(err, "lineno", None) if isinstance(err, SyntaxError) else None
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    what = err.msg if isinstance(err, SyntaxError) else str(err)
    at = f", line {line}" if line else ""
    return f"Sweep config '{path}'{at}: {type(err).__name__}: {what}"


def _sweep_dirs() -> list[Path]:
    here = Path.cwd() / SWEEP_DIR
    repo = Path(__file__).resolve().parents[2] / SWEEP_DIR
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
    """Load the sweep module ``spec``, call its ``make_sweep(args)`` and, for the sweep
    metric, add the callback that reports it on every iteration (:mod:`.metric`)."""
    module = load_sweep_module(spec)
    try:
        sweep = getattr(module, SWEEP_FUNCTION)(args)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        # A misspelt search-space key or setting (``config.training(actr_lr=...)``).
        raise ConfigError(
            f"{_where_it_failed(Path(module.__file__ or spec), err)}; the algorithm's knobs "
            "are listed by `rllib-diffusion <command> --help`."
        ) from err
    if not isinstance(sweep, TuneSweep):
        raise ConfigError(
            f"{module.__name__}.{SWEEP_FUNCTION}() returned {type(sweep).__name__}, "
            "expected rllib_diffusion.tuning.TuneSweep."
        )
    sweep.source = getattr(module, "__file__", None) or spec
    sweep.check()
    if sweep.metric == SWEEP_METRIC:
        from rllib_diffusion.tuning.metric import install_sweep_metric

        install_sweep_metric(sweep.param_space, sweep.metric_source)
    return sweep


def default_name(spec: str) -> str:
    """``tune_configs/dppo_hopper.py``, ``dppo_hopper``, ``pkg.dppo_hopper`` → dppo_hopper."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        return Path(spec).stem
    return spec.rsplit(".", 1)[-1]
