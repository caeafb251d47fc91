"""Offline → online run (``rllib-diffusion online``): an offline checkpoint of IDQL, FQL,
Diffusion-QL or DAC keeps training on EnvRunner data.

checkpoint of ``rllib-diffusion offline`` → same algorithm, losses, optimizer states,
targets and EMA, now fed from a replay buffer seeded with the offline dataset and filled
by EnvRunners (``algorithms/online.py``) → checkpoints, ``progress.jsonl``,
``result.json`` with the return before and after, through the shared run loop
(``rllib_diffusion.run_loop``). ``--resume`` continues the run's own checkpoint (the
run loop's resume: learner state, replay buffer, iteration and env-step counters).

Online SynthER (``--synther-real-ratio R`` < 1, knobs declared by
:class:`~rllib_diffusion.algorithms.synthetic_replay.SynthEROnlineConfigMixin`): the
replay fine-tuners' generator retrained every ``--synther-retrain-every`` env steps on
the replay (offline rows included), its pool mixed into every minibatch at the exact
ratio (``OfflineQMixin``); its generator and pool are saved with each checkpoint and
restored by ``--resume``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rllib_diffusion.checkpoints import CheckpointMeta
from rllib_diffusion.knobs import Count, NonNegative, PositiveFloat, check_ranges
from rllib_diffusion.run_loop import (
    EVAL_RETURN,
    RunControl,
    RunFamily,
    before_after_summary,
    run_training,
)


@dataclass
class OnlineSettings:
    """Settings of an offline → online run (CLI flags map 1:1 onto these).

    Attributes:
        checkpoint: checkpoint directory of ``rllib-diffusion offline`` (any ``--algo``).
        out_dir: output directory.
        dataset: offline data seeding the replay buffer (default: the checkpoint's).
        env_steps: online env-step budget.
        env_steps_per_iteration: env steps sampled per iteration (all EnvRunners).
        updates_per_env_step: gradient steps per new env step (update-to-data ratio).
        num_env_runners: CPU EnvRunners (0: sample in the driver).
        num_envs_per_env_runner: vectorised envs per EnvRunner.
        eval_interval: deterministic evaluation every this many iterations (0: end only).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: checkpoint every this many iterations (0: end only).
        seed: RNG seed.
        resume: continue from ``out_dir/checkpoint`` if it exists (learner state with
            optimizers, targets and EMA, the replay buffer with its sampling RNG, the
            iteration and env-step counters; progress lines up to it); the other
            settings must match the checkpoint's, except the run control (env_steps,
            eval and checkpoint cadence).
        overwrite: replace an earlier run in OUT (its checkpoint, progress, result and
            TensorBoard files); without it (or --resume) an earlier run there is an error.
        knobs: online SynthER's knobs given (``SynthEROnlineConfigMixin.training()``'s,
            e.g. ``synther_real_ratio``; the others keep their defaults); none: off.
    """

    checkpoint: str
    out_dir: str = "runs/online"
    dataset: str | None = None
    env_steps: Count = 100_000
    env_steps_per_iteration: Count = 1000
    updates_per_env_step: PositiveFloat = 1.0
    num_env_runners: NonNegative = 1
    num_envs_per_env_runner: Count = 1
    eval_interval: NonNegative = 10
    eval_episodes: Count = 10
    checkpoint_interval: NonNegative = 10
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rllib_diffusion.algorithms.synthetic_replay import DEFAULTS, knob_error
        from rllib_diffusion.knobs import check_knobs
        from rllib_diffusion.modules.model_config import ConfigError

        check_ranges(self)
        check_knobs("rllib-diffusion online", set(DEFAULTS), self.knobs)
        error = knob_error({**DEFAULTS, **self.knobs}, None)  # the split: the config's
        if error:
            raise ConfigError(error)


def online_config(s: OnlineSettings, meta: CheckpointMeta):
    """The offline run's config, switched to its online phase (EnvRunners, no input)."""
    from rllib_diffusion.algorithms.offline_q.train import build_offline_config, settings_from_meta

    offline = settings_from_meta(meta.settings)
    offline.eval_interval, offline.eval_episodes, offline.seed = (
        s.eval_interval,
        s.eval_episodes,
        s.seed,
    )
    # The online phase reads no offline input: no synthetic data to mix into it.
    offline.synthetic_dataset, offline.real_ratio, offline.dydiff_model = None, 1.0, None
    if offline.lr_end is not None:
        # Schedules are indexed by sampled steps, which restart online: keep the end value.
        offline.lr, offline.lr_end = offline.lr_end, None
    model = meta.model_config
    config, _ = build_offline_config(
        offline, "", meta.env_id, model["obs_dim"], model["action_dim"]
    )
    config.rl_module(model_config=model)
    config.offline_data(input_=None)
    config.online_phase(
        enabled=True,
        env_steps_per_iteration=s.env_steps_per_iteration,
        updates_per_env_step=s.updates_per_env_step,
        synther=s.knobs,
    )
    config.env_runners(
        num_env_runners=s.num_env_runners,
        num_envs_per_env_runner=s.num_envs_per_env_runner,
        num_cpus_per_env_runner=1,
        # Diffusion acting (N candidates × T steps) on a busy CPU can take minutes per
        # 1,000 steps; RLlib's 60 s default would drop the sample.
        sample_timeout_s=600.0,
        # One sample() per runner and iteration yields ``env_steps_per_iteration`` steps.
        rollout_fragment_length=max(
            1,
            -(
                -s.env_steps_per_iteration
                // (max(s.num_env_runners, 1) * s.num_envs_per_env_runner)
            ),
        ),
    )
    return config


