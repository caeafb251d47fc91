"""DSRL fine-tuning run: DiffusionBC checkpoint → SAC over its noise → checkpoints + curve.

``rllib-diffusion finetune --algo dsrl --checkpoint <BC checkpoint>``: a
:class:`DSRLFamily` on the shared run loop (``rllib_diffusion.run_loop``), driven by
``FinetuneSettings``' run control. Budget in true env steps (an iteration samples
``decisions_per_iteration`` chunks; the budget is reached at the first iteration that
crosses it). Iteration 0 evaluates the base policy as DSRL decodes it (``w ~ N(0, I)``);
the end evaluates the saved checkpoint (SAC's noise policy, deterministic ``tanh(mean)``,
decoded by the base policy named in its metadata). ``resume`` continues from
``out_dir/checkpoint`` (networks, optimisers, temperature, counters; the replay buffer
is not checkpointed, as in RLlib's SAC by default).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dsrl.dsrl import ALGORITHM_NAME, DSRLConfig, DSRLModelConfig
from rllib_diffusion.checkpoints import (
    CheckpointError,
    CheckpointMeta,
    check_resume_settings,
    read_checkpoint_meta,
)
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig
from rllib_diffusion.run_loop import EVAL_RETURN, RunControl, RunFamily, before_after_summary

#: DSRL knobs (RLlib's) that ``AlgorithmConfig.env_runners()`` sets.
ENV_RUNNER_KNOBS = ("rollout_fragment_length",)

#: RLlib timers (moving mean seconds per call) → progress keys: one gradient step
#: (learner update), one replay sample, one sampling round of the EnvRunners.
TIMER_KEYS = {
    "learner_update_timer": "seconds_per_update",
    "replay_buffer_sampling_timer": "seconds_per_replay_sample",
    "env_runner_sampling_timer": "seconds_per_sampling_round",
}

#: Iteration-0 progress key: return of the base policy decoded from ``w = 0``.
EVAL_RETURN_ZERO_NOISE = "eval_return_zero_noise"
#: ``result.json`` key of the same (mean return).
ZERO_NOISE_RESULT = "start_return_zero_noise"


def decoder_knobs(config: DSRLConfig) -> dict[str, Any]:
    """What the checkpoint metadata records (``hyperparameters``) to act again: the
    variant, the resolved noise bound and the decoder's DDIM steps."""
    return {
        "noise_aliased": config.noise_aliased,
        "noise_bound": config.resolved_noise_bound,
        "decoder_ddim_steps": config.decoder_ddim_steps,
    }


def base_policy(checkpoint: str | Path) -> tuple[DiffusionPolicyConfig, CheckpointMeta]:
    """The DiffusionBC checkpoint's policy config and metadata (a one-line error if it is
    another kind of checkpoint)."""
    meta = read_checkpoint_meta(checkpoint)
    if meta.algorithm != "DiffusionBC":
        raise CheckpointError(
            f"DSRL steers DiffusionBC checkpoints; '{checkpoint}' is a {meta.algorithm!r} "
            "checkpoint. Pretrain with `rllib-diffusion pretrain`."
        )
    return DiffusionPolicyConfig.from_dict(meta.policy_config, strict=False), meta


