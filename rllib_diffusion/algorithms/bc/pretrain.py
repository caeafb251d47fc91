"""Diffusion-policy pretraining run: dataset → parquet → DiffusionBC → checkpoint + eval.

This is the library function behind ``rllib-diffusion pretrain`` and
``experiments/pretrain.py``; it prints progress and writes into ``out_dir``:

* ``checkpoint/`` — the final (atomically written) Algorithm checkpoint, with
  ``rllib_diffusion.json`` holding the policy config and normalisation;
* ``progress.jsonl`` — one line per iteration (loss, gradient steps, eval return);
* ``result.json`` — summary incl. the final evaluation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.offline_run import (
    OfflineRunSettings,
    configure_offline,
    dataset_env_kwargs,
    lr_schedule,
    run_offline_training,
    start_offline_run,
)
from rllib_diffusion.data.normalization import near_constant_obs_warning
from rllib_diffusion.data.offline import OfflineDataInfo, prepare_offline_data
from rllib_diffusion.knobs import Count, NonNegative, NonNegativeFloat, Positive, PositiveFloat
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig

ALGORITHM_NAME = "DiffusionBC"


@dataclass
class PretrainSettings(OfflineRunSettings):
    """Settings of a diffusion BC run (CLI flags map 1:1 onto these; shared fields in
    :class:`OfflineRunSettings`).

    Attributes:
        horizon: action chunk length Ta the policy predicts.
        act_steps: actions of each chunk executed before the next decision.
        obs_history: stacked observations To the policy sees.
        denoising_steps: diffusion steps K (flow: integration steps).
        sampler: how actions are sampled: DDPM, DDIM or flow matching.
        ddim_steps: DDIM steps when sampler is ddim (None: K).
        schedule: noise schedule of the forward process.
        network: denoiser network: residual MLP or 1-D temporal UNet.
        hidden_dims: MLP sizes of the denoiser.
        lr: AdamW learning rate after warm-up.
        lr_end: learning rate at the end of the cosine decay.
        warmup_steps: linear learning-rate warm-up steps.
        knobs: ``DiffusionBCConfig.training()`` knobs given by the user (weight decay,
            EMA schedule); the others keep the config's defaults, declared there once.
        policy: other ``DiffusionPolicyConfig`` fields given by the user (UNet sizes,
            activation, std floors, ...: :func:`policy_knobs`); the rest keep its defaults.
    """

    out_dir: str = "runs/pretrain"
    horizon: Count = 4
    act_steps: Count = 4
    obs_history: Count = 1
    denoising_steps: Count = 20
    sampler: Literal["ddpm", "ddim", "flow"] = "ddpm"
    ddim_steps: Count | None = None
    schedule: Literal["cosine", "vp", "linear"] = "cosine"
    network: Literal["mlp", "unet"] = "mlp"
    hidden_dims: tuple[Positive, ...] = (512, 512, 512)
    lr: PositiveFloat = 1e-3
    lr_end: NonNegativeFloat = 1e-4
    warmup_steps: NonNegative = 100
    knobs: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.act_steps > self.horizon:
            raise ConfigError(
                f"--act-steps ({self.act_steps}) must be <= --horizon ({self.horizon}): a "
                "decision executes at most the chunk it predicts."
            )
        if self.sampler != "ddim" and self.ddim_steps is not None:
            raise ConfigError("--ddim-steps applies to --sampler ddim only; drop it.")
        if self.synthetic_dataset is not None and (self.horizon, self.obs_history) != (1, 1):
            raise ConfigError(
                "--synthetic-dataset holds single transitions: it mixes into policies with "
                "--horizon 1 --act-steps 1 --obs-history 1 only."
            )


def build_pretrain_config(
    settings: PretrainSettings,
    data: OfflineDataInfo,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
):
    """The ``DiffusionBCConfig`` for ``settings`` on prepared ``data``, acting in
    ``make_env(env_id, **env_kwargs)`` (the dataset's env)."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.envs.chunking import chunk_spaces

    s = settings
    from_settings = {name: getattr(s, name) for name in _shared_policy_fields()}
    policy = DiffusionPolicyConfig(
        obs_dim=data.obs_dim,
        action_dim=data.action_shape[1],
        normalization=data.normalization.to_dict(),
        env_id=env_id,
        env_kwargs=env_kwargs or None,
        **from_settings,
        **s.policy,
    )
    config = configure_offline(
        DiffusionBCConfig(),
        env_config=policy.env_config(),
        spaces=chunk_spaces(policy.obs_dim, policy.horizon, policy.action_dim),
        data_path=data.path,
        settings=s,
    )
    config.training(lr=lr_schedule(s), **s.knobs).rl_module(model_config=policy.to_dict())
    return config, policy


#: DiffusionPolicyConfig fields that come from the data, not from the user.
POLICY_DATA_FIELDS = ("obs_dim", "action_dim", "normalization", "env_id", "env_kwargs")


def _shared_policy_fields() -> list[str]:
    """Policy fields that are also ``PretrainSettings`` fields (they shape the data too)."""
    ours = {f.name for f in fields(PretrainSettings)} - set(POLICY_DATA_FIELDS)
    return [f.name for f in fields(DiffusionPolicyConfig) if f.name in ours]


def policy_knobs() -> list:
    """The other ``DiffusionPolicyConfig`` fields, as knobs (flags of ``pretrain``)."""
    from rllib_diffusion.knobs import settings_knobs

    return settings_knobs(
        DiffusionPolicyConfig, exclude=(*POLICY_DATA_FIELDS, *_shared_policy_fields())
    )


def pretrain(settings: PretrainSettings) -> dict[str, Any]:
    """Run diffusion BC pretraining; returns the summary also written to ``result.json``."""
    s = settings
    _, started, dataset, env_id = start_offline_run(s)
    data = prepare_offline_data(dataset, horizon=s.horizon, obs_history=s.obs_history, seed=s.seed)
    print(
        f"[pretrain] dataset {dataset.name}: {dataset.num_episodes} episodes, "
        f"{dataset.num_transitions} transitions, return {dataset.episode_returns().mean():.1f}; "
        f"{data.num_samples} windows (Ta={s.horizon}, To={s.obs_history}) "
        f"{'(cached)' if data.cached else ''} at {data.path}",
        flush=True,
    )
    config, policy = build_pretrain_config(s, data, env_id, dataset_env_kwargs(dataset, env_id))
    warning = near_constant_obs_warning(data.normalization.obs, clamp_obs=policy.clamp_obs)
    if warning:
        print(f"[pretrain] {warning}", file=sys.stderr, flush=True)
    meta = {"algorithm": ALGORITHM_NAME, "env_id": env_id, "policy_config": policy.to_dict()}
    return run_offline_training(
        config.build_algo,
        s,
        tag="pretrain",
        meta=meta,
        dataset=dataset,
        env_config=policy.env_config(),
        loss_key=M.BC_LOSS,
        started=started,
    )
