"""The run driver shared by offline pretraining algorithms (diffusion BC, Gaussian BC).

dataset → validation against the env → train ``iterations`` × ``algo.train()`` with a
progress line each → atomic checkpoint(s) → evaluation of the saved checkpoint in the
env → ``result.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import gymnasium as gym

from rllib_diffusion.algorithms.regenerated_rollouts import RegenerationSettings
from rllib_diffusion.data import EpisodeDataset, load_dataset, validate_dataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.envs.tasks import make_env
from rllib_diffusion.knobs import Count, NonNegative, Probability
from rllib_diffusion.run_loop import RunControl, RunFamily, run_training


@dataclass
class OfflineRunSettings:
    """Fields every offline run has (subclasses add their algorithm's knobs).

    Attributes:
        dataset: Minari id or dataset directory, DPPO ``.npz``, or robomimic ``.hdf5``.
        env_id: gymnasium env id for evaluation (default: the dataset's).
        out_dir: output directory.
        download: let Minari download ``dataset`` (needs network).
        gradient_steps: total gradient steps, trained exactly.
        batch_size: samples per gradient step.
        steps_per_iteration: gradient steps per RLlib iteration (one ``train()`` call); a
            budget below one iteration is one iteration of ``gradient_steps``; above, the
            budget must be a whole number of iterations (else refused: RLlib runs whole
            iterations only).
        eval_interval: evaluate in the env every this many iterations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: save every this many iterations (0: only at the end).
        seed: RNG seed.
        resume: continue from ``out_dir/checkpoint`` if it exists (learner state with
            optimizers, targets, EMA and step counters; iteration counter; progress
            lines up to it); the other settings must match the checkpoint's.
        overwrite: replace an earlier run in OUT (its checkpoint, progress, result and
            TensorBoard files); without it (or --resume) an earlier run there is an error.
        allow_out_of_bounds_actions: train on a dataset whose actions lie more than 5%
            of the range outside the env's action bounds (else refused: usually actions
            stored in another scale or env).
        synthetic_dataset: a dataset of synthetic transitions (e.g. written by
            `rllib-diffusion synthesize`; Minari id or directory) to train on besides
            --dataset, which still sets the env, the statistics and the reward scale.
        real_ratio: fraction of every batch drawn from --dataset, exactly (the rest from
            --synthetic-dataset): 1 real only, 0 synthetic only; real_ratio × batch size
            must be a whole number.
    """

    dataset: str
    env_id: str | None = None
    out_dir: str = "runs/offline"
    download: bool = False
    gradient_steps: Count = 20_000
    batch_size: Count = 256
    steps_per_iteration: Count = 500
    eval_interval: NonNegative = 0
    eval_episodes: Count = 10
    checkpoint_interval: NonNegative = 0
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    allow_out_of_bounds_actions: bool = False
    synthetic_dataset: str | None = None
    real_ratio: Probability = 1.0

    def __post_init__(self) -> None:
        from rllib_diffusion.knobs import check_ranges
        from rllib_diffusion.modules.model_config import ConfigError

        check_ranges(self)
        if (self.synthetic_source() is None) != (self.real_ratio == 1.0):
            raise ConfigError(
                f"{self.SYNTHETIC_FLAGS} and --real-ratio < 1 go together: give both (e.g. "
                "--synthetic-dataset PATH --real-ratio 0.5) or neither."
            )
        if self.synthetic_source() is not None and self.batch_size is not None:
            from rllib_diffusion.algorithms.mixed_offline_data import real_rows

            real_rows(self.real_ratio, self.batch_size)  # a whole number, else refused
        if self.gradient_steps < 1 or self.steps_per_iteration < 1:
            raise ConfigError(
                f"gradient_steps ({self.gradient_steps}) and steps_per_iteration "
                f"({self.steps_per_iteration}) must be >= 1."
            )
        self.steps_per_iteration = min(self.steps_per_iteration, self.gradient_steps)
        if self.gradient_steps % self.steps_per_iteration:
            n = self.gradient_steps // self.steps_per_iteration
            raise ConfigError(
                f"gradient_steps={self.gradient_steps} is not a whole number of iterations of "
                f"steps_per_iteration={self.steps_per_iteration}: use --gradient-steps "
                f"{n * self.steps_per_iteration} or {(n + 1) * self.steps_per_iteration}, or a "
                f"--steps-per-iteration that divides {self.gradient_steps}."
            )

    #: The flags that give a synthetic source (named in the one-line errors).
    SYNTHETIC_FLAGS = "--synthetic-dataset"

    def synthetic_source(self) -> str | None:
        """Where synthetic rows come from (None: real data only)."""
        return self.synthetic_dataset

    @property
    def iterations(self) -> int:
        """RLlib iterations of exactly ``gradient_steps`` (see ``__post_init__``)."""
        return self.gradient_steps // self.steps_per_iteration


def start_offline_run(s: OfflineRunSettings) -> tuple[Path, float, EpisodeDataset, str]:
    """Threads, output dir, validated dataset, Ray: ``(out, start_time, dataset, env_id)``."""
    from rllib_diffusion.utils.runtime import init_ray, limit_threads

    limit_threads()
    out = Path(s.out_dir).expanduser().resolve()  # created by the run loop, once checked
    started = time.perf_counter()
    dataset, env_id = load_validated_dataset(
        s.dataset,
        download=s.download,
        env_id=s.env_id,
        allow_out_of_bounds_actions=s.allow_out_of_bounds_actions,
    )
    init_ray()
    return out, started, dataset, env_id


def load_validated_dataset(
    source: str,
    *,
    download: bool = False,
    env_id: str | None = None,
    allow_out_of_bounds_actions: bool = False,
) -> tuple[EpisodeDataset, str]:
    """Load ``source`` and check it against ``env_id`` (default: the dataset's env);
    actions far outside the env's bounds are an error unless allowed."""
    dataset = load_dataset(source, download=download)
    env_id = env_id or dataset.env_id
    if not env_id:
        raise DatasetError(
            f"Dataset '{source}' does not name its env; pass --env-id (e.g. Hopper-v5)."
        )
    env = make_env(env_id, **dataset_env_kwargs(dataset, env_id))
    try:
        validate_dataset(
            dataset,
            observation_space=env.observation_space,
            action_space=env.action_space,
            env_id=env_id,
            allow_out_of_bounds_actions=allow_out_of_bounds_actions,
        )
    finally:
        env.close()
    return dataset, env_id


def dataset_env_kwargs(dataset: EpisodeDataset, env_id: str) -> dict[str, Any]:
    """The env kwargs ``dataset`` was recorded with (e.g. Franka Kitchen's
    ``tasks_to_complete``) when ``env_id`` is its env, else none."""
    if dataset.env_kwargs and env_id == dataset.env_id:
        return dict(dataset.env_kwargs)
    return {}


def configure_offline(
    config: Any,
    *,
    env_config: dict[str, Any],
    spaces: tuple[gym.Space, gym.Space],
    data_path: str,
    settings: Any,
) -> Any:
    """Wire an offline ``AlgorithmConfig``: chunk env and spaces, parquet input, batch,
    periodic deterministic evaluation on the local evaluation EnvRunner, seed; with
    ``settings.synthetic_dataset``, batches mixed with synthetic data at
    ``settings.real_ratio`` (:func:`synthetic_input`); with ``settings.dydiff_model``,
    mixed with the pool regenerated while training (``regenerated_rollouts``).

    ``settings`` provides ``batch_size``, ``steps_per_iteration``, ``eval_interval``,
    ``eval_episodes``, ``seed``, ``synthetic_dataset`` and ``real_ratio``.
    """
    from rllib_diffusion.algorithms.window_prelearner import seed_local_shuffle
    from rllib_diffusion.envs.chunking import register_chunked_env

    s = settings
    config = (
        config.environment(
            register_chunked_env(),
            env_config=env_config,
            observation_space=spaces[0],
            action_space=spaces[1],
        )
        .training(train_batch_size_per_learner=s.batch_size)
        .offline_data(input_=[data_path], dataset_num_iters_per_learner=s.steps_per_iteration)
        .evaluation(
            evaluation_interval=s.eval_interval or None,
            evaluation_duration=s.eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
        .debugging(seed=s.seed)
    )
    seed_local_shuffle(config)
    from rllib_diffusion.algorithms.mixed_offline_data import mix_offline_data, real_rows

    if getattr(s, "dydiff_model", None) is not None:  # a pool regenerated while training
        return mix_offline_data(config, None, s.real_ratio)
    if getattr(s, "synthetic_dataset", None) is None:
        return config

    n_real = real_rows(s.real_ratio, s.batch_size)
    synthetic_path = synthetic_input(data_path, s, n_real)
    if n_real == 0:  # synthetic only: plain OfflineData on the synthetic parquet
        return config.offline_data(input_=[synthetic_path])
    return mix_offline_data(config, synthetic_path, s.real_ratio)


def synthetic_input(data_path: str, settings: Any, n_real: int) -> str:
    """Parquet of ``settings.synthetic_dataset`` in the form of the real parquet at
    ``data_path`` (transitions for the offline Q-learners; (obs, action) windows with the
    real data's normalisation for BC, one-step windows only), with one-line errors for a
    dataset that does not fit."""
    import json

    from rllib_diffusion.data import DatasetNormalization
    from rllib_diffusion.data.offline import (
        META_FILE,
        prepare_offline_data,
        prepare_transition_data,
    )

    s = settings
    real_meta = json.loads((Path(data_path) / META_FILE).read_text())
    synthetic = load_dataset(s.synthetic_dataset)
    windows = "normalization" in real_meta
    if windows:
        norm = DatasetNormalization.from_dict(real_meta["normalization"])
        want = (norm.obs.dim, norm.action.dim)
    else:
        want = (real_meta["obs_dim"], real_meta["action_dim"])
    if (synthetic.obs_dim, synthetic.action_dim) != want:
        raise DatasetError(
            f"--synthetic-dataset '{s.synthetic_dataset}' has (obs, action) dims "
            f"{(synthetic.obs_dim, synthetic.action_dim)}, --dataset {want}: it was not "
            "generated from this dataset's env."
        )
    if windows:
        if real_meta["horizon"] != 1 or real_meta["obs_history"] != 1:
            raise DatasetError(
                "--synthetic-dataset holds single transitions: it mixes into policies with "
                "--horizon 1 and --obs-history 1 only (synthetic transitions have no "
                "action chunks or observation histories)."
            )
        info = prepare_offline_data(synthetic, horizon=1, normalization=norm, seed=s.seed)
        path, n_syn = info.path, info.num_samples
    else:
        path, n_syn = prepare_transition_data(synthetic, seed=s.seed)
    n_real_total = int(real_meta["num_samples"])
    for name, have, need in (
        ("--dataset", n_real_total, n_real),
        ("--synthetic-dataset", n_syn, s.batch_size - n_real),
    ):
        if have < need:
            raise DatasetError(
                f"{name} has {have} samples, fewer than the {need} per batch that "
                f"--real-ratio {s.real_ratio} with batch {s.batch_size} draws from it."
            )
    print(
        f"[data] batches of {s.batch_size}: {n_real} real + {s.batch_size - n_real} synthetic "
        f"(--real-ratio {s.real_ratio}); synthetic: {synthetic.name}, {n_syn} samples",
        flush=True,
    )
    return path


def lr_schedule(settings: Any) -> float | list[list[float]]:
    """Constant ``lr``, or a cosine decay to ``lr_end`` with warm-up over the gradient
    budget, in RLlib's form (indexed by its sample counter: :func:`samples_per_step`)."""
    from rllib_diffusion.algorithms.denoiser_training import cosine_lr_schedule, samples_per_step

    s = settings
    if s.lr_end == s.lr:
        return s.lr
    per_step = samples_per_step(s.batch_size, s.steps_per_iteration)
    return cosine_lr_schedule(
        s.lr, s.lr_end, s.gradient_steps * per_step, s.warmup_steps * per_step
    )


#: Settings added after the first checkpoints were written (absent there: their defaults).
NEWER_SETTINGS = frozenset(
    {
        "synthetic_dataset",
        "real_ratio",
        "clamp_obs",  # GaussianBCSettings
        *(f.name for f in dataclass_fields(RegenerationSettings)),
    }
)

#: Settings that may change between a run and its ``--resume``.
RUN_CONTROL_FIELDS = frozenset(
    {"out_dir", "resume", "download", "eval_interval", "eval_episodes", "checkpoint_interval"}
)


def check_same_run_settings(theirs: dict[str, Any], ours: dict[str, Any], where: Path) -> None:
    """A resumed run must train what the checkpoint's run trained (all but run control)."""
    from rllib_diffusion.checkpoints import check_resume_settings

    ours = {k: v for k, v in ours.items() if k not in RUN_CONTROL_FIELDS}
    check_resume_settings({k: theirs.get(k) for k in ours}, ours, where)


class OfflineFamily(RunFamily):
    """Offline training on a dataset (diffusion BC, Gaussian BC, offline Q-learning): the
    budget counts gradient steps, evaluation of the saved policy on its own env."""

    unit = "gradient_steps"

    def __init__(
        self,
        build_algo: Callable[[], Any],
        settings: OfflineRunSettings,
        *,
        tag: str,
        meta: dict[str, Any],
        dataset: EpisodeDataset,
        env_config: dict[str, Any],
        loss_key: str,
        regenerator: Any | None = None,
    ) -> None:
        from rllib_diffusion.checkpoints import CheckpointMeta
        from rllib_diffusion.utils.runtime import run_metadata

        self.tag, self.build, self.settings = tag, build_algo, settings
        self.dataset, self.env_config, self.loss_key = dataset, env_config, loss_key
        # Rollouts regenerated with the current policy (``regenerated_rollouts``), also
        # inside an iteration; the iteration's regenerations go into its line.
        self.regenerator = regenerator
        self._meta = CheckpointMeta.from_dict(
            {**meta, "settings": asdict(settings), "dataset": dataset.summary()}
        ).replace(run=run_metadata())

    def meta(self):
        return self._meta

    def check_resumable(self, saved, where: Path) -> None:
        import dataclasses

        # Settings added after a checkpoint was written count as their defaults there.
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(self.settings)
            if f.default is not dataclasses.MISSING
        }
        theirs = {
            **{k: v for k, v in defaults.items() if k in NEWER_SETTINGS},
            **(saved.settings or {}),
        }
        check_same_run_settings(theirs, asdict(self.settings), where)

    def save_files(self, algo: Any, directory: Path) -> dict[str, Any]:
        if self.regenerator is None:
            return {}
        return self.regenerator.save(algo, directory)

    def restore(self, algo: Any, ckpt_dir: Path) -> dict[str, Any] | None:
        algo.restore_from_path(str(ckpt_dir))
        if self.regenerator is None:
            return None
        from rllib_diffusion.checkpoints import read_checkpoint_meta

        record = read_checkpoint_meta(ckpt_dir).synthetic_pool
        step = int(algo.iteration) * self.settings.steps_per_iteration
        return self.regenerator.restore(algo, ckpt_dir, record, step)

    def before_iteration(self, algo: Any, counter: int, control: RunControl) -> None:
        if self.regenerator is not None:
            self.regenerator.start_iteration(algo, counter)

    def progress_line(self, algo, result, it: int, *, evaluated: bool) -> dict[str, Any]:
        line = offline_progress_line(
            result,
            it,
            steps_per_iteration=self.settings.steps_per_iteration,
            loss_key=self.loss_key,
            evaluated=evaluated,
        )
        if self.regenerator is not None:
            line.update(self.regenerator.take_lines())
        return line

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        msg = (
            f"[{self.tag}] iter {line['iteration']}/{self.settings.iterations}  grad steps "
            f"{line['gradient_steps']}  loss {line['loss']:.4f}  {line['seconds']:.0f}s"
        )
        if "q_mean" in line:
            msg += f"  Q data/target {line['q_mean']:.1f}/{line.get('target_mean', 0.0):.1f}"
        if "td_error" in line:
            msg += f"  |TD| {line['td_error']:.3g}"
        if "eval_return_mean" in line:
            msg += f"  eval return {line['eval_return_mean']:.1f}"
        return msg

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.evaluation import evaluate_module

        module, _ = load_policy_module(ckpt, expect_algorithms=(self._meta.algorithm,))
        return evaluate_module(
            module,
            self.env_config,
            num_episodes=control.eval_episodes,
            seed=10_000 + control.seed,
            dataset=self._meta.dataset,
        )

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        summary = {
            **base,
            "dataset_return_mean": float(self.dataset.episode_returns().mean()),
            "evaluation": evaluation,
        }
        print(
            f"[{self.tag}] eval return {evaluation['episode_return_mean']:.1f} ± "
            f"{evaluation['episode_return_std']:.1f} over {evaluation['num_episodes']} episodes "
            f"(dataset mean {summary['dataset_return_mean']:.1f}); train time "
            f"{base['train_seconds']:.0f}s",
            flush=True,
        )
        return summary


def offline_progress_line(
    result: dict[str, Any],
    it: int,
    *,
    steps_per_iteration: int,
    loss_key: str,
    evaluated: bool,
) -> dict[str, Any]:
    """One ``progress.jsonl`` line: iteration, gradient steps, loss, the critic's
    diagnostics (Q-learners: :data:`rllib_diffusion.metrics.CRITIC_DIAGNOSTICS`), fresh
    eval return."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS, LEARNER_RESULTS

    from rllib_diffusion.metrics import critic_diagnostics

    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        "iteration": it,
        "gradient_steps": it * steps_per_iteration,
        "loss": float(learner.get(loss_key, float("nan"))),
        **critic_diagnostics(learner),
    }
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    # RLlib keeps the last evaluation's results around; report them only when fresh.
    if evaluated and "episode_return_mean" in ev:
        line["eval_return_mean"] = float(ev["episode_return_mean"])
    return line


def run_offline_training(
    build_algo: Callable[[], Any],
    settings: OfflineRunSettings,
    *,
    started: float,
    **family: Any,
) -> dict[str, Any]:
    """Train, checkpoint, evaluate what was saved, write ``out/result.json``; return it:
    the run loop with an :class:`OfflineFamily` (``family``: its keyword arguments
    ``tag``, ``meta``, ``dataset``, ``env_config``, ``loss_key``, ``regenerator``).

    With ``settings.resume`` and a checkpoint in ``out``, training continues after the
    checkpoint's iteration (see :class:`OfflineRunSettings`).
    """
    s = settings
    control = RunControl.from_settings(s, budget=s.gradient_steps)
    summary = run_training(OfflineFamily(build_algo, s, **family), control)
    summary["total_seconds"] = time.perf_counter() - started
    return summary
