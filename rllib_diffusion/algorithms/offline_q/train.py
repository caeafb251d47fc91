"""Offline Q-learning run (``rllib-diffusion offline --algo NAME``), for every algorithm
of the registry's ``offline_q`` kind.

dataset → transition parquet → the algorithm's config (its own defaults, its per-task
paper values, then the knobs given) on RLlib's offline API → checkpoint → evaluation in
the env (``result.json``, ``progress.jsonl`` in ``out_dir``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms import registry
from rllib_diffusion.algorithms.offline_q.offline_q import task_name
from rllib_diffusion.algorithms.offline_run import (
    OfflineRunSettings,
    configure_offline,
    dataset_env_kwargs,
    run_offline_training,
    start_offline_run,
)
from rllib_diffusion.algorithms.regenerated_rollouts import (
    RegenerationSettings,
    check_generator_checkpoint,
)
from rllib_diffusion.knobs import Count, NonNegativeFloat, Positive, PositiveFloat
from rllib_diffusion.modules.model_config import ConfigError

#: Names of the offline Q-learners (``--algo`` choices), from the registry.
ALGORITHMS: tuple[str, ...] = registry.names(registry.OFFLINE_Q)

#: Tasks whose rewards IQL normalises (MuJoCo locomotion).
LOCOMOTION_TASKS = ("hopper", "walker2d", "halfcheetah")

#: Knob shorthands kept as typed fields of :class:`OfflineSettings` (``--eta`` ...).
KNOB_FIELDS = ("eta", "alpha", "grad_clip", "gamma", "max_q_backup", "reward_scale", "reward_bias")
#: Network flags, passed to the config's ``default_model_config`` when given.
MODEL_FIELDS = ("denoising_steps", "num_candidates", "hidden_dims")


@dataclass
class OfflineSettings(RegenerationSettings, OfflineRunSettings):
    """Settings of an offline RL run (shared fields in :class:`OfflineRunSettings`; the
    rollouts regenerated with the learning policy, DyDiff's loop: :class:`RegenerationSettings`).

    Algorithm knobs are declared by each algorithm's config (``training()``); None here
    means "not given": the config's default, or its per-task paper value. A knob the
    algorithm does not use is refused.

    Attributes:
        algo: a registered offline Q-learner (:data:`ALGORITHMS`).
        eta / alpha / grad_clip / gamma / max_q_backup / reward_scale / reward_bias:
            knobs by name (the same as ``knobs={"eta": ...}``); after the run starts,
            the values used (for the knobs the algorithm declares).
        knobs: any other declared knob by name, e.g. ``{"lcb_rho": 1.0}``.
        batch_size: samples per gradient step; None: the algorithm's (its config's
            ``train_batch_size_per_learner``: 256, IDQL 512 as its official runs).
        lr: both Adam learning rates (None: the config's, 3e-4).
        lr_end: None → constant ``lr``; else cosine decay from ``lr`` to ``lr_end`` over
            ``gradient_steps`` (Diffusion-QL's ``lr_decay``; DAC and IDQL decay by themselves).
        normalize_rewards: additionally scale rewards by 1000 / (max − min episode return
            of the dataset), IQL's locomotion normalisation. None: the algorithm's default
            (on for IDQL and DAC on Hopper/Walker2d/HalfCheetah, as their official code).
        denoising_steps: T (FQL: half its Euler steps); None: the algorithm's (T = 5).
        num_candidates: actions sampled per state when acting (not fql); None: the
            algorithm's.
        hidden_dims: actor MLP sizes (fql: all networks); None: the algorithm's (fql:
            4×512).
    """

    algo: str = "diffusion_ql"
    batch_size: Count | None = None
    steps_per_iteration: int = 1000
    eta: float | None = None
    alpha: float | None = None
    grad_clip: float | None = None
    gamma: float | None = None
    max_q_backup: int | None = None
    reward_scale: float | None = None
    reward_bias: float | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    lr: PositiveFloat | None = None
    lr_end: NonNegativeFloat | None = None
    normalize_rewards: bool | None = None
    denoising_steps: Count | None = None
    num_candidates: Count | None = None
    hidden_dims: tuple[Positive, ...] | None = None

    SYNTHETIC_FLAGS = "--synthetic-dataset (or --dydiff-model)"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_regeneration()

    def synthetic_source(self) -> str | None:
        return self.synthetic_dataset or self.dydiff_model

    def given_knobs(self) -> dict[str, Any]:
        """The algorithm knobs set in these settings."""
        named = {k: getattr(self, k) for k in KNOB_FIELDS if getattr(self, k) is not None}
        return {**named, **self.knobs}


def offline_env_config(env_id: str, env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation env: raw observations, one action per step (flat action space),
    made with ``env_kwargs`` (the dataset's, e.g. the Franka Kitchen's tasks) if any."""
    config = {"env_id": env_id, "horizon": 1, "act_steps": 1, "flatten_actions": True}
    return {**config, "env_kwargs": dict(env_kwargs)} if env_kwargs else config


def check_settings(s: OfflineSettings) -> registry.AlgorithmSpec:
    """The algorithm's spec; one-line ``ConfigError`` for a knob or network flag it does
    not use, or a ``--dydiff-model`` that is not a DyDiff model of ``--dataset`` (before
    any data is read or Ray starts)."""
    spec = registry.get(s.algo)
    if s.regenerates:
        check_generator_checkpoint(s.dydiff_model, s.dataset)
    spec.check_knobs(s.given_knobs())
    spec.config_class().training(**s.given_knobs())  # value checks of training(), if any
    used = spec.config_class.MODEL_KNOBS
    unused = [f for f in MODEL_FIELDS if getattr(s, f) is not None and f not in used]
    if unused:
        flags = ", ".join("--" + f.replace("_", "-") for f in unused)
        raise ConfigError(
            f"{flags} is not a network flag of {s.algo} (it uses: {', '.join(used)})."
        )
    return spec


def _learning_rates(s: OfflineSettings) -> dict[str, Any]:
    """``actor_lr``/``critic_lr`` from ``lr`` and ``lr_end`` (cosine), if given."""
    if s.lr is None and s.lr_end is None:
        return {}
    lr: Any = 3e-4 if s.lr is None else s.lr
    if s.lr_end is not None and s.lr_end != lr:
        from rllib_diffusion.algorithms.denoiser_training import (
            cosine_lr_schedule,
            samples_per_step,
        )

        per_step = samples_per_step(s.batch_size, s.steps_per_iteration)
        lr = cosine_lr_schedule(lr, s.lr_end, s.gradient_steps * per_step)
    return {"actor_lr": lr, "critic_lr": lr}


def build_offline_config(
    s: OfflineSettings,
    data_path: str,
    env_id: str,
    obs_dim: int,
    action_dim: int,
    *,
    dataset: Any | None = None,
):
    """``(config, model_config)``: config defaults < per-task paper values < given knobs;
    the model config completed from ``dataset`` (the real data, if given) by the
    config's ``model_config_for_data``."""
    from rllib_diffusion.envs.chunking import chunk_spaces

    spec = check_settings(s)
    cls = spec.config_class
    s = with_algorithm_batch(s)
    nets = {f: getattr(s, f) for f in MODEL_FIELDS if getattr(s, f) is not None}
    model = cls.default_model_config(
        obs_dim, action_dim, env_id=env_id, **{**spec.model_overrides, **nets}
    )
    kwargs = dataset_env_kwargs(dataset, env_id) if dataset is not None else None
    config = configure_offline(
        cls(),
        env_config=offline_env_config(env_id, kwargs),
        spaces=chunk_spaces(obs_dim, 1, action_dim, flatten_actions=True),
        data_path=data_path,
        settings=s,
    )
    config.training(**cls.dataset_defaults(env_id, s.dataset))
    config.training(**_learning_rates(s))
    if "lr_decay_steps" in {k.name for k in spec.knobs()}:
        config.training(lr_decay_steps=s.gradient_steps)  # decay over the run (DAC, IDQL)
    config.training(**s.given_knobs())
    model = config.model_config_for_data(model, dataset)
    config.rl_module(model_config=model.to_dict())
    return config, model


def normalizes_rewards(s: OfflineSettings, env_id: str | None) -> bool:
    """``s.normalize_rewards``, or the algorithm's official default when None (its
    config's ``NORMALIZES_LOCOMOTION_REWARDS``: IDQL and DAC) on MuJoCo locomotion."""
    if s.normalize_rewards is not None:
        return s.normalize_rewards
    cls = registry.get(s.algo).config_class
    return cls.NORMALIZES_LOCOMOTION_REWARDS and task_name(env_id) in LOCOMOTION_TASKS


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


def with_algorithm_batch(s: OfflineSettings) -> OfflineSettings:
    """``s`` with ``batch_size`` set: the given one, else the algorithm's default."""
    if s.batch_size is not None:
        return s
    default = registry.get(s.algo).config_class().train_batch_size_per_learner
    return replace(s, batch_size=int(default))


def resolved_settings(s: OfflineSettings, config: Any) -> OfflineSettings:
    """``s`` with the knob fields the algorithm declares set to the values used, so that
    the checkpoint records them and ``--resume`` compares what was trained."""
    declared = {k.name for k in registry.get(s.algo).knobs()}
    used = {k: getattr(config, k) for k in KNOB_FIELDS if k in declared}
    return replace(s, **used)


def settings_from_meta(settings: dict[str, Any]) -> OfflineSettings:
    """The settings a checkpoint recorded. Pre-redesign checkpoints recorded every knob
    shorthand for every algorithm (unused ones were ignored): those are dropped."""
    known = {f.name for f in fields(OfflineSettings)}
    s = OfflineSettings(**{k: v for k, v in settings.items() if k in known})
    declared = {k.name for k in registry.get(s.algo).knobs()}
    unused = {k: None for k in KNOB_FIELDS if k not in declared}
    used_nets = registry.get(s.algo).config_class.MODEL_KNOBS
    unused.update({f: None for f in MODEL_FIELDS if f not in used_nets})
    return replace(s, **unused)


def train_offline(settings: OfflineSettings) -> dict[str, Any]:
    """Run an offline algorithm; returns the summary also written to ``result.json``."""
    from rllib_diffusion.data.offline import prepare_transition_data

    s = with_algorithm_batch(settings)
    spec = check_settings(s)
    _, started, dataset, env_id = start_offline_run(s)
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
        scale = 1.0 if s.reward_scale is None else s.reward_scale
        s = replace(s, reward_scale=scale * factor, normalize_rewards=False)
        print(f"[offline] rewards scaled by {factor:.4g} (1000 / dataset return range)")
    config, model = build_offline_config(
        s, data_path, env_id, dataset.obs_dim, dataset.action_dim, dataset=dataset
    )
    warning = config.data_warning(model)
    if warning:
        print(f"[offline] {warning}", file=sys.stderr, flush=True)
    s = resolved_settings(s, config)
    hyper = {k.name: getattr(config, k.name) for k in spec.knobs()}
    env_config = offline_env_config(env_id, dataset_env_kwargs(dataset, env_id))
    meta = {
        "algorithm": spec.checkpoint_algorithm,
        "env_id": env_id,
        "env_config": env_config,
        "model_config": model.to_dict(),
        "hyperparameters": {**hyper, "reward_normalization_factor": factor},
    }
    return run_offline_training(
        config.build_algo,
        s,
        tag="offline",
        meta=meta,
        dataset=dataset,
        env_config=env_config,
        loss_key=M.CRITIC_LOSS,
        started=started,
        regenerator=regenerator(s, dataset, env_config),
    )


def regenerator(s: OfflineSettings, dataset: Any, env_config: dict[str, Any]):
    """The driver of the rollouts regenerated with the learning policy (None: off),
    drawing start states from ``dataset``'s transitions."""
    if not s.regenerates:
        return None
    from rllib_diffusion.algorithms.regenerated_rollouts import Regenerator
    from rllib_diffusion.data.transitions import dataset_transitions

    return Regenerator(s, dataset_transitions(dataset)["obs"], env_config)


def offline_knobs() -> list[tuple[Any, tuple[str, ...]]]:
    """Every knob of the offline Q-learners once, with the algorithms declaring it
    (:func:`rllib_diffusion.algorithms.registry.merged_knobs`)."""
    return registry.merged_knobs(ALGORITHMS)
