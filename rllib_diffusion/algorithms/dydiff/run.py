"""``rllib-diffusion dydiff``: train DyDiff's models (or load them) and write policy
rollouts as a synthetic Minari dataset.

dataset → segment parquet → :class:`DyDiff` (RLlib offline API) → checkpoint
(``CheckpointMeta`` algorithm "DyDiff") → its prediction error on the data's segments
(``result.json``) → start states from the data → rollouts with iterated action injection
from ``--policy`` → filter → transitions (single-step Minari episodes, provenance under
``data.synthetic.PROVENANCE_KEY``) for any offline command's ``--synthetic-dataset``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dydiff.dydiff import ALGORITHM_NAME
from rllib_diffusion.algorithms.offline_run import (
    OfflineFamily,
    OfflineRunSettings,
    lr_schedule,
    start_offline_run,
)
from rllib_diffusion.algorithms.regenerated_rollouts import DyDiffRolloutKnobs
from rllib_diffusion.knobs import (
    Count,
    NonNegative,
    NonNegativeFloat,
    Positive,
    PositiveFloat,
)
from rllib_diffusion.modules.model_config import ConfigError

#: Segments the final prediction-error check uses (at most the dataset's).
EVAL_SEGMENTS = 2_000


@dataclass
class DyDiffSettings(OfflineRunSettings):
    """Settings of a DyDiff model training run (shared fields: :class:`OfflineRunSettings`).

    Attributes:
        horizon: H, transitions per generated segment (DyDiff: 100, with a UNet on a GPU).
        width: hidden width of the residual MLP denoiser.
        depth: hidden layers of the denoiser.
        denoising_steps: diffusion steps K of training and sampling (DyDiff: EDM, 34 steps).
        ddim_steps: sample with this many DDIM steps instead of K DDPM steps (None: DDPM).
        ensemble_size: members of the one-step dynamics ensemble (DyDiff: 7).
        ensemble_width: hidden width of each member (DyDiff: 200).
        ensemble_depth: hidden layers of each member (DyDiff: 4).
        diffuse: what the denoiser generates: states (standardised s_1..s_H; DyDiff's) or
            deltas (standardised s_{i+1} − s_i, summed from s_0).
        lr: Adam learning rate.
        lr_end: learning rate at the end of a cosine decay (equal to lr: constant).
        warmup_steps: linear learning-rate warm-up steps.
        knobs: ``DyDiffConfig.training()`` knobs given (weight decay, EMA schedule).
    """

    out_dir: str = "runs/dydiff"
    gradient_steps: Count = 20_000
    horizon: Positive = 8
    width: Positive = 512
    depth: Positive = 4
    denoising_steps: Count = 100
    ddim_steps: Count | None = None
    ensemble_size: Count = 7
    ensemble_width: Positive = 200
    ensemble_depth: Positive = 4
    diffuse: Literal["states", "deltas"] = "states"
    lr: PositiveFloat = 3e-4
    lr_end: NonNegativeFloat = 3e-4
    warmup_steps: NonNegative = 0
    knobs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.synthetic_dataset is not None or self.real_ratio != 1.0:
            raise ConfigError(
                "DyDiff's models train on real data only: drop --synthetic-dataset and "
                "--real-ratio (give them to the offline command that reads the rollouts)."
            )
        if self.ddim_steps is not None and self.ddim_steps > self.denoising_steps:
            raise ConfigError(
                f"--ddim-steps ({self.ddim_steps}) must be <= --denoising-steps "
                f"({self.denoising_steps})."
            )
        if self.diffuse not in ("states", "deltas"):
            raise ConfigError(f"--diffuse {self.diffuse!r}; allowed: states, deltas.")
        if self.ensemble_size < 2:
            raise ConfigError(
                f"--ensemble-size {self.ensemble_size}: disagreement needs at least 2 members."
            )


@dataclass
class DyDiffRolloutSettings(DyDiffRolloutKnobs, DyDiffSettings):
    """Settings of ``rllib-diffusion dydiff`` (model flags: :class:`DyDiffSettings`; how
    rollouts are made and filtered: :class:`DyDiffRolloutKnobs`, shared with the
    regenerated rollouts of ``rllib-diffusion offline``).

    Attributes:
        model: a DyDiff checkpoint to roll out with instead of training one (it must have
            been trained on --dataset; the model flags are then not used).
        policy: checkpoint of the learning policy whose actions are injected (any policy
            checkpoint of this package with --obs-history 1); with --dataset-id.
        dataset_id: Minari id to write the kept rollouts to (e.g.
            rllib-diffusion/hopper/dydiff-v0); with --policy. Without both, only train.
        num_rollouts: rollouts generated from start states drawn from --dataset
            (DyDiff: 2,048 per rollout round).
        rollout_batch_size: rollouts generated per chunk (one progress line each).
    """

    model: str | None = field(default=None, kw_only=True)
    policy: str | None = field(default=None, kw_only=True)
    dataset_id: str | None = field(default=None, kw_only=True)
    num_rollouts: Count = field(default=2_048, kw_only=True)
    rollout_batch_size: Count = field(default=2_048, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.policy is None) != (self.dataset_id is None):
            raise ConfigError(
                "--policy and --dataset-id go together: give both to write rollouts (e.g. "
                "--policy runs/td3bc/checkpoint --dataset-id local/hopper/dydiff-v0) or "
                "neither to only train the model."
            )
        self.check_filter()


# --------------------------------------------------------------------------- training
class DyDiffFamily(OfflineFamily):
    """Model training in the shared run loop; the final "evaluation" measures how well
    the saved model predicts the data's segments instead of acting in an env."""

    def final_evaluation(self, ckpt: str, control) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.data.segments import make_segments

        module, _ = load_policy_module(ckpt, expect_algorithms=(ALGORITHM_NAME,))
        seg = make_segments(self.dataset, horizon=module.dydiff_config.horizon)
        return segment_prediction_error(module, seg, EVAL_SEGMENTS, seed=10_000 + control.seed)

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        print(
            f"[{self.tag}] state error over {evaluation['num_segments']} data segments "
            f"(RMSE / state std, mean over H steps): diffusion "
            f"{evaluation['diffusion_rmse_mean']:.3f}, one-step ensemble open loop "
            f"{evaluation['ensemble_rmse_mean']:.3f}; train time {base['train_seconds']:.0f}s",
            flush=True,
        )
        return {**base, "evaluation": evaluation}


def segment_prediction_error(module, seg: dict, n: int, *, seed: int) -> dict[str, Any]:
    """Per-step RMSE (in units of the state std) of s_1..s_H predicted from the data's
    s_0 and actions, by the diffusion model and by the ensemble rolled open loop, over
    ``n`` random segments of ``seg`` (``data.segments.make_segments`` columns)."""
    import torch

    from rllib_diffusion import columns as C

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(seg[C.OBS]), min(n, len(seg[C.OBS])), replace=False)
    s0 = torch.as_tensor(seg[C.OBS][idx, 0])
    actions = torch.as_tensor(seg[C.ACTIONS][idx])
    true = seg[C.NEXT_OBS][idx]
    std = np.asarray(module.norms["obs"].std, np.float32)
    started = time.perf_counter()
    gen = module.generate_states(s0, actions, generator=torch.Generator().manual_seed(seed))
    diffusion_seconds = time.perf_counter() - started
    state, ens = s0, []
    for i in range(actions.shape[1]):
        state = module.one_step(state, actions[:, i])["next_obs"]
        ens.append(state)
    ens = torch.stack(ens, dim=1).numpy()

    def rmse(pred: np.ndarray) -> np.ndarray:
        return np.sqrt((((pred - true) / std) ** 2).mean(axis=(0, 2)))

    d, e = rmse(gen.numpy()), rmse(ens)
    return {
        "num_segments": int(len(idx)),
        "diffusion_rmse_per_step": d.tolist(),
        "ensemble_rmse_per_step": e.tolist(),
        "diffusion_rmse_mean": float(d.mean()),
        "ensemble_rmse_mean": float(e.mean()),
        "diffusion_segments_per_second": float(len(idx) / max(diffusion_seconds, 1e-9)),
    }


