"""DPPO fine-tuning run: DiffusionBC checkpoint → DPPO on EnvRunners → checkpoints + curve.

Library function behind ``rllib-diffusion finetune`` and ``experiments/finetune.py``, a
:class:`DPPOFamily` on the shared run loop (``rllib_diffusion.run_loop``). Writes into
``out_dir``: ``progress.jsonl`` (one line per iteration), ``checkpoint/``
(atomic, every ``checkpoint_interval`` iterations and at the end), ``tensorboard/``
(event files with the progress-line scalars, x-axis = env steps) and ``result.json``
(incl. the nodes the EnvRunners and learners ran on).

Cluster runs: ``env_runner_resources`` / ``learner_resources`` pin EnvRunners / remote
learners to nodes that advertise those custom resources (``ray start --resources``);
crashed EnvRunners are restarted by Ray and training goes on (RLlib fault tolerance);
``resume`` continues a killed run from ``out_dir/checkpoint``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms import registry
from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig, check_policy_match
from rllib_diffusion.algorithms.finetune_run import (
    BudgetedFinetuneHooks,
    FinetuneSettings,
    chunked_run_config,
    finetune,
    learner_module_copy,
    pretrained_policy,
    return_fields,
    runner_placement,
    start_line,
    validated,
    warn_missing_resources,
)
from rllib_diffusion.algorithms.synthetic_ppo import METRICS_NAMESPACE as SYN_NAMESPACE
from rllib_diffusion.checkpoints import (
    CheckpointMeta,
    check_resume_settings,
    read_checkpoint_meta,
)
from rllib_diffusion.envs.tasks import reference_scores
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig
from rllib_diffusion.run_loop import RunControl, RunFamily, before_after_summary

# ``finetune`` and ``FinetuneSettings`` live in the fine-tuning layer above the families
# (``finetune_run``); imported here for the callers of this module's older home.
__all__ = ["DPPOFamily", "FinetuneSettings", "dppo_config_from_pretrained", "finetune"]


def dppo_config_from_pretrained(checkpoint: str | Path, s: FinetuneSettings) -> DPPOConfig:
    """The config of ``s.algo`` (DPPO or a chain-PPO sibling: its registry spec's config
    and model-config classes) whose env, spaces and model match the pretrained
    checkpoint."""
    spec = registry.get(s.algo)
    policy = pretrained_policy(checkpoint, s)
    training, model_knobs = spec.split_knobs(s.knobs)
    model = spec.model_config_class(policy=policy.to_dict(), **model_knobs)
    # DPPO's training_step re-samples when every runner was down (see DPPO).
    return (
        chunked_run_config(spec.config_class(), policy, s, lockstep_eval=True)
        .training(
            # RLlib samples train_batch_size_per_learner × num_learners per iteration:
            # split the decisions so the total is what was asked for.
            train_batch_size_per_learner=-(-s.decisions_per_iteration // max(1, s.num_learners)),
            **training,
            pretrained_checkpoint=str(Path(checkpoint).expanduser().resolve()),
        )
        .rl_module(model_config=model.to_dict())
    )


class DPPOFamily(BudgetedFinetuneHooks, RunFamily):
    """DPPO (or a chain-PPO sibling, ``s.algo``) fine-tuning on the run loop: budget in
    true env steps (the last iteration is sized to end at it), an iteration-0 evaluation
    of the pretrained policy, restores verified on every EnvRunner, health warnings per
    iteration."""

    tag = "finetune"
    unit = "env_steps"

    def __init__(self, s: FinetuneSettings) -> None:
        from rllib_diffusion.checkpoints import CheckpointMeta
        from rllib_diffusion.utils.runtime import run_metadata

        self.s = s
        self.config = validated(dppo_config_from_pretrained(s.checkpoint, s), s.algo)
        self.policy = DiffusionPolicyConfig.from_dict(
            self.config.model_config["policy"], strict=False
        )
        self._meta = CheckpointMeta(
            algorithm=registry.get(s.algo).checkpoint_algorithm,
            env_id=self.policy.env_id,
            policy_config=self.policy.to_dict(),
            model_config=self.config.model_config,
            settings=asdict(s),
            pretrained_checkpoint=str(Path(s.checkpoint).resolve()),
            # The pretraining data's summary: its reference scores normalise returns.
            dataset=read_checkpoint_meta(s.checkpoint).dataset,
            run=run_metadata(),
        )
        self.refs = reference_scores(self.policy.env_id, self._meta.dataset)

    def meta(self):
        return self._meta

    def check_resumable(self, saved, where: Path) -> None:
        _check_resumable(saved, self.config.model_config, where)

    def build(self):
        from rllib_diffusion.utils.runtime import init_ray

        init_ray()
        with warn_missing_resources(self.config):
            algo = self.config.build_algo()
        print(describe_run(self.config, self.s), flush=True)
        return algo

    def start(self, algo, control: RunControl) -> dict[str, Any]:
        """Where fine-tuning starts: the pretrained policy, deterministic, real env."""
        from rllib_diffusion.evaluation import evaluate_module

        self.start_evaluation = evaluate_module(
            learner_module_copy(algo),
            self.policy.env_config(),
            num_episodes=control.eval_episodes,
            seed=20_000 + control.seed,
            dataset=self._meta.dataset,
        )
        return start_line(self.start_evaluation, control.eval_episodes)

    def acting(self) -> str:
        return "actor_ft"

    def progress_line(self, algo, result, it: int, *, evaluated: bool) -> dict[str, Any]:
        line = progress_line(result, it, self.refs, evaluated=evaluated)
        # The algorithm's (checkpointed) count is the budget's source of truth.
        line["env_steps"] = int(algo.env_steps_lifetime)
        for warning in health_warnings(line, self.config.critic_warmup_iterations):
            print(warning, file=sys.stderr, flush=True)
        return line

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        return format_line(line)

    def finish(self, algo) -> dict[str, Any]:
        return {"placement": runner_placement(algo)}

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.evaluation import evaluate_module

        module, _ = load_policy_module(ckpt)
        return evaluate_module(
            module,
            self.policy.env_config(),
            num_episodes=control.eval_episodes,
            seed=30_000 + control.seed,
            dataset=self._meta.dataset,
        )

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        return before_after_summary(self.tag, base, self.start_evaluation, evaluation)


# ------------------------------------------------------------------- resume helpers
def _check_resumable(meta: CheckpointMeta, model_config: dict[str, Any], where: Path) -> None:
    """The checkpoint's module must be the one these settings build."""
    theirs = meta.model_config or {}
    check_policy_match(theirs.get("policy", {}), model_config["policy"], str(where))
    ours = {k: v for k, v in model_config.items() if k != "policy"}
    check_resume_settings({k: theirs.get(k) for k in ours}, ours, where)


