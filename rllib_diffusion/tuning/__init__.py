"""Ray Tune sweeps over this package's RLlib algorithms (``rllib-diffusion tune``).

A sweep is a Python module (``tune_configs/*.py``) that defines

    def make_sweep(args: SweepArgs) -> TuneSweep

which returns the trainable (an RLlib ``Algorithm`` class such as ``DPPO``), the search
space (an ``AlgorithmConfig`` whose fields hold ``tune.loguniform`` / ``tune.choice``
domains), the result path that measures a trial (``metric_source``), scheduler, stop
criteria, ``CheckpointConfig`` and how to describe a trial's checkpoint (the
``rllib_diffusion.json`` meta that ``evaluate`` needs).

* :mod:`.sweep`: ``SweepArgs``, ``TuneSweep``, result paths, ``search_model_config``;
* :mod:`.loading`: finding and building sweep modules;
* :mod:`.metric`: the sweep metric ``sweep/return_mean`` reported on every iteration;
* :mod:`.schedulers`: ASHA / PBT deciding on measured metric values only;
* :mod:`.run`: ``run_sweep`` (``Tuner.fit`` or ``Tuner.restore``), one line per failed
  trial (:mod:`.reporting`);
* :mod:`.export`: the best trial's checkpoint exported to
  ``<storage>/<name>/best_checkpoint`` with its meta, and ``sweep_summary.json``;
* :mod:`.offline`: helpers of the offline sweeps. Per-algorithm helpers live next to the
  algorithms: ``algorithms/dppo/sweep.py``, ``algorithms/bc/sweep.py``.

Nothing here imports ``ray`` at package import; the CLI parser imports this package.
Names from modules that need ``ray`` (schedulers, per-algorithm helpers) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from rllib_diffusion.tuning.export import export_best, export_checkpoint, write_json
from rllib_diffusion.tuning.loading import (
    available_sweeps,
    build_sweep,
    default_name,
    load_sweep_module,
)
from rllib_diffusion.tuning.offline import (
    offline_checkpoint_meta,
    offline_sweep_settings,
    offline_trial_resources,
)
from rllib_diffusion.tuning.run import run_sweep
from rllib_diffusion.tuning.sweep import (
    BEST_CHECKPOINT_DIR,
    DPPO_ENV_STEPS,
    EVAL_RETURN,
    SUMMARY_FILE,
    SWEEP_DIR,
    SWEEP_FUNCTION,
    SWEEP_METRIC,
    SWEEP_METRIC_FRESH,
    SWEEP_METRIC_ITERATION,
    TRAIN_RETURN,
    SweepArgs,
    SweepError,
    TuneSweep,
    coerce_value,
    learner_metric,
    search_model_config,
)

_default_name = default_name  # the name tests used before the package split

#: Names loaded on first use (their modules import ray or an algorithm package).
_LAZY = {
    "asha_sweep": "rllib_diffusion.tuning.schedulers",
    "pbt_sweep": "rllib_diffusion.tuning.schedulers",
    "MeasuredASHA": "rllib_diffusion.tuning.schedulers",
    "MeasuredPBT": "rllib_diffusion.tuning.schedulers",
    "SweepMetricCallback": "rllib_diffusion.tuning.metric",
    "dppo_asha_sweep": "rllib_diffusion.algorithms.dppo.sweep",
    "dppo_pbt_sweep": "rllib_diffusion.algorithms.dppo.sweep",
    "dppo_sweep_config": "rllib_diffusion.algorithms.dppo.sweep",
    "dppo_checkpoint_meta": "rllib_diffusion.algorithms.dppo.sweep",
    "ft_denoising_choices": "rllib_diffusion.algorithms.dppo.sweep",
    "diffusion_bc_checkpoint_meta": "rllib_diffusion.algorithms.bc.sweep",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BEST_CHECKPOINT_DIR",
    "DPPO_ENV_STEPS",
    "EVAL_RETURN",
    "SUMMARY_FILE",
    "SWEEP_DIR",
    "SWEEP_FUNCTION",
    "SWEEP_METRIC",
    "SWEEP_METRIC_FRESH",
    "SWEEP_METRIC_ITERATION",
    "TRAIN_RETURN",
    "SweepArgs",
    "SweepError",
    "TuneSweep",
    "available_sweeps",
    "build_sweep",
    "coerce_value",
    "default_name",
    "export_best",
    "export_checkpoint",
    "learner_metric",
    "load_sweep_module",
    "offline_checkpoint_meta",
    "offline_sweep_settings",
    "offline_trial_resources",
    "run_sweep",
    "search_model_config",
    "write_json",
    *_LAZY,
]