def dydiff_model_config(s: DyDiffSettings, dataset: Any, env_id: str):
    """``DyDiffModelConfig`` with per-dimension statistics fitted on ``dataset``."""
    from rllib_diffusion import columns as C
    from rllib_diffusion.algorithms.dydiff.dydiff_rl_module import (
        DyDiffModelConfig,
        fit_normalizers,
    )
    from rllib_diffusion.data.segments import make_segments
    from rllib_diffusion.data.transitions import StandardNormalizer

    seg = make_segments(dataset, horizon=s.horizon)
    norms = fit_normalizers(seg)
    target = seg[C.NEXT_OBS] - seg[C.OBS] if s.diffuse == "deltas" else seg[C.NEXT_OBS]
    name = "delta" if s.diffuse == "deltas" else "obs"
    z = StandardNormalizer.from_dict(norms[name]).normalize(target.astype(np.float64))
    return DyDiffModelConfig(
        obs_dim=dataset.obs_dim,
        action_dim=dataset.action_dim,
        horizon=s.horizon,
        width=s.width,
        depth=s.depth,
        denoising_steps=s.denoising_steps,
        ddim_steps=s.ddim_steps,
        ensemble_size=s.ensemble_size,
        ensemble_width=s.ensemble_width,
        ensemble_depth=s.ensemble_depth,
        normalization=norms,
        clip_x0=float(np.abs(z).max()) + 1.0,
        env_id=env_id,
        diffuse=s.diffuse,
    )


