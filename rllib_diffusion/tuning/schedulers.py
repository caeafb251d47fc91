"""ASHA and PBT for sweeps whose metric can be unknown (NaN) in early iterations.

Both decide on the sweep metric (``sweep/return_mean``, see :mod:`.metric`): the last
measured return, carried forward between measurements. A result whose metric is still
NaN (nothing measured yet, e.g. before the first evaluation) is passed over, so:

* ASHA records a trial in a rung at its first result at or after the rung's milestone
  that carries a measured value, and stops it there if that value is below the rung's
  top ``1 / reduction_factor`` quantile. With evaluations every ``E`` iterations and
  milestones at multiples of ``E`` (``grace_period = E``), every decision is taken on a
  return measured at that milestone.
* PBT perturbs a trial at its first result with a measured value once
  ``perturbation_interval`` iterations have passed since its last perturbation; with
  ``perturbation_interval = E`` that is an evaluation iteration.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler

from rllib_diffusion import metrics as M
from rllib_diffusion.tuning.sweep import TuneSweep


class _MeasuredOnly:
    """Scheduler mixin: results whose metric is missing or NaN just continue."""

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if M.float_or_none(result.get(self._metric)) is None:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class MeasuredASHA(_MeasuredOnly, ASHAScheduler):
    """``ASHAScheduler`` that decides on measured metric values only."""


class MeasuredPBT(_MeasuredOnly, PopulationBasedTraining):
    """``PopulationBasedTraining`` that decides on measured metric values only."""


def asha_sweep(
    *,
    max_t: int,
    num_samples: int,
    checkpoint_frequency: int,
    grace_period: int | None = None,
    **fields: Any,
):
    """A :class:`TuneSweep` with ASHA on ``training_iteration`` (milestones
    ``grace_period · 3^i``, default ``max_t // 10``; set it to the evaluation interval
    when the metric is measured only every few iterations), stopped at ``max_t``
    iterations, keeping the 2 latest checkpoints (every ``checkpoint_frequency``
    iterations) plus the final one. ``fields``: the remaining ``TuneSweep`` fields
    (trainable, param_space, metric_source, checkpoint_meta ...)."""
    grace = max(1, min(grace_period or max_t // 10, max_t))
    return TuneSweep(
        scheduler=MeasuredASHA(
            time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=3
        ),
        num_samples=num_samples,
        stop={"training_iteration": max_t},
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_frequency=checkpoint_frequency, checkpoint_at_end=True
        ),
        **fields,
    )


def pbt_sweep(
    *,
    max_t: int,
    num_samples: int,
    interval: int,
    mutations: dict[str, Any],
    **fields: Any,
):
    """A :class:`TuneSweep` with PBT: every ``interval`` iterations (after a burn-in of
    ``interval``) the bottom 25% of trials copy a top-25% trial's checkpoint and
    continue with its ``mutations`` keys (``AlgorithmConfig.to_dict()`` names) perturbed
    (×0.8 / ×1.2, a neighbouring list entry, or resampled with probability 0.25). All
    trials run ``max_t`` iterations; the 4 latest checkpoints are kept."""
    return TuneSweep(
        scheduler=MeasuredPBT(
            time_attr="training_iteration",
            perturbation_interval=interval,
            burn_in_period=interval,
            hyperparam_mutations=mutations,
            quantile_fraction=0.25,
            resample_probability=0.25,
        ),
        num_samples=num_samples,
        stop={"training_iteration": max_t},
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=4, checkpoint_frequency=interval, checkpoint_at_end=True
        ),
        **fields,
    )
