"""DPPO sweeps (``tune_configs/dppo_*.py``): fine-tuning from a DiffusionBC checkpoint,
with ASHA or PBT on the evaluation return.

Metric: ``sweep/return_mean``, the deterministic evaluation return
(``evaluation/env_runners/episode_return_mean``, ``eval_episodes`` episodes) measured
every ``eval_interval`` iterations and carried forward in between (see
:mod:`rllib_diffusion.tuning.metric`). The training return is not used: RLlib reports it
only for episodes that end within an iteration, and none do when an iteration is shorter
than an episode. ASHA milestones and PBT perturbations fall on evaluation iterations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.tuning.sweep import (
    DPPO_ENV_STEPS,
    EVAL_RETURN,
    SWEEP_DIR,
    TRAIN_RETURN,
    SweepArgs,
    TuneSweep,
    learner_metric,
    search_model_config,
)

#: Defaults of DPPO sweeps (FinetuneSettings fields; ``--set`` overrides them).
SWEEP_DEFAULTS = {"eval_interval": 10, "eval_episodes": 10, "checkpoint_interval": 10}
#: Progress-table columns besides the metric.
REPORT_METRICS = [TRAIN_RETURN, DPPO_ENV_STEPS, learner_metric(M.APPROX_KL)]


def dppo_sweep_config(
    args: SweepArgs, *, env_id: str | None = None, max_t: int | None = None, **defaults: Any
):
    """``(DPPOConfig, FinetuneSettings)`` built from ``args.checkpoint``: the sweep's
    ``defaults`` (settings fields or DPPO knobs), then the user's ``--set`` overrides;
    checks the checkpoint's env.
    With ``max_t``, the evaluation interval is at most ``max_t`` (0: ``max_t``), so every
    trial measures the sweep metric at least once."""
    from rllib_diffusion.algorithms.dppo.finetune import dppo_config_from_pretrained
    from rllib_diffusion.algorithms.finetune_run import (
        FinetuneSettings,
        finetune_knobs,
        validated,
    )
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    checkpoint = args.require("checkpoint", "a DiffusionBC checkpoint from `pretrain`")
    meta = read_checkpoint_meta(checkpoint)
    # DPPO or a chain-PPO sibling (the sweep module's ``algo``, or ``--set algo=...``).
    algo = str(args.overrides.get("algo", defaults.get("algo", "dppo")))
    settings = args.settings(
        FinetuneSettings, knobs=finetune_knobs(algo), checkpoint=checkpoint, seed=args.seed,
        **defaults,
    )  # fmt: skip
    if max_t is not None:
        settings.eval_interval = min(settings.eval_interval or max_t, max_t)
    # RLlib's and the algorithm's checks before Tune starts (one line naming the flags).
    config = validated(dppo_config_from_pretrained(settings.checkpoint, settings), algo)
    found = meta.env_id
    if env_id is not None and found != env_id:
        raise ConfigError(
            f"This sweep is for {env_id}; checkpoint '{settings.checkpoint}' is a {found} "
            f"policy. Copy the sweep module and set its env (see {SWEEP_DIR}/README.md)."
        )
    return config, settings


def ft_denoising_choices(config: Any) -> list[int]:
    """K_ft candidates for a DPPO sweep: K/4, K/2 and K of the sampled chain."""
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig

    policy = DPPOModelConfig.from_dict(dict(config.model_config)).policy_config
    k = int(policy.sampling_steps)
    return sorted({v for v in (k // 4, k // 2, k) if v >= 1})


def dppo_checkpoint_meta(settings: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Meta of DPPO trial checkpoints, as ``finetune`` writes it; ``settings`` is the
    sweep's base ``FinetuneSettings`` (searched values are in the trial config)."""

    def meta(config: dict[str, Any]) -> dict[str, Any]:
        from rllib_diffusion.algorithms import registry
        from rllib_diffusion.tuning.offline import model_config_of

        model = model_config_of(config)
        policy = model["policy"]
        return {
            "algorithm": registry.get(settings.algo).checkpoint_algorithm,
            "env_id": policy.get("env_id"),
            "policy_config": policy,
            "model_config": model,
            "settings": dataclasses.asdict(settings),
            "pretrained_checkpoint": config.get("pretrained_checkpoint"),
        }

    return meta