def progress_line(
    result: dict[str, Any], it: int, refs: dict[str, Any] | None, *, evaluated: bool
) -> dict:
    """Flat per-iteration metrics from an RLlib result dict; ``refs``: the run's
    reference scores (:func:`~rllib_diffusion.envs.tasks.reference_scores`) or None."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import LEARNER_RESULTS

    dppo = result.get(M.DPPO_NAMESPACE, {})
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        "iteration": it,
        "env_steps": int(dppo.get(M.ENV_STEPS, 0)),
        "decisions": int(result.get(M.DECISIONS_LIFETIME, 0)),
        M.SAMPLE_SECONDS: M.float_or_none(dppo.get(M.SAMPLE_SECONDS)),
        M.LEARN_SECONDS: M.float_or_none(dppo.get(M.LEARN_SECONDS)),
        M.SYNC_SECONDS: M.float_or_none(dppo.get(M.SYNC_SECONDS)),
    }
    for key in (
        M.RATIO_FIRST_MINIBATCH,
        M.RATIO_FIRST_MINIBATCH_MAX_DEV,
        M.APPROX_KL,
        M.CLIP_FRACTION,
        M.ACTOR_GRAD_NORM,
        M.ACTOR_UPDATE_NORM,
        M.ACTOR_UPDATE_RELATIVE,
        M.ACTOR_STEPS,
        M.EXPLAINED_VARIANCE,
        M.RATIO_MEAN,
        M.KL_STOPPED,
        M.DENOISING_STD,
        M.ENTROPY,
        M.BC_REGULARISER,
        M.DPOER_ALPHA,
        M.DPOER_ENTROPY_ESTIMATE,
        M.DPOER_TARGET_ENTROPY,
        M.DPOER_MINIBATCHES,
        "policy_loss",
        "vf_loss",
    ):
        if key in learner:
            line[key] = M.float_or_none(learner[key])
    per_step = {
        k: M.float_or_none(v)
        for k, v in learner.items()
        if str(k).startswith(M.CLIP_FRACTION_PER_STEP)
    }
    if per_step:
        line["clip_fraction_per_step"] = per_step
    # Synthetic-segment numbers (synthetic_ratio > 0), prefixed ``diffppo_``.
    synthetic = {f"{SYN_NAMESPACE}_{k}": float(v) for k, v in result.get(SYN_NAMESPACE, {}).items()}
    return {**line, **synthetic, **return_fields(result, refs, evaluated=evaluated)}


#: Largest |ratio − 1| on an iteration's first minibatch that counts as float error.
RATIO_TOLERANCE = 1e-4


def health_warnings(line: dict[str, Any], critic_warmup_iterations: int = 0) -> list[str]:
    """One-line warnings about a progress line's health signals (empty when healthy)."""
    it, out = line["iteration"], []
    dev = line.get(M.RATIO_FIRST_MINIBATCH_MAX_DEV)
    if dev is not None and dev > RATIO_TOLERANCE:
        out.append(
            f"[finetune] warning: iteration {it}: the first minibatch's PPO ratio is off 1 by "
            f"up to {dev:.2e} (> {RATIO_TOLERANCE:g}): the stored log-probs do not match the "
            "learner's policy (rollout and learner modules or configs differ)."
        )
    moved = line.get(M.ACTOR_UPDATE_NORM)
    if it > critic_warmup_iterations and moved is not None and moved == 0.0:
        out.append(
            f"[finetune] warning: iteration {it}: the fine-tuned actor did not move "
            f"({line.get(M.ACTOR_STEPS, 0):.0f} actor steps, gradient norm "
            f"{line.get(M.ACTOR_GRAD_NORM) or 0.0:.2e}); check target_kl, actor_lr and "
            "the advantages."
        )
    return out


