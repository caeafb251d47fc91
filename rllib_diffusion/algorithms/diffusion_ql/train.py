"""Offline Q-learning run (``rllib-diffusion offline --algo diffusion_ql``).

dataset → transition parquet → DiffusionQL on RLlib's offline API → checkpoint →
evaluation in the env (``result.json``, ``progress.jsonl`` in ``out_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQLConfig, task_defaults
from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import DiffusionQLModelConfig
from rllib_diffusion.algorithms.offline_run import (
    OfflineRunSettings,
    configure_offline,
    run_offline_training,
    start_offline_run,
)
from rllib_diffusion.data.offline import prepare_transition_data

#: algo name -> model-config overrides (the algorithm class is chosen in ``_config_class``).
ALGORITHMS: dict[str, dict[str, Any]] = {
    "diffusion_ql": {"policy": "ddpm"},
    "diffusion_ql_flow": {"policy": "flow"},
    # IDQL-A: residual LayerNorm actor with dropout, V(s), argmax over N samples.
    "idql": {
        "policy": "ddpm",
        "actor_layer_norm": True,
        "actor_dropout": 0.1,
        "actor_residual": True,
        "value_network": True,
        "action_selection": "argmax",
    },
    # DAC: 10 critic heads, acting by the argmax of the mean over heads of 10 samples.
    "dac": {
        "policy": "ddpm",
        "num_critics": 10,
        "num_candidates": 10,
        "action_selection": "argmax",
        "q_aggregation": "mean",
    },
    # FQL: its own module (BC flow + one-step policy); ``hidden_dims`` sizes all nets.
    "fql": {},
}


def _config_class(algo: str):
    if algo == "dac":
        from rllib_diffusion.algorithms.dac import DACConfig

        return DACConfig
    if algo == "fql":
        from rllib_diffusion.algorithms.fql import FQLConfig

        return FQLConfig
    if algo == "idql":
        from rllib_diffusion.algorithms.idql import IDQLConfig

        return IDQLConfig
    return DiffusionQLConfig


@dataclass
class OfflineSettings(OfflineRunSettings):
    """Settings of an offline RL run (shared fields in :class:`OfflineRunSettings`).

    Attributes:
        algo: "diffusion_ql" (DDPM, T=5, VP), "diffusion_ql_flow" (flow matching),
            "idql" (IQL critics, diffusion BC actor, argmax over N samples), "dac", or
            "fql" (BC flow with ``2 × denoising_steps`` Euler steps + one-step policy).
        eta / grad_clip: None → the paper's per-task defaults (else η = 1, no clip).
        alpha: FQL's distillation weight (None → 10; tune per task as the paper does).
        gamma / lr: discount and Adam learning rate of all networks.
        lr_end: None → constant ``lr``; else cosine decay from ``lr`` to ``lr_end`` over
            ``gradient_steps`` (Diffusion-QL's and DAC's ``lr_decay``).
        max_q_backup: Diffusion-QL: back up the max over this many next actions (0: off).
        reward_scale / reward_bias: losses see ``reward_scale · r + reward_bias``.
        normalize_rewards: additionally scale rewards by 1000 / (max − min episode return
            of the dataset), IQL's locomotion normalisation. None: the paper default (on for
            IDQL, whose critic is IQL's, on Hopper/Walker2d/HalfCheetah; else off).
        denoising_steps: T (DDPM steps or Euler steps).
        num_candidates: actions sampled per state when acting (None: the algorithm's
            default, 50 for Diffusion-QL/IDQL, 10 for DAC).
        hidden_dims: actor MLP sizes (FQL: all networks).
    """

    algo: str = "diffusion_ql"
    steps_per_iteration: int = 1000
    eta: float | None = None
    alpha: float | None = None
    grad_clip: float | None = None
    gamma: float = 0.99
    lr: float = 3e-4
    lr_end: float | None = None
    max_q_backup: int = 0
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    normalize_rewards: bool | None = None
    denoising_steps: int = 5
    num_candidates: int | None = None
    hidden_dims: tuple[int, ...] = (256, 256, 256)


def offline_env_config(env_id: str) -> dict[str, Any]:
    """The evaluation env: raw observations, one action per step (flat action space)."""
    return {"env_id": env_id, "horizon": 1, "act_steps": 1, "flatten_actions": True}


def build_offline_config(
    s: OfflineSettings, data_path: str, env_id: str, obs_dim: int, action_dim: int
):
    from rllib_diffusion.envs.chunking import chunk_spaces

    if s.algo not in ALGORITHMS:
        from rllib_diffusion.modules.model_config import ConfigError

        raise ConfigError(f"algo={s.algo!r}; allowed: {', '.join(ALGORITHMS)}.")
    # The per-task table holds Diffusion-QL's values; IDQL uses neither η nor a clip.
    paper = task_defaults(env_id) if s.algo.startswith("diffusion_ql") else {}
    if s.algo == "dac":
        paper = {"grad_clip": 1.0}
    if s.algo == "fql":
        from rllib_diffusion.algorithms.fql.fql_rl_module import FQLModelConfig

        model = FQLModelConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            flow_steps=s.denoising_steps * 2,
            hidden_dims=s.hidden_dims,
            critic_hidden_dims=s.hidden_dims,
            env_id=env_id,
        )
    else:
        model = DiffusionQLModelConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            **ALGORITHMS[s.algo],
            denoising_steps=s.denoising_steps,
            hidden_dims=s.hidden_dims,
            env_id=env_id,
        )
        if s.num_candidates is not None:
            model.num_candidates = s.num_candidates
    config = configure_offline(
        _config_class(s.algo)(),
        env_config=offline_env_config(env_id),
        spaces=chunk_spaces(obs_dim, 1, action_dim, flatten_actions=True),
        data_path=data_path,
        settings=s,
    )
    lr: Any = s.lr
    if s.lr_end is not None and s.lr_end != s.lr:
        from rllib_diffusion.algorithms.bc.diffusion_bc import cosine_lr_schedule

        lr = cosine_lr_schedule(s.lr, s.lr_end, s.gradient_steps * s.batch_size)
    config.training(
        actor_lr=lr,
        critic_lr=lr,
        max_q_backup=s.max_q_backup,
        reward_scale=s.reward_scale,
        reward_bias=s.reward_bias,
        gamma=s.gamma,
        eta=s.eta if s.eta is not None else paper.get("eta", 0.0 if s.algo == "idql" else 1.0),
        grad_clip=s.grad_clip if s.grad_clip is not None else paper.get("grad_clip"),
    ).rl_module(model_config=model.to_dict())
    if s.algo == "fql" and s.alpha is not None:
        config.training(alpha=s.alpha)
    if s.algo == "dac":
        from rllib_diffusion.algorithms.dac.dac import TASK_DEFAULTS as DAC_DEFAULTS

        task = (env_id or "").split("-")[0].lower()
        config.training(**DAC_DEFAULTS.get(task, {}))
        if s.grad_clip is not None:
            config.training(grad_clip=s.grad_clip)
    return config, model


def normalizes_rewards(s: OfflineSettings, env_id: str | None) -> bool:
    """``s.normalize_rewards``, or the paper default when None: IQL normalises the MuJoCo
    locomotion rewards and IDQL's critic is IQL's, so on for IDQL there, else off."""
    if s.normalize_rewards is not None:
        return s.normalize_rewards
    return s.algo == "idql" and bool(task_defaults(env_id))


def reward_normalization_factor(dataset) -> float:
    """IQL's locomotion normalisation: ``1000 / (max − min)`` of the episode returns."""
    from rllib_diffusion.data.errors import DatasetError

    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise DatasetError(
            "normalize_rewards needs episodes with different returns; this dataset's "
            "returns are all equal. Use --reward-scale instead."
        )
    return 1000.0 / spread


