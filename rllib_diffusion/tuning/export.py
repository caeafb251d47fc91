"""After a sweep: one row per trial, the best trial, its checkpoint exported with the
``rllib_diffusion.json`` meta that ``evaluate`` reads, and the sweep summary."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.tuning.sweep import (
    BEST_CHECKPOINT_DIR,
    SWEEP_METRIC,
    SWEEP_METRIC_ITERATION,
    SweepError,
    TuneSweep,
    result_value,
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
    summary = sweep_summary(grid, sweep, exp_path, command=command)
    best_row = _best_trial(summary["trials"], sweep.mode)
    if best_row is None:
        _print_failures(summary)
        raise SweepError(
            f"No trial of '{exp_path}' measured {sweep.metric_source or sweep.metric!r} and "
            f"saved a checkpoint ({len(summary['errored_trials'])} of {len(grid)} errored); "
            "nothing to export. Run more iterations (or evaluate more often) and see the "
            "trial logs."
        )
    best = next(r for r in grid if _trial_id(r) == best_row["trial_id"])
    tune_meta = _tune_meta(best, best_row, sweep, exp_path, not summary["unfinished_trials"])
    meta = {
        **sweep.checkpoint_meta(best.config),
        "tune": {**tune_meta, "command": command},
        "run": summary["run"],
    }
    dest = export_dir or join_path(exp_path, BEST_CHECKPOINT_DIR)
    summary["best"] = best_row
    summary["best_checkpoint"] = export_checkpoint(best.checkpoint, dest, meta)
    return summary


def sweep_summary(
    grid: Any, sweep: TuneSweep, exp_path: str, *, command: str | None = None
) -> dict[str, Any]:
    """What ``sweep_summary.json`` holds, without the best trial (see export_best)."""
    from rllib_diffusion.utils.runtime import run_metadata

    trials = [_trial_row(r, sweep) for r in grid]
    return {
        "experiment": exp_path,
        "sweep": sweep.source,
        "description": sweep.description,
        "metric": sweep.metric,
        "metric_source": sweep.metric_source,
        "mode": sweep.mode,
        "searched": sweep.searched_keys(),
        "num_trials": len(trials),
        "errored_trials": [t["trial_id"] for t in trials if t["error"]],
        "unfinished_trials": _unfinished_trials(exp_path, sweep),
        "trials": trials,
        "command": command,
        "run": run_metadata(),
    }


def _tune_meta(
    best: Any, row: dict[str, Any], sweep: TuneSweep, exp_path: str, complete: bool
) -> dict[str, Any]:
    """The ``tune`` entry of the exported checkpoint's meta."""
    return {
        "experiment": exp_path,
        "sweep": sweep.source,
        "trial_id": row["trial_id"],
        "trial_path": best.path,
        "source_checkpoint": best.checkpoint.path,
        "metric": sweep.metric,
        "metric_source": sweep.metric_source,
        "mode": sweep.mode,
        "metric_value": row["metric_value"],
        "metric_iteration": row["metric_iteration"],
        "training_iteration": row["training_iteration"],
        # The exported checkpoint's own iteration and metric (equal to the above for
        # finished trials; an interrupted trial may not have saved its last iteration).
        **_checkpoint_result(best, sweep.metric),
        "config": row["config"],
        "experiment_complete": complete,
    }


def storage_root(storage_path: str) -> str:
    if is_uri(storage_path):
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve())


def is_uri(path: str) -> bool:
    return "://" in str(path)


def join_path(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def error_line(error: Any, limit: int = 300) -> str:
    """One line saying why a trial failed: the original exception's type and the first
    line of its message (a Ray task error's traceback and a Tune result dump dropped)."""
    cause = getattr(error, "cause", None) or error
    text = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "")
    text = text.split(" Result: {", 1)[0]  # Tune appends the whole result dict
    line = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_file(trial_path: str) -> str:
    """Where Tune wrote the trial's error (with traceback)."""
    from ray.tune.result import EXPR_ERROR_FILE

    return join_path(trial_path, EXPR_ERROR_FILE)


def _trial_id(result: Any) -> str | None:
    return (result.metrics or {}).get("trial_id")


def _trial_row(result: Any, sweep: TuneSweep) -> dict[str, Any]:
    from ray.tune.utils import flatten_dict

    metrics = result.metrics or {}
    config = flatten_dict(result.config or {}, delimiter="/")
    return {
        "trial_id": _trial_id(result),
        "path": result.path,
        "config": {k: config.get(k) for k in sweep.searched_keys()},
        "metric_value": M.float_or_none(result_value(metrics, sweep.metric)),
        "metric_iteration": _metric_iteration(metrics, sweep.metric),
        "training_iteration": metrics.get("training_iteration"),
        "has_checkpoint": result.checkpoint is not None,
        "error": error_line(result.error) if result.error else None,
        "error_file": error_file(result.path) if result.error else None,
    }


def _metric_iteration(metrics: dict[str, Any], metric: str) -> int | None:
    """Iteration the sweep metric was measured in (its own iteration for other metrics)."""
    if metric != SWEEP_METRIC:
        return metrics.get("training_iteration")
    it = M.float_or_none(result_value(metrics, SWEEP_METRIC_ITERATION))
    return int(it) if it else None


def _checkpoint_result(result: Any, metric: str) -> dict[str, Any]:
    """Iteration and metric recorded with ``result.checkpoint`` (the exported one)."""
    for ckpt, metrics in result.best_checkpoints or []:
        if ckpt.path == result.checkpoint.path:
            return {
                "checkpoint_iteration": metrics.get("training_iteration"),
                "checkpoint_metric_value": M.float_or_none(result_value(metrics, metric)),
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


def print_summary(s: dict[str, Any]) -> None:
    """The closing lines of ``rllib-diffusion tune``."""
    best = s["best"]
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best["config"].items())
    print(
        f"[tune] {s['num_trials']} trials in {s['wall_seconds']:.0f}s "
        f"({len(s['errored_trials'])} errored, {len(s['unfinished_trials'])} unfinished)",
        flush=True,
    )
    _print_failures(s)
    measured = best.get("metric_iteration")
    at = f", measured at iteration {measured}" if measured != best["training_iteration"] else ""
    print(
        f"[tune] best trial {best['trial_id']} (iteration {best['training_iteration']}): "
        f"{s['metric']} = {best['metric_value']:.4g}{at}; {params}",
        flush=True,
    )
    print(f"[tune] best checkpoint: {s['best_checkpoint']}", flush=True)
    if is_uri(s["best_checkpoint"]):
        print("[tune] download it, then: rllib-diffusion evaluate --checkpoint <local copy>")
    else:
        print(f"[tune] evaluate it: rllib-diffusion evaluate --checkpoint {s['best_checkpoint']}")
    if s["errored_trials"] or s["unfinished_trials"]:
        print(
            "[tune] some trials did not finish; rerun the same command with --resume to "
            "continue them (errored trials restart from their last checkpoint).",
            flush=True,
        )


def _print_failures(s: dict[str, Any]) -> None:
    for t in s["trials"]:
        if t["error"]:
            print(trial_failure_line(t["trial_id"], t["error"], t["error_file"]), flush=True)


def trial_failure_line(trial_id: str, error: str, error_file: str | None) -> str:
    """``[tune] trial <id> failed: <why>; log: <error file>`` (one line)."""
    return f"[tune] trial {trial_id} failed: {error}; log: {error_file or 'none'}"


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
    if is_uri(dest):
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
    if not is_uri(dest):
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