def describe_run(config: DPPOConfig, s: FinetuneSettings) -> str:
    """One line with the resolved knobs that follow other settings."""
    model = registry.get(s.algo).model_config_class.from_dict(config.model_config)
    pol = model.policy_config
    return (
        f"[finetune] {s.algo}: {pol.network} denoiser, {model.describe()}; actor lr "
        f"{config.resolved_actor_lr(pol.network):g}; "
        f"{s.decisions_per_iteration} decisions x {pol.act_steps} actions per iteration, "
        f"budget {s.env_steps} env steps"
    )


def format_line(line: dict[str, Any]) -> str:
    def g(key: str, fmt: str = ".1f") -> str:
        v = line.get(key)
        return "n/a" if v is None else format(v, fmt)

    msg = (
        f"[finetune] iter {line['iteration']}  env steps {line['env_steps']}  "
        f"train return {g(M.TRAIN_RETURN)}  kl {g(M.APPROX_KL, '.2e')}  "
        f"clipfrac {g(M.CLIP_FRACTION, '.3f')}  ratio0 {g(M.RATIO_FIRST_MINIBATCH, '.6f')}  "
        f"|dθ| {g(M.ACTOR_UPDATE_NORM, '.2e')}  ev {g(M.EXPLAINED_VARIANCE, '.2f')}  "
        f"sample/learn {g(M.SAMPLE_SECONDS)}/{g(M.LEARN_SECONDS)}s"
    )
    if M.EVAL_RETURN in line:
        msg += f"  EVAL return {g(M.EVAL_RETURN)}"
    return msg
