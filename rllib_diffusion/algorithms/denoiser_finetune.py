"""The run family of fine-tuning algorithms whose RLModule trains the pretrained
denoiser itself on EnvRunner rollouts (DRWR and DAWR in ``awr/``; online DQL, IDQL,
DIPO and QSM in ``replay_finetune``), above the families.

DiffusionBC checkpoint → the algorithm's config (its registry spec's config and model
config, env and spaces from the checkpoint) → the shared run loop with DPPO's run
control: budget in true env steps, iteration-0 evaluation of the pretrained policy,
checkpoints with typed metadata, ``--resume`` (verified on every EnvRunner), final
evaluation of exactly what was saved. A family subclass names its metrics namespace,
the learner metrics its progress line carries and the fields its printed line shows.
Their configs share the run knobs of :class:`DenoiserFinetuneConfigMixin`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms import pretrained_weights, registry
from rllib_diffusion.algorithms.finetune_run import (
    BudgetedFinetuneHooks,
    FinetuneSettings,
    check_policy_env,
    chunked_run_config,
    learner_module_copy,
    pretrained_policy,
    return_fields,
    runner_placement,
    start_line,
    validated,
    warn_missing_resources,
)
from rllib_diffusion.checkpoints import (
    CheckpointMeta,
    check_resume_settings,
    read_checkpoint_meta,
)
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig
from rllib_diffusion.run_loop import EVAL_RETURN, RunControl, RunFamily, before_after_summary

#: Policy-config fields that shape the denoiser: they must match the pretrained one.
NETWORK_FIELDS = (
    "obs_dim", "action_dim", "horizon", "denoising_steps", "schedule", "network",
    "hidden_dims", "unet_dims", "time_dim", "activation",
)  # fmt: skip


class DenoiserFinetuneConfigMixin:
    """Run knobs of every algorithm that fine-tunes the pretrained denoiser on its own
    rollouts (DRWR/DAWR's ``RewardWeightedConfigMixin``, the replay fine-tuners'
    ``ReplayFinetuneConfigMixin``): the checkpoint it starts from, the reference's
    γ and minibatch, and the sampling of an iteration's decisions. Host:
    ``<Family>ConfigMixin(DenoiserFinetuneConfigMixin)``."""

    #: Knobs of ``training()`` the fine-tuning run sets itself (not user knobs).
    RUN_SET_KNOBS = ("pretrained_checkpoint",)

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.pretrained_checkpoint: str | None = None
        self.gamma = 0.99
        self.minibatch_size = 1000
        self.train_batch_size_per_learner = 2000
        # Each EnvRunner samples its share of the iteration's decisions (AlgorithmConfig's
        # default is 200 vector steps per sample() call).
        self.rollout_fragment_length = "auto"
        # Diffusion sampling is slower than a Gaussian MLP: give runners time.
        self.sample_timeout_s = 600.0

    @override(AlgorithmConfig)
    def training(self, *, pretrained_checkpoint: str | None = NotProvided, **kwargs: Any):
        """Args:
        pretrained_checkpoint: DiffusionBC checkpoint whose EMA denoiser is fine-tuned.
        **kwargs: RLlib's ``training()`` args (``gamma``, ``minibatch_size``, ...).
        """
        super().training(**kwargs)
        set_provided(self, {"pretrained_checkpoint": pretrained_checkpoint})
        return self

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {}  # the model config is complete by itself


#: Values of the algorithm's metrics namespace every progress line carries (if present).
OWN_KEYS = (
    M.TRAINED_DECISIONS,
    M.BUFFER_DECISIONS,
    M.SAMPLE_SECONDS,
    M.LEARN_SECONDS,
    M.SYNC_SECONDS,
)


def denoiser_finetune_config(s: FinetuneSettings) -> Any:
    """The config of ``s.algo`` (its registry spec's config and model config) whose env,
    spaces and model match the pretrained checkpoint."""
    spec = registry.get(s.algo, registry.FINETUNE)
    policy = pretrained_policy(s.checkpoint, s)
    training, model_knobs = spec.split_knobs(s.knobs)
    model = spec.model_config_class(policy=policy.to_dict(), **model_knobs)
    return (
        chunked_run_config(spec.config_class(), policy, s)
        .training(
            # RLlib samples train_batch_size_per_learner × num_learners per iteration.
            train_batch_size_per_learner=-(-s.decisions_per_iteration // max(1, s.num_learners)),
            **training,
            pretrained_checkpoint=str(Path(s.checkpoint).expanduser().resolve()),
        )
        .rl_module(model_config=model.to_dict())
    )


class DenoiserFinetuneFamily(BudgetedFinetuneHooks, RunFamily):
    """Fine-tuning of the pretrained denoiser by ``s.algo`` on the run loop.

    Subclasses set :attr:`namespace` (the algorithm's metrics namespace),
    :attr:`own_keys` (its values a line carries), :attr:`learner_keys` (line name →
    learner metric) and :attr:`shown` (``(label, line key, format)`` of the printed line).
    """

    tag = "finetune"
    unit = "env_steps"
    namespace: str = ""
    own_keys: tuple[str, ...] = OWN_KEYS
    learner_keys: dict[str, str] = {}
    shown: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, s: FinetuneSettings) -> None:
        from rllib_diffusion.envs.tasks import reference_scores
        from rllib_diffusion.utils.runtime import run_metadata

        # A DiffusionBC checkpoint whose env takes its policy: one line, before Ray starts.
        check_policy_env(pretrained_policy(s.checkpoint, s), s.checkpoint)
        self.s = s
        self.config = validated(denoiser_finetune_config(s), s.algo)
        model_config = dict(self.config.model_config)
        self.policy = DiffusionPolicyConfig.from_dict(model_config["policy"], strict=False)
        self._meta = CheckpointMeta(
            algorithm=registry.get(s.algo, registry.FINETUNE).checkpoint_algorithm,
            env_id=self.policy.env_id,
            policy_config=self.policy.to_dict(),
            model_config=model_config,
            settings=asdict(s),
            pretrained_checkpoint=self.config.pretrained_checkpoint,
            dataset=read_checkpoint_meta(s.checkpoint).dataset,
            run=run_metadata(),
        )
        self.refs = reference_scores(self.policy.env_id, self._meta.dataset)

    def meta(self) -> CheckpointMeta:
        return self._meta

    def check_resumable(self, saved: CheckpointMeta, where: Path) -> None:
        """The checkpoint's pretrained policy and model config must be this run's; the
        saved model config is read as the model-config class reads it (an older
        version's gets the values it was trained with), and every differing field is
        named."""
        model_cls = registry.get(self.s.algo, registry.FINETUNE).model_config_class
        theirs = model_cls.from_dict(dict(saved.model_config or {})).to_dict()
        check_resume_settings(
            {"pretrained_checkpoint": saved.pretrained_checkpoint, "model": theirs},
            {
                "pretrained_checkpoint": self._meta.pretrained_checkpoint,
                "model": self._meta.model_config,
            },
            where,
        )

    def build(self) -> Any:
        from rllib_diffusion.utils.runtime import init_ray

        init_ray()
        with warn_missing_resources(self.config):
            algo = self.config.build_algo()
        print(
            f"[finetune] {self.s.algo}: {self.policy.network} denoiser, {self.policy.sampler} "
            f"{self.policy.sampling_steps} steps; {self.s.decisions_per_iteration} decisions "
            f"x {self.policy.act_steps} actions per iteration, budget {self.s.env_steps} "
            "env steps",
            flush=True,
        )
        return algo

    def start(self, algo: Any, control: RunControl) -> dict[str, Any]:
        """Where fine-tuning starts: the pretrained policy, deterministic, real env."""
        self.start_evaluation = self._evaluate(learner_module_copy(algo), 20_000, control)
        return start_line(self.start_evaluation, control.eval_episodes)

    def progress_line(self, algo: Any, result: dict, it: int, *, evaluated: bool) -> dict:
        """Flat per-iteration metrics of the algorithm's result dict."""
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.utils.metrics import LEARNER_RESULTS

        own = result.get(self.namespace, {})
        learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
        line: dict[str, Any] = {"iteration": it, "env_steps": int(own.get(M.ENV_STEPS, 0))}
        line |= {k: M.float_or_none(own[k]) for k in self.own_keys if k in own}
        line |= {
            n: M.float_or_none(learner[k]) for n, k in self.learner_keys.items() if k in learner
        }
        return {**line, **return_fields(result, self.refs, evaluated=evaluated)}

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        def g(key: str, fmt: str = ".3g") -> str:
            v = line.get(key)
            return "n/a" if v is None else format(v, fmt)

        fields = "".join(f"  {label} {g(key, fmt)}" for label, key, fmt in self.shown)
        msg = (
            f"[finetune] iter {line['iteration']}  env steps {line['env_steps']}/"
            f"{control.budget}  train return {g(M.TRAIN_RETURN, '.1f')}{fields}  sample/learn "
            f"{g(M.SAMPLE_SECONDS, '.1f')}/{g(M.LEARN_SECONDS, '.1f')}s"
        )
        if EVAL_RETURN in line:
            msg += f"  EVAL return {g(EVAL_RETURN, '.1f')}"
        return msg

    def finish(self, algo: Any) -> dict[str, Any]:
        return {"placement": runner_placement(algo)}

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module

        module, _ = load_policy_module(ckpt)
        return self._evaluate(module, 30_000, control)

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        return before_after_summary(self.tag, base, self.start_evaluation, evaluation)

    def _evaluate(self, module: Any, seed: int, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.evaluation import evaluate_module

        return evaluate_module(
            module,
            self.policy.env_config(),
            num_episodes=control.eval_episodes,
            seed=seed + control.seed,
            dataset=self._meta.dataset,
        )


def load_pretrained_into(algo: Any, checkpoint: str) -> None:
    """Copy the EMA denoiser of a DiffusionBC checkpoint into every learner's module (its
    ``load_pretrained_denoiser``) and every EnvRunner; a one-line error if the networks
    differ. Called by the algorithms' ``setup``."""
    pretrained_weights.load_pretrained_into(algo, checkpoint, check_network_match)


def check_network_match(pretrained: dict[str, Any], ours: dict[str, Any], where: str) -> None:
    """Raise a CheckpointError naming every network field that differs."""
    pretrained_weights.check_fields(
        pretrained,
        ours,
        where,
        fields=NETWORK_FIELDS,
        owner="fine-tuning",
        fix="Build the config from the checkpoint (denoiser_finetune.denoiser_finetune_config).",
    )