def build_dydiff_config(s: DyDiffSettings, data_path: str, model) -> Any:
    """The ``DyDiffConfig`` for ``s`` on segment parquet ``data_path``."""
    import gymnasium as gym

    from rllib_diffusion.algorithms.dydiff.dydiff import DyDiffConfig
    from rllib_diffusion.algorithms.window_prelearner import seed_local_shuffle

    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
    return seed_local_shuffle(
        DyDiffConfig()
        .environment(
            observation_space=box(model.horizon * model.obs_dim),
            action_space=box(model.horizon * model.action_dim),
        )
        .training(train_batch_size_per_learner=s.batch_size, lr=lr_schedule(s), **s.knobs)
        .offline_data(input_=[data_path], dataset_num_iters_per_learner=s.steps_per_iteration)
        .evaluation(evaluation_interval=None)
        .debugging(seed=s.seed)
        .rl_module(model_config=model.to_dict())
    )


def train_dydiff(settings: DyDiffSettings) -> dict[str, Any]:
    """Train DyDiff's models; returns the summary also written to ``result.json``
    (``checkpoint``: the model checkpoint)."""
    from rllib_diffusion.data.segments import prepare_segment_data
    from rllib_diffusion.run_loop import RunControl, run_training

    s = settings
    _, started, dataset, env_id = start_offline_run(s)
    model = dydiff_model_config(s, dataset, env_id)
    data_path, n = prepare_segment_data(dataset, horizon=s.horizon, seed=s.seed)
    print(
        f"[dydiff] segment model {s.depth}×{s.width} (H={s.horizon}, K={s.denoising_steps}) "
        f"and {s.ensemble_size}-member ensemble on {dataset.name}: {n} segments",
        flush=True,
    )
    config = build_dydiff_config(s, data_path, model)
    meta = {"algorithm": ALGORITHM_NAME, "env_id": env_id, "model_config": model.to_dict()}
    family = DyDiffFamily(
        config.build_algo, s, tag="dydiff", meta=meta, dataset=dataset, env_config={},
        loss_key=M.BC_LOSS,
    )  # fmt: skip
    summary = run_training(family, RunControl.from_settings(s, budget=s.gradient_steps))
    summary["total_seconds"] = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------- rollouts
def policy_from_checkpoint(checkpoint: str):
    """A policy checkpoint of this package as ``obs (N, Do) -> actions (N, Da)`` in data
    units: its deterministic action, through its env wrapper's observation and action
    normalisation; the first action of a chunk. Refused in one line: observation history."""
    from rllib_diffusion.algorithms.regenerated_rollouts import data_unit_policy, module_actions
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.evaluation import checkpoint_env_config

    module, meta = load_policy_module(checkpoint)
    env_config = checkpoint_env_config(checkpoint, meta)
    if int(env_config.get("obs_history", 1)) != 1:
        raise ConfigError(
            f"--policy '{checkpoint}' acts on {env_config['obs_history']} stacked observations; "
            "DyDiff rollouts need a policy of single observations (--obs-history 1)."
        )
    return data_unit_policy(lambda z: module_actions(module, z), env_config)


def generate_rollouts(module, policy, start_obs: np.ndarray, s: DyDiffRolloutSettings):
    """:class:`Rollouts` from ``start_obs`` (N, Do), in chunks of ``rollout_batch_size``
    seeded by ``s.seed`` (:func:`~rllib_diffusion.algorithms.dydiff.rollout.roll_out`)."""
    from rllib_diffusion.algorithms.dydiff.rollout import roll_out

    return roll_out(
        module, policy, start_obs, rounds=s.injection_rounds, mix=s.state_mix, seed=s.seed,
        batch_size=s.rollout_batch_size,
    )  # fmt: skip


