"""Run (or resume) a sweep with ``tune.Tuner``, then export its best checkpoint."""

from __future__ import annotations

import os
import time
from typing import Any

from rllib_diffusion.tuning.export import (
    export_best,
    join_path,
    print_summary,
    storage_root,
    write_json,
)
from rllib_diffusion.tuning.loading import build_sweep, default_name
from rllib_diffusion.tuning.sweep import SUMMARY_FILE, SweepArgs, SweepError, TuneSweep


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
    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    limit_threads()
    sweep = build_sweep(spec, args)
    name = name or default_name(spec)
    storage = storage_root(storage_path)
    exp_path = join_path(storage, name)
    init_ray()
    _check_experiment(exp_path, resume)
    print(
        f"[tune] {'resuming' if resume else 'starting'} sweep {name!r} "
        f"({sweep.description or spec}); metric {sweep.metric} ({sweep.mode}"
        f"{', measured by ' + sweep.metric_source if sweep.metric_source else ''}); "
        f"searching {', '.join(sweep.searched_keys()) or 'nothing'}; storage {exp_path}",
        flush=True,
    )
    tuner = _make_tuner(
        sweep, name, storage, exp_path, resume, max_concurrent_trials, verbose, callbacks
    )
    started = time.perf_counter()
    grid = _fit(tuner, exp_path)
    wall = time.perf_counter() - started

    summary = export_best(grid, sweep, exp_path, export_dir=export_dir, command=command)
    summary.update(wall_seconds=wall, resumed=resume)
    write_json(join_path(exp_path, SUMMARY_FILE), summary)
    print_summary(summary)
    return summary


def _check_experiment(exp_path: str, resume: bool) -> None:
    """``--resume`` needs an experiment at ``exp_path``; a new run needs none there."""
    from ray import tune

    exists = tune.Tuner.can_restore(exp_path)
    if resume and not exists:
        raise SweepError(f"Nothing to resume at '{exp_path}' (no tuner.pkl); run without --resume.")
    if not resume and exists:
        raise SweepError(
            f"Experiment '{exp_path}' already exists; pass --resume to continue it or "
            "choose another --name."
        )


def _fit(tuner: Any, exp_path: str) -> Any:
    """``tuner.fit()``; an error of Tune itself (not of a trial: those are in the result
    grid) becomes one SweepError line naming the experiment."""
    from ray.tune import TuneError

    from rllib_diffusion.tuning.export import error_line

    try:
        return tuner.fit()
    except TuneError as err:
        cause = err.__cause__ or err.__context__ or err
        raise SweepError(
            f"Tune stopped the sweep: {error_line(cause)} (experiment '{exp_path}'; "
            "fix it, then rerun with --resume)."
        ) from None


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

    from rllib_diffusion.tuning.reporting import TrialFailureLines, progress_reporter

    # Tune's default ("AIR") output prints every trial's full RLlib config (hundreds of
    # keys); the classic CLIReporter shows only the searched keys and chosen metrics.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A failed trial is one line (TrialFailureLines); its traceback is in its error.txt.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
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
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures, fail_fast=False),
            callbacks=[TrialFailureLines(), *(callbacks or [])],
            progress_reporter=progress_reporter(sweep),
            verbose=verbose,
        ),
    )