def _dppo_space(config: Any, search: dict[str, Any], search_ft_steps: bool, algo: str) -> Any:
    """``search`` (``training()`` keys) and, where the algorithm's model config has it,
    K_ft (``DPPOModelConfig.ft_denoising_steps``; ReinFlow fine-tunes every step)."""
    from ray import tune

    from rllib_diffusion.algorithms import registry

    config.training(**search)
    model_cls = registry.get(algo).model_config_class
    if search_ft_steps and "ft_denoising_steps" in {f.name for f in dataclasses.fields(model_cls)}:
        choices = tune.choice(ft_denoising_choices(config))
        search_model_config(config, model_cls, ft_denoising_steps=choices)
    return config


def dppo_asha_sweep(
    args: SweepArgs,
    *,
    env_id: str,
    search: dict[str, Any],
    max_iterations: int = 100,
    num_samples: int = 8,
    **defaults: Any,
) -> TuneSweep:
    """The DPPO fine-tuning sweep with ASHA: DPPO from ``args.checkpoint`` (an
    ``env_id`` policy), :data:`SWEEP_DEFAULTS` and ``defaults`` (``FinetuneSettings``
    fields), then the user's ``--set``; the ``search`` space of ``config.training``
    keys plus K_ft over K/4, K/2 and K. ASHA milestones: ``eval_interval · 3^i``."""
    from rllib_diffusion.tuning.schedulers import asha_sweep

    max_t = args.max_iterations or max_iterations
    config, s = dppo_sweep_config(args, env_id=env_id, max_t=max_t, **SWEEP_DEFAULTS | defaults)
    return asha_sweep(
        max_t=max_t,
        num_samples=args.num_samples or num_samples,
        checkpoint_frequency=s.checkpoint_interval,
        grace_period=s.eval_interval,
        trainable=config.algo_class,
        param_space=_dppo_space(config, search, search_ft_steps=True, algo=s.algo),
        metric_source=EVAL_RETURN,
        checkpoint_meta=dppo_checkpoint_meta(s),
        report_metrics=REPORT_METRICS,
        description=f"{s.algo} on {env_id}, ASHA over {', '.join(search)}"
        + (", K_ft" if s.algo == "dppo" else ""),
    )


def dppo_pbt_sweep(
    args: SweepArgs,
    *,
    env_id: str,
    search: dict[str, Any],
    mutations: dict[str, Any],
    max_iterations: int = 100,
    num_samples: int = 4,
    **defaults: Any,
) -> TuneSweep:
    """The DPPO fine-tuning sweep with PBT: as :func:`dppo_asha_sweep` (K_ft fixed), with
    an evaluation, a checkpoint and a possible perturbation of ``mutations`` every
    ``max_t // 10`` iterations (unless ``--set eval_interval=...``)."""
    from rllib_diffusion.tuning.schedulers import pbt_sweep

    max_t = args.max_iterations or max_iterations
    every = max(1, max_t // 10)
    defaults = SWEEP_DEFAULTS | {"eval_interval": every, "checkpoint_interval": every} | defaults
    config, s = dppo_sweep_config(args, env_id=env_id, max_t=max_t, **defaults)
    return pbt_sweep(
        max_t=max_t,
        num_samples=args.num_samples or num_samples,
        interval=s.eval_interval,
        mutations=mutations,
        trainable=config.algo_class,
        param_space=_dppo_space(config, search, search_ft_steps=False, algo=s.algo),
        metric_source=EVAL_RETURN,
        checkpoint_meta=dppo_checkpoint_meta(s),
        report_metrics=REPORT_METRICS,
        description=f"{s.algo} on {env_id}, PBT of {', '.join(mutations)}",
    )
