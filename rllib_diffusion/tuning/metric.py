"""The sweep metric: a return reported on every iteration, measured or carried forward.

RLlib reports ``env_runners/episode_return_mean`` only over episodes that *ended* in the
iteration: the key is absent before the first episode ends and NaN in later iterations
where none ends, which is every iteration shorter than an episode (long horizons, many
envs per runner, small iterations). Evaluation returns exist only on evaluation
iterations. Tune needs the scheduler metric in every result, so each sweep trial runs a
callback that adds, at the top level of every result:

* ``sweep/return_mean``: the last *measured* value of the sweep's source (a finite
  ``TuneSweep.metric_source``, e.g. ``evaluation/env_runners/episode_return_mean``),
  carried forward while no new measurement exists; NaN before the first one;
* ``sweep/return_fresh``: 1.0 when measured in this iteration, else 0.0;
* ``sweep/return_iteration``: the iteration it was measured in (0: not yet).

The carried value is logged to the Algorithm's ``MetricsLogger`` (keys ``sweep/…``): it
comes back compiled into the next result, and RLlib saves it in every checkpoint, so a
resumed trial, or a PBT trial that exploits another's checkpoint, carries on with the
value measured for the weights it restored.
The schedulers of :mod:`rllib_diffusion.tuning.schedulers` skip results whose value is
still NaN, so ASHA and PBT decide on measured returns only.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_diffusion import metrics as M
from rllib_diffusion.tuning.sweep import EVAL_RETURN, TRAIN_RETURN, SweepError, result_value

_VALUE = (M.SWEEP_NAMESPACE, M.SWEEP_RETURN)
_ITERATION = (M.SWEEP_NAMESPACE, M.SWEEP_RETURN_ITERATION)


def sweep_metric_update(
    result: dict[str, Any], source: str, carried: tuple[float, int]
) -> tuple[dict[str, float], tuple[float, int]]:
    """The ``sweep/…`` entries for ``result`` and the new carried ``(value, iteration)``.

    ``source`` is a ``/``-path into the nested result; a finite value there is a fresh
    measurement, anything else (absent, NaN, None) keeps ``carried``. The first result
    after a restore repeats the checkpoint's last source value (RLlib restores its
    stats): equal to ``carried`` there, it is not a new measurement.
    """
    measured = M.float_or_none(result_value(result, source))
    fresh = measured is not None and math.isfinite(measured)
    if fresh and result.get("iterations_since_restore") == 1 and measured == carried[0]:
        fresh = False  # RLlib re-reports the restored checkpoint's last value once
    if fresh:
        carried = (measured, int(result.get("training_iteration") or 0))
    value, iteration = carried
    return {
        M.SWEEP_RETURN: value,
        M.SWEEP_RETURN_FRESH: 1.0 if fresh else 0.0,
        M.SWEEP_RETURN_ITERATION: float(iteration),
    }, carried


class SweepMetricCallback(RLlibCallback):
    """Adds the ``sweep/…`` metric of :data:`SOURCE` to every training result."""

    #: Result path whose finite values are measurements (set by the subclasses).
    SOURCE: str = EVAL_RETURN

    def on_train_result(self, *, algorithm, metrics_logger=None, result, **kwargs) -> None:
        # What was logged below last iteration (or restored with a checkpoint) comes back
        # compiled into this result under the same keys.
        previous = result.get(M.SWEEP_NAMESPACE) or {}
        value = M.float_or_none(previous.get(M.SWEEP_RETURN))
        carried = (
            math.nan if value is None else value,
            int(M.float_or_none(previous.get(M.SWEEP_RETURN_ITERATION)) or 0),
        )
        entries, (value, iteration) = sweep_metric_update(result, self.SOURCE, carried)
        result[M.SWEEP_NAMESPACE] = {**previous, **entries}
        if iteration:
            logger = metrics_logger if metrics_logger is not None else algorithm.metrics
            logger.log_value(_VALUE, value, reduce="item")
            logger.log_value(_ITERATION, iteration, reduce="item")


class EvalReturnMetric(SweepMetricCallback):
    """Sweep metric measured by the deterministic evaluation."""

    SOURCE = EVAL_RETURN


class TrainReturnMetric(SweepMetricCallback):
    """Sweep metric measured by the exploring policy's ended episodes."""

    SOURCE = TRAIN_RETURN


#: The callback class per ``TuneSweep.metric_source``.
CALLBACKS: dict[str, type[SweepMetricCallback]] = {
    EVAL_RETURN: EvalReturnMetric,
    TRAIN_RETURN: TrainReturnMetric,
}


def install_sweep_metric(param_space: Any, source: str) -> Any:
    """Add the callback reporting ``source`` as the sweep metric to ``param_space`` (an
    ``AlgorithmConfig``), after any callbacks it already has."""
    if source not in CALLBACKS:
        raise SweepError(
            f"metric_source {source!r} has no sweep-metric callback; allowed: "
            f"{', '.join(sorted(CALLBACKS))}."
        )
    if not hasattr(param_space, "callbacks"):
        raise SweepError("TuneSweep.param_space must be an AlgorithmConfig to report the metric.")
    if source == EVAL_RETURN and not param_space.evaluation_interval:
        raise SweepError(
            "The sweep metric is measured by evaluation, but the trial config never "
            "evaluates: set config.evaluation(evaluation_interval=N) with N <= max_t."
        )
    current = param_space.callbacks_class
    current = list(current) if isinstance(current, (list, tuple)) else [current]
    kept = [c for c in current if c is not RLlibCallback and c not in CALLBACKS.values()]
    classes = [*kept, CALLBACKS[source]]
    param_space.callbacks(callbacks_class=classes if len(classes) > 1 else classes[0])
    return param_space
