"""Gaussian behaviour cloning: the pretraining half of DPPO's Gaussian-policy baseline.

RLlib's own ``BC`` with its default Gaussian MLP RLModule, trained on exactly the data
DiffusionBC sees: ``prepare_offline_data(dataset, horizon=1)`` parquet of min-max
normalised (observation, action) pairs, read through RLlib's offline API and reshaped
by :class:`~rllib_diffusion.algorithms.window_prelearner.WindowPreLearner`. The
policy acts in the action-chunk env with Ta = act_steps = 1 and a flat action space,
in the same normalised units, so the PPO fine-tuning stage
(:mod:`rllib_diffusion.algorithms.gaussian.gaussian_ppo`) starts from it unchanged.

Writes into ``out_dir``: ``checkpoint/`` (atomic, ``rllib_diffusion.json`` holds
``algorithm="GaussianBC"``, ``env_config``, incl. ``clamp_obs``, and ``model_config``),
``progress.jsonl`` and ``result.json`` (summary incl. the final evaluation of the saved
policy).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rllib_diffusion.algorithms.offline_run import (
    OfflineRunSettings,
    configure_offline,
    dataset_env_kwargs,
    lr_schedule,
    run_offline_training,
    start_offline_run,
)
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.normalization import near_constant_obs_warning
from rllib_diffusion.data.offline import OfflineDataInfo, prepare_offline_data
from rllib_diffusion.knobs import NonNegative, NonNegativeFloat, Positive, PositiveFloat
from rllib_diffusion.modules.model_config import ConfigError

if TYPE_CHECKING:
    from rllib_diffusion.algorithms.gaussian.gmm import GMMHead

ALGORITHM_NAME = "GaussianBC"


@dataclass
class GaussianBCSettings(OfflineRunSettings):
    """Settings of a Gaussian BC run (CLI flags map 1:1 onto these; shared fields in
    :class:`OfflineRunSettings`).

    Attributes:
        hidden_dims: MLP sizes of the policy (and, later, of PPO's separate critic).
        activation: hidden activation. ReLU by default: the policy is first fitted by
            regression, where [256, 256] ReLU is the standard offline-RL BC network
            (D4RL/CORL baselines); tanh (RLlib's and CleanRL's PPO-from-scratch default)
            fits more slowly. Inputs are already in [-1, 1], so neither saturates early.
        free_log_std: state-independent, learned log-std (the usual Gaussian-PPO
            parameterisation). With ``False`` the head also predicts the log-std per
            state, which maximum likelihood can shrink to almost nothing on
            well-covered states, leaving PPO nothing to explore with.
        lr: Adam learning rate after warm-up.
        lr_end: learning rate at the end of the cosine decay.
        warmup_steps: linear learning-rate warm-up steps.
        num_modes: K > 1 makes the policy a K-mode Gaussian mixture (DPPO's GMM baseline,
            5 modes in every official GMM config); 1 keeps the plain Gaussian.
        gmm_fixed_std: std of every mixture mode, held fixed (the official GMM configs'
            ``fixed_std: 0.1``); with --state-dependent-std the network predicts it instead.
        gmm_std_min: lower clamp of a predicted mixture std (official ``std_min``).
        gmm_std_max: upper clamp of a predicted mixture std (official ``std_max``).
        clamp_obs: clip the min-max normalised observations the policy sees in the env to
            [-1, 1] (as ``pretrain --clamp-obs``); stored in the checkpoint's env_config,
            so ``finetune-gaussian`` and ``evaluate`` act with it. Guards against states
            outside the dataset's range on near-constant dims (Franka Kitchen).
    """

    out_dir: str = "runs/pretrain_gaussian"
    hidden_dims: tuple[Positive, ...] = (256, 256)
    activation: Literal["relu", "tanh", "silu"] = "relu"
    free_log_std: bool = True
    lr: PositiveFloat = 3e-4
    lr_end: NonNegativeFloat = 3e-5
    warmup_steps: NonNegative = 0
    num_modes: Positive = 1
    gmm_fixed_std: PositiveFloat = 0.1
    gmm_std_min: PositiveFloat = 0.01
    gmm_std_max: PositiveFloat = 1.0
    clamp_obs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        gmm_defaults = {"gmm_fixed_std": 0.1, "gmm_std_min": 0.01, "gmm_std_max": 1.0}
        changed = [k for k, v in gmm_defaults.items() if getattr(self, k) != v]
        if self.num_modes == 1 and changed:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise ConfigError(f"{flags} only apply to a mixture policy: add --num-modes K (K > 1).")
        gmm_head(self)  # refuses inconsistent std bounds in one line


def gmm_head(settings: GaussianBCSettings) -> GMMHead | None:
    """The mixture head of ``settings``, or None for the plain Gaussian (num_modes = 1)."""
    from rllib_diffusion.algorithms.gaussian.gmm import GMMHead

    if settings.num_modes == 1:
        return None
    return GMMHead(
        num_modes=settings.num_modes,
        fixed_std=settings.gmm_fixed_std if settings.free_log_std else None,
        std_min=settings.gmm_std_min,
        std_max=settings.gmm_std_max,
    )


def gaussian_env_config(
    env_id: str,
    normalization: dict[str, Any],
    env_kwargs: dict[str, Any] | None = None,
    clamp_obs: bool = False,
) -> dict[str, Any]:
    """env_config of the chunk env a Gaussian policy acts in: Ta = act_steps = 1, 1-D
    actions, made with ``env_kwargs`` (the dataset's, e.g. the Franka Kitchen's tasks),
    normalised observations clipped to [-1, 1] when ``clamp_obs`` (a checkpoint saved
    without the key acts unclipped)."""
    from rllib_diffusion.envs.chunking import CLAMP_OBS_KEY

    config = {
        "env_id": env_id,
        "horizon": 1,
        "act_steps": 1,
        "obs_history": 1,
        "normalization": normalization,
        "flatten_actions": True,
        CLAMP_OBS_KEY: bool(clamp_obs),
    }
    return {**config, "env_kwargs": dict(env_kwargs)} if env_kwargs else config


def gaussian_model_config(settings: GaussianBCSettings) -> dict[str, Any]:
    """The ``DefaultModelConfig`` fields of the policy, plus the mixture head's keys for
    num_modes > 1 (stored in the checkpoint metadata)."""
    head = gmm_head(settings)
    config = {
        "fcnet_hiddens": [int(h) for h in settings.hidden_dims],
        "fcnet_activation": settings.activation,
        # A mixture's stds come from the GMM head, not from RLlib's free log-std.
        "free_log_std": bool(settings.free_log_std) and head is None,
        "vf_share_layers": False,
    }
    return config if head is None else {**config, **head.model_config()}


def build_gaussian_bc_config(
    settings: GaussianBCSettings,
    data: OfflineDataInfo,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
):
    """RLlib ``BCConfig`` for ``settings`` on prepared ``data`` (Ta = 1 windows), acting in
    ``make_env(env_id, **env_kwargs)`` (the dataset's env).

    Returns ``(config, env_config, model_config)``.
    """
    from ray.rllib.algorithms.bc import BCConfig

    from rllib_diffusion.algorithms.gaussian.gmm import GMMBCCatalog, policy_module_args
    from rllib_diffusion.algorithms.window_prelearner import (
        LIGHT_PRELEARNER_KWARGS,
        SHUFFLED_ITER_KWARGS,
        WindowPreLearner,
        seed_local_shuffle,
    )
    from rllib_diffusion.envs.chunking import chunk_spaces

    s = settings
    if data.action_shape[0] != 1:
        raise DatasetError(
            f"Gaussian BC needs single-action samples (horizon=1), got chunks of "
            f"{data.action_shape[0]}; prepare the data with prepare_offline_data(..., horizon=1)."
        )
    env_config = gaussian_env_config(
        env_id, data.normalization.to_dict(), env_kwargs, clamp_obs=s.clamp_obs
    )
    model_config = gaussian_model_config(s)
    config = configure_offline(
        BCConfig(),
        env_config=env_config,
        spaces=chunk_spaces(data.obs_dim, 1, data.action_shape[1], flatten_actions=True),
        data_path=data.path,
        settings=s,
    )
    config.training(lr=lr_schedule(s)).rl_module(
        **policy_module_args(model_config, GMMBCCatalog)
    ).offline_data(
        prelearner_class=WindowPreLearner,
        iter_batches_kwargs=SHUFFLED_ITER_KWARGS,
        map_batches_kwargs=LIGHT_PRELEARNER_KWARGS,
    )
    return seed_local_shuffle(config), env_config, model_config


def pretrain_gaussian(settings: GaussianBCSettings) -> dict[str, Any]:
    """Run Gaussian BC; returns the summary also written to ``result.json``."""
    from ray.rllib.core.learner.learner import POLICY_LOSS_KEY

    s = settings
    _, started, dataset, env_id = start_offline_run(s)
    data = prepare_offline_data(dataset, horizon=1, seed=s.seed)
    print(
        f"[pretrain-gaussian] dataset {dataset.name}: {dataset.num_episodes} episodes, "
        f"{dataset.num_transitions} transitions, return {dataset.episode_returns().mean():.1f}; "
        f"{data.num_samples} samples {'(cached)' if data.cached else ''} at {data.path}",
        flush=True,
    )
    warning = near_constant_obs_warning(data.normalization.obs, clamp_obs=s.clamp_obs)
    if warning:
        print(f"[pretrain-gaussian] {warning}", file=sys.stderr, flush=True)
    config, env_config, model_config = build_gaussian_bc_config(
        s, data, env_id, dataset_env_kwargs(dataset, env_id)
    )
    meta = {
        "algorithm": ALGORITHM_NAME,
        "env_id": env_id,
        "env_config": env_config,
        "model_config": model_config,
    }
    return run_offline_training(
        config.build_algo,
        s,
        tag="pretrain-gaussian",
        meta=meta,
        dataset=dataset,
        env_config=env_config,
        loss_key=POLICY_LOSS_KEY,
        started=started,
    )