def dsrl_config(s: Any) -> DSRLConfig:
    """A ``DSRLConfig`` for settings ``s`` (``FinetuneSettings``): env, spaces and
    resources from the base checkpoint and the run control, knobs from ``s.knobs``."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.finetune_run import chunked_run_config

    if getattr(s, "use_ddim", False) or getattr(s, "ddim_steps", None) is not None:
        raise ConfigError(
            "finetune --algo dsrl: --use-ddim/--ddim-steps are DPPO's; DSRL decodes "
            "diffusion policies with DDIM (eta 0) over --decoder-ddim-steps."
        )
    policy, _ = base_policy(s.checkpoint)
    training, model = registry.get(s.algo).split_knobs(s.knobs)
    # RLlib takes these in env_runners(), not training().
    runner_knobs = {k: training.pop(k) for k in ENV_RUNNER_KNOBS if k in training}
    return (
        chunked_run_config(DSRLConfig(), policy, s, **runner_knobs)
        .training(**training, base_checkpoint=str(Path(s.checkpoint).expanduser().resolve()))
        .rl_module(model_config=DSRLModelConfig(**model).rllib_model_config())
        .reporting(
            min_sample_timesteps_per_iteration=s.decisions_per_iteration,
            min_time_s_per_iteration=0,
        )
    )


class DSRLFamily(RunFamily):
    """DSRL fine-tuning on the run loop (see the module doc)."""

    tag = "finetune"
    unit = "env_steps"

    def __init__(self, s: Any) -> None:
        from rllib_diffusion.algorithms.finetune_run import validated
        from rllib_diffusion.envs.tasks import reference_scores
        from rllib_diffusion.utils.runtime import run_metadata

        self.s = s
        self.config = validated(dsrl_config(s), s.algo)
        self.policy, base_meta = base_policy(s.checkpoint)
        _, model = _split(s)
        self._meta = CheckpointMeta(
            algorithm=ALGORITHM_NAME,
            env_id=self.policy.env_id,
            policy_config=self.policy.to_dict(),
            model_config=DSRLModelConfig(**model).to_dict(),
            settings=dataclasses.asdict(s),
            hyperparameters=decoder_knobs(self.config),
            pretrained_checkpoint=self.config.base_checkpoint,
            dataset=base_meta.dataset,
            run=run_metadata(),
        )
        self.refs = reference_scores(self.policy.env_id, base_meta.dataset)
        self.env_steps = 0

    def meta(self) -> CheckpointMeta:
        return self._meta

    def check_resumable(self, saved: CheckpointMeta, where: Path) -> None:
        fields = ("pretrained_checkpoint", "model_config", "hyperparameters")
        check_resume_settings(
            {name: getattr(saved, name) for name in fields},
            {name: getattr(self._meta, name) for name in fields},
            where,
        )

    def build(self) -> Any:
        from rllib_diffusion.algorithms.finetune_run import warn_missing_resources
        from rllib_diffusion.utils.runtime import init_ray

        init_ray()
        with warn_missing_resources(self.config):
            return self.config.build_algo()

    def start(self, algo: Any, control: RunControl) -> dict[str, Any]:
        """The base policy as DSRL decodes it, in the real env: with ``w ~ N(0, I)`` (the
        start evaluation) and with ``w = 0`` (what an actor with mean 0 plays
        deterministically, so the final evaluation's reference too)."""
        from rllib_diffusion.algorithms.dsrl.decoder import ZeroNoisePolicy, load_decoder

        decoder = load_decoder(self.config.base_checkpoint, self.config.decoder_ddim_steps)
        self.start_evaluation = self._evaluate(decoder, 20_000 + control.seed, control)
        zero = self._evaluate(ZeroNoisePolicy(decoder), 20_000 + control.seed, control)
        self.zero_noise_evaluation = zero
        print(
            f"[finetune] start: base policy return "
            f"{self.start_evaluation['episode_return_mean']:.1f} ± "
            f"{self.start_evaluation['episode_return_std']:.1f} (w ~ N(0, I)), "
            f"{zero['episode_return_mean']:.1f} ± {zero['episode_return_std']:.1f} (w = 0)",
            flush=True,
        )
        return {
            "iteration": 0,
            "env_steps": 0,
            EVAL_RETURN: self.start_evaluation["episode_return_mean"],
            EVAL_RETURN_ZERO_NOISE: zero["episode_return_mean"],
        }

    def restore(self, algo: Any, ckpt_dir: Path) -> dict[str, Any]:
        algo.restore_from_path(str(Path(ckpt_dir).resolve()))
        self.env_steps = int(read_checkpoint_meta(ckpt_dir).env_steps or 0)
        skip_warmup(algo)
        return {"env_steps": self.env_steps}

    def progress_line(self, algo: Any, result: dict, it: int, *, evaluated: bool) -> dict[str, Any]:
        line = progress_line(result, evaluated=evaluated)
        self.env_steps += line.pop(M.ENV_STEPS_SAMPLED)
        return {"env_steps": self.env_steps, **line}

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        def g(key: str, fmt: str = ".2f") -> str:
            v = line.get(key)
            return "n/a" if v is None else format(v, fmt)

        msg = (
            f"[finetune] iter {line['iteration']}  env steps {line['env_steps']}/{control.budget}"
            f"  train return {g(M.TRAIN_RETURN, '.1f')}  q {g('qf_mean')}  alpha "
            f"{g('alpha_value', '.3g')}  policy loss {g('policy_loss')}"
            f"  s/update {g('seconds_per_update', '.3f')}"
        )
        if EVAL_RETURN in line:
            msg += f"  EVAL return {g(EVAL_RETURN, '.1f')}"
        return msg

    def finish(self, algo: Any) -> dict[str, Any]:
        from rllib_diffusion.algorithms.finetune_run import runner_placement

        return {"placement": runner_placement(algo)}

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        return self._evaluate(load_steered_policy(ckpt), 30_000 + control.seed, control)

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        summary = before_after_summary(self.tag, base, self.start_evaluation, evaluation)
        # w = 0 reference of a fresh run (a resumed one reads it from line 0).
        line0 = next((x for x in base["progress"] if x.get("iteration") == 0), {})
        summary[ZERO_NOISE_RESULT] = line0.get(EVAL_RETURN_ZERO_NOISE)
        return summary

    def _evaluate(self, policy: Any, seed: int, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.evaluation import evaluate_module

        return evaluate_module(
            policy,
            self.policy.env_config(),
            num_episodes=control.eval_episodes,
            seed=seed,
            dataset=self._meta.dataset,
        )


def _split(s: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from rllib_diffusion.algorithms import registry

    return registry.get(s.algo).split_knobs(s.knobs)


def load_steered_policy(ckpt: str | Path) -> Any:
    """A DSRL checkpoint as a chunk policy: its SAC module followed by the decoder of the
    base checkpoint its metadata names (:class:`~.decoder.SteeredPolicy`)."""
    from rllib_diffusion.algorithms.dsrl.decoder import SteeredPolicy, load_decoder
    from rllib_diffusion.checkpoints import load_policy_module

    module, meta = load_policy_module(ckpt, expect_algorithms=(ALGORITHM_NAME,))
    knobs = meta.hyperparameters or {}
    decoder = load_decoder(meta.pretrained_checkpoint, knobs.get("decoder_ddim_steps"))
    return SteeredPolicy(module, decoder, knobs["noise_bound"])


def skip_warmup(algo: Any) -> None:
    """After a restore, the base-policy warm-up is over: tell every EnvRunner's decoder."""
    from rllib_diffusion.algorithms.dsrl.dsrl_connectors import end_warmup

    for group in (algo.env_runner_group,):
        group.foreach_env_runner(end_warmup, local_env_runner=True)


def progress_line(result: dict[str, Any], *, evaluated: bool) -> dict[str, Any]:
    """Per-iteration metrics of an RLlib SAC result: the true env steps sampled this
    iteration (:data:`~rllib_diffusion.metrics.ENV_STEPS_SAMPLED`), decisions so far, the
    training return, SAC's losses and temperature, seconds per call of SAC's parts
    (:data:`TIMER_KEYS`) and the evaluation return."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        TIMERS,
    )

    from rllib_diffusion.algorithms.finetune_run import return_fields

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        M.ENV_STEPS_SAMPLED: int(runners.get(M.ENV_STEPS_SAMPLED, 0)),
        "decisions": int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
        M.REPLAY_TRANSITIONS: int(result.get(M.REPLAY_TRANSITIONS, 0)),
    }
    for key in ("policy_loss", "qf_loss", "qf_mean", "alpha_value", "alpha_loss"):
        if key in learner:
            line[key] = M.float_or_none(learner[key])
    timers = result.get(TIMERS, {})
    for key, name in TIMER_KEYS.items():
        if key in timers:
            line[name] = M.float_or_none(timers[key])
    return {**line, **return_fields(result, None, evaluated=evaluated)}