def train_offline(settings: OfflineSettings) -> dict[str, Any]:
    """Run an offline algorithm; returns the summary also written to ``result.json``."""
    s = settings
    out, started, dataset, env_id = start_offline_run(s)
    data_path, n = prepare_transition_data(dataset, seed=s.seed)
    print(
        f"[offline] {s.algo} on {dataset.name}: {dataset.num_episodes} episodes, {n} transitions, "
        f"return {dataset.episode_returns().mean():.1f}",
        flush=True,
    )
    factor = 1.0
    if normalizes_rewards(s, env_id):
        factor = reward_normalization_factor(dataset)
        # Stored as the effective scale, so online runs and restores use the same one.
        s = replace(s, reward_scale=s.reward_scale * factor, normalize_rewards=False)
        print(f"[offline] rewards scaled by {factor:.4g} (1000 / dataset return range)")
    config, model = build_offline_config(s, data_path, env_id, dataset.obs_dim, dataset.action_dim)
    meta = {
        "algorithm": s.algo,
        "env_id": env_id,
        "env_config": offline_env_config(env_id),
        "model_config": model.to_dict(),
        "hyperparameters": {
            "eta": config.eta,
            "grad_clip": config.grad_clip,
            "tau": config.tau,
            "reward_scale": config.reward_scale,
            "reward_bias": config.reward_bias,
            "reward_normalization_factor": factor,
        },
    }
    return run_offline_training(
        config.build_algo,
        s,
        tag="offline",
        out=out,
        meta=meta,
        dataset=dataset,
        env_config=offline_env_config(env_id),
        loss_key=M.CRITIC_LOSS,
        started=started,
    )