def dydiff(settings: DyDiffRolloutSettings) -> dict[str, Any]:
    """Train (or load) DyDiff's models; with ``policy`` and ``dataset_id``, roll the
    policy out, filter, and write the kept transitions as the Minari dataset
    ``dataset_id``. Returns a summary (also ``dydiff.json`` in OUT)."""
    from rllib_diffusion.algorithms.dydiff.rollout import filter_rollouts
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.data.minari_io import check_output_id
    from rllib_diffusion.data.synthetic import generator_checkpoint
    from rllib_diffusion.utils.io import write_json_atomic
    from rllib_diffusion.utils.runtime import limit_threads

    s = settings
    limit_threads()
    if s.dataset_id is not None:
        check_output_id(s.dataset_id, overwrite=s.overwrite)
    ckpt, training = generator_checkpoint(
        s.model,
        lambda: train_dydiff(s),
        algorithm=ALGORITHM_NAME,
        dataset=s.dataset,
        flag="--model",
        command="rllib-diffusion dydiff",
    )
    summary: dict[str, Any] = {
        "model_checkpoint": ckpt,
        "model_evaluation": training.get("evaluation"),
    }
    if s.policy is not None:
        module, meta = load_policy_module(ckpt, expect_algorithms=(ALGORITHM_NAME,))
        policy = policy_from_checkpoint(s.policy)
        start_obs = _start_states(s)
        started = time.perf_counter()
        rollouts = generate_rollouts(module, policy, start_obs, s)
        rollout_seconds = time.perf_counter() - started
        keep = filter_rollouts(
            rollouts, s.filter, fraction=s.keep_fraction, threshold=s.disagreement_threshold,
            temperature=s.softmax_temperature, rng=np.random.default_rng(s.seed),
        )  # fmt: skip
        summary.update(_write_rollouts(s, ckpt, meta, rollouts, keep))
        summary["rollout_seconds"] = rollout_seconds
    summary["settings"] = asdict(s)
    out = Path(s.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "dydiff.json", summary)
    return summary


def _start_states(s: DyDiffRolloutSettings) -> np.ndarray:
    """``num_rollouts`` start states drawn uniformly (with replacement) from the data's
    transitions, seeded by ``s.seed``."""
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.transitions import dataset_transitions

    obs = dataset_transitions(load_dataset(s.dataset, download=s.download))["obs"]
    return obs[np.random.default_rng(s.seed).integers(0, len(obs), s.num_rollouts)]


def _write_rollouts(s, ckpt: str, meta, rollouts, keep: np.ndarray) -> dict[str, Any]:
    """Write the kept rollouts' transitions with provenance; returns the summary part."""
    from rllib_diffusion.data.synthetic import write_synthetic_transitions
    from rllib_diffusion.utils.runtime import run_metadata

    columns = rollouts.transitions(keep)
    n = len(columns["obs"])
    if n == 0:
        raise ConfigError(
            f"the {s.filter} filter kept no rollout of {len(rollouts)}; raise "
            "--disagreement-threshold or --keep-fraction."
        )
    provenance = {
        "generator_checkpoint": ckpt,
        "generator_algorithm": ALGORITHM_NAME,
        "generator_model": {
            k: meta.model_config.get(k)
            for k in (
                "horizon",
                "width",
                "depth",
                "denoising_steps",
                "ddim_steps",
                "ensemble_size",
                "diffuse",
            )  # fmt: skip
        },
        "policy_checkpoint": str(Path(s.policy).expanduser().resolve()),
        "source_dataset": s.dataset,
        "source_dataset_name": (meta.dataset or {}).get("name"),
        "num_rollouts": int(len(rollouts)),
        "num_rollouts_kept": int(np.sum(keep)),
        "num_transitions": int(n),
        "injection_rounds": int(s.injection_rounds),
        "state_mix": float(s.state_mix),
        "filter": {
            "kind": s.filter,
            "keep_fraction": s.keep_fraction,
            "disagreement_threshold": s.disagreement_threshold,
            "softmax_temperature": s.softmax_temperature,
        },  # fmt: skip
        "seed": int(s.seed),
        "terminal_rate": float(columns["terminateds"].mean()),
        "run": run_metadata(),
    }
    print(f"[dydiff] writing {n} transitions to '{s.dataset_id}' ...", flush=True)
    path = write_synthetic_transitions(
        columns, s.dataset_id, env_id=meta.env_id, source=meta.dataset or {},
        algorithm_name=ALGORITHM_NAME, provenance=provenance, overwrite=s.overwrite,
        description=f"{n} transitions of {int(np.sum(keep))} DyDiff rollouts (H="
        f"{meta.model_config['horizon']}) of {s.policy} on {s.dataset}",
    )  # fmt: skip
    return {"dataset_id": s.dataset_id, "path": path, "provenance": provenance}
