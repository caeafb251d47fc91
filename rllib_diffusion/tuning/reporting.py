"""What a running sweep prints: Tune's progress table restricted to the searched keys and
the sweep's metrics, and one line per failed (or restarted) trial instead of Tune's
traceback (``TUNE_PRINT_ALL_TRIAL_ERRORS=1`` brings those back)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ray.tune import Callback, CLIReporter

from rllib_diffusion.tuning.export import error_file, error_line, trial_failure_line
from rllib_diffusion.tuning.sweep import SWEEP_METRIC_ITERATION, TuneSweep


class TrialFailureLines(Callback):
    """Prints ``[tune] trial <id> failed: <Type: message>; log: <error.txt>`` when a
    trial errors, and a similar line when Tune restarts it from its checkpoint."""

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = trial_failure_line(trial.trial_id, trial_error(trial), _stored_error_file(trial))
        print(line, flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(
            f"[tune] trial {trial.trial_id} failed ({trial_error(trial)}); restarting it "
            f"from its latest checkpoint; log: {_stored_error_file(trial)}",
            flush=True,
        )


def _stored_error_file(trial: Any) -> str:
    """The trial's ``error.txt`` in the experiment's storage (Tune writes it to a local
    staging directory first and syncs it there)."""
    return error_file(trial.path)


def trial_error(trial: Any) -> str:
    """One line for the last error of ``trial`` (from Tune's pickled error, else the last
    line of its error file)."""
    pickled = trial.pickled_error_file
    if pickled and Path(pickled).is_file():
        try:
            with open(pickled, "rb") as f:
                return error_line(pickle.load(f))
        except Exception:  # noqa: BLE001 - fall back to the text file
            pass
    path = trial.error_file
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "unknown error"
    return "unknown error"


def progress_reporter(sweep: TuneSweep) -> Any:
    """Tune's CLIReporter: searched keys, the sweep metric and its report columns."""
    columns = {"training_iteration": "iter", sweep.metric: short_name(sweep.metric)}
    if sweep.metric_source:
        columns[SWEEP_METRIC_ITERATION] = "measured_at"
    for key in sweep.report_metrics:
        columns.setdefault(key, short_name(key))
    columns["time_total_s"] = "seconds"
    return CLIReporter(
        metric_columns=columns,
        parameter_columns={k: short_name(k) for k in sweep.searched_keys()},
        max_report_frequency=30,
        sort_by_metric=True,  # by TuneConfig's metric / mode
    )


def short_name(key: str) -> str:
    """Column title: the key without namespaces Tune tables need not repeat."""
    for prefix in ("_model_config/", "env_runners/", "learners/default_policy/"):
        key = key.replace(prefix, "")
    return key.replace("evaluation/episode_return_mean", "eval_return_mean")