#: Settings a resumed run may change (run control); every other one must match.
RESUME_MAY_CHANGE = frozenset(
    {
        "out_dir",
        "resume",
        "overwrite",
        "env_steps",
        "eval_interval",
        "eval_episodes",
        "checkpoint_interval",
    }
)


class OnlineFamily(RunFamily):
    """The online phase of an offline algorithm on the run loop: budget in env steps,
    the offline learner state restored and the replay buffer seeded on start. Its
    checkpoints hold the replay buffer too (``OfflineQMixin.get_state``), so a resumed
    run restores everything from its own checkpoint and reads neither the offline
    checkpoint's weights nor the dataset again; with online SynthER on, its generator
    and pool too (:meth:`save_files`, :meth:`restore`)."""

    tag = "online"
    unit = "env_steps"

    def __init__(self, s: OnlineSettings) -> None:
        from rllib_diffusion.algorithms import registry
        from rllib_diffusion.checkpoints import CheckpointError, read_checkpoint_meta
        from rllib_diffusion.utils.runtime import run_metadata

        self.s = s
        self.offline = meta = read_checkpoint_meta(s.checkpoint)
        spec = registry.by_checkpoint_algorithm(meta.algorithm)
        if spec is None or spec.kind != registry.OFFLINE_Q:
            raise CheckpointError(
                f"Online fine-tuning continues an `rllib-diffusion offline` run "
                f"({', '.join(registry.names(registry.OFFLINE_Q))}); '{s.checkpoint}' is a "
                f"{meta.algorithm!r} checkpoint."
            )
        self.env_steps = 0
        self.resuming = False  # set by check_resumable (called only when resuming)
        self._meta = meta.replace(
            phase="online",
            offline_checkpoint=str(Path(s.checkpoint).resolve()),
            settings={**meta.settings, "online": asdict(s)},
            run=run_metadata(),
            hyperparameters=None,
            dataset=None,
            iteration=None,
            train_seconds=None,
            synthetic_pool=None,  # the offline run's regenerated pool is not this run's
        )

    def meta(self):
        return self._meta

    def check_resumable(self, saved: CheckpointMeta, where: Path) -> None:
        """The checkpoint must be this command's, from the same offline checkpoint and
        with the same settings; only run control may differ (:data:`RESUME_MAY_CHANGE`)."""
        from rllib_diffusion.algorithms.offline_run import check_same_run_settings
        from rllib_diffusion.algorithms.synthetic_replay import DEFAULTS
        from rllib_diffusion.checkpoints import CheckpointError

        if saved.phase != "online":
            raise CheckpointError(
                f"Cannot resume '{where}': it is an `rllib-diffusion offline` run's "
                "checkpoint, not an online run's; give the online run's --out."
            )
        theirs = {**(saved.settings or {}).get("online", {})}
        theirs["checkpoint"] = saved.offline_checkpoint
        # SynthER's knobs as values (given or default; runs before them had none: off).
        theirs["knobs"] = {**DEFAULTS, **(theirs.get("knobs") or {})}
        ours = {k: v for k, v in asdict(self.s).items() if k not in RESUME_MAY_CHANGE}
        ours["checkpoint"] = self._meta.offline_checkpoint
        ours["knobs"] = {**DEFAULTS, **self.s.knobs}
        check_same_run_settings(theirs, ours, where)
        self.resuming = True

    def build(self):
        from rllib_diffusion.utils.runtime import init_ray

        if not self.resuming:  # a resumed run restores its replay and start evaluation
            self._load_dataset_and_evaluate_start()
        init_ray()
        return online_config(self.s, self.offline).build_algo()

    def _load_dataset_and_evaluate_start(self) -> None:
        from rllib_diffusion.algorithms.offline_run import load_validated_dataset

        source = self.s.dataset or self.offline.settings["dataset"]
        self.dataset, _ = load_validated_dataset(
            source,
            env_id=self.offline.env_id,
            allow_out_of_bounds_actions=bool(
                (self.offline.settings or {}).get("allow_out_of_bounds_actions", False)
            ),
        )
        self.start_evaluation = self._evaluate(self.s.checkpoint, 20_000 + self.s.seed)
        print(
            f"[online] {self.offline.algorithm} from {self.s.checkpoint}: offline policy return "
            f"{self.start_evaluation['episode_return_mean']:.1f} ± "
            f"{self.start_evaluation['episode_return_std']:.1f}",
            flush=True,
        )

    def start(self, algo, control: RunControl) -> None:
        from rllib_diffusion.algorithms.online import dataset_transitions

        # Networks, targets, EMA, step counters and optimizer states of the offline run.
        # Absolute: pyarrow (under restore_from_path) rejects relative paths.
        offline = Path(self.s.checkpoint).resolve()
        algo.learner_group.restore_from_path(str(offline / "learner_group"))
        for group in (algo.env_runner_group, algo.eval_env_runner_group):
            if group is not None:
                group.sync_weights(
                    from_worker_or_learner_group=algo.learner_group, inference_only=True
                )
        algo.seed_replay_buffer(dataset_transitions(self.dataset))
        print(
            f"[online] replay buffer seeded with {algo.replay_buffer.size} offline transitions",
            flush=True,
        )
        return None

    def restore(self, algo, ckpt_dir: Path) -> dict[str, Any]:
        """The run's own checkpoint: learner state, replay buffer (``OfflineQMixin``'s
        state), metrics with the env-step count, iteration; EnvRunners get its weights."""
        from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

        from rllib_diffusion.checkpoints import CheckpointError

        algo.restore_from_path(str(ckpt_dir))
        if algo.replay_buffer is None:
            raise CheckpointError(
                f"Cannot resume '{ckpt_dir}': it holds no replay buffer; use another --out."
            )
        self.env_steps = int(
            algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        )
        print(
            f"[online] restored {self.env_steps} env steps and a replay buffer of "
            f"{algo.replay_buffer.size} transitions",
            flush=True,
        )
        resumed = {"env_steps": self.env_steps, "replay_size": algo.replay_buffer.size}
        if algo.synther is None:
            return resumed
        from rllib_diffusion.checkpoints import read_checkpoint_meta

        record = read_checkpoint_meta(ckpt_dir).synthetic_pool
        return resumed | algo.synther.restore(ckpt_dir, record, self.env_steps)

    def save_files(self, algo, directory: Path) -> dict[str, Any]:
        """Online SynthER's generator and pool (nothing when off or before a retrain)."""
        return {} if algo.synther is None else algo.synther.save(directory)

    def before_iteration(self, algo, counter: int, control: RunControl) -> None:
        """Tell the algorithm whether the coming iteration ends the budget (it samples at
        least ``env_steps_per_iteration``): online SynthER skips a retrain due in it."""
        algo.mark_last_iteration(counter + self.s.env_steps_per_iteration >= control.budget)

    def progress_line(self, algo, result, it: int, *, evaluated: bool) -> dict[str, Any]:
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.utils.metrics import (
            ENV_RUNNER_RESULTS,
            EVALUATION_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
        )

        from rllib_diffusion.algorithms.offline_q.offline_q import REPLAY_SIZE
        from rllib_diffusion.metrics import critic_diagnostics, float_or_none

        runners = result.get(ENV_RUNNER_RESULTS, {})
        lifetime = float_or_none(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME))
        self.env_steps = self.env_steps if lifetime is None else int(lifetime)
        line: dict[str, Any] = {
            "env_steps": self.env_steps,
            "train_return_mean": float_or_none(runners.get("episode_return_mean")),
            "replay_size": int(float_or_none(result.get(REPLAY_SIZE)) or 0),
            **critic_diagnostics(result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})),
            **synther_progress(result),
        }
        ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
        if evaluated and "episode_return_mean" in ev:
            line[EVAL_RETURN] = float(ev["episode_return_mean"])
        return line

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        ret = line["train_return_mean"]
        msg = (
            f"[online] iter {line['iteration']}  env steps {line['env_steps']}/{control.budget}"
            f"  train return {'n/a' if ret is None else format(ret, '.1f')}"
            f"  buffer {line['replay_size']}"
        )
        msg += "".join(
            f"  {label} {line[key]:{fmt}}" for label, key, fmt in synther_shown() if key in line
        )
        if EVAL_RETURN in line:
            msg += f"  EVAL return {line[EVAL_RETURN]:.1f}"
        return msg

    def _evaluate(self, ckpt: str, seed: int) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.evaluation import evaluate_module

        module, _ = load_policy_module(ckpt, expect_algorithms=(self.offline.algorithm,))
        return evaluate_module(
            module,
            self.offline.env_config,
            num_episodes=self.s.eval_episodes,
            seed=seed,
            dataset=self.offline.dataset,
        )

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        return self._evaluate(ckpt, 30_000 + control.seed)

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        return before_after_summary(self.tag, base, self.start_evaluation, evaluation)


def synther_shown() -> tuple[tuple[str, str, str], ...]:
    """``(label, key, format)`` of online SynthER's values a printed line shows (the
    replay fine-tuners' ``SYNTHER_SHOWN``)."""
    from rllib_diffusion.algorithms.replay_finetune import SYNTHER_SHOWN

    return SYNTHER_SHOWN


def synther_progress(result: dict[str, Any]) -> dict[str, Any]:
    """Online SynthER's values in an iteration's ``result`` (none when off): the shown
    ones and those a progress line only carries (the replay fine-tuners' keys)."""
    from rllib_diffusion.algorithms.replay_finetune import SYNTHER_CARRIED

    keys = (*(key for _, key, _ in synther_shown()), *SYNTHER_CARRIED)
    return {key: result[key] for key in keys if key in result}


def finetune_online(settings: OnlineSettings) -> dict[str, Any]:
    """Run online fine-tuning; returns the summary also written to ``result.json``."""
    from rllib_diffusion.utils.runtime import limit_threads

    s = settings
    limit_threads()
    return run_training(OnlineFamily(s), RunControl.from_settings(s, budget=s.env_steps))
