"""Fine-tuning runs from a pretrained diffusion policy, above the algorithm families.

``rllib-diffusion finetune --algo NAME`` (and ``experiments/finetune.py``): settings
(run control, resources and the knobs a user set), the pretrained policy, checks run
before Ray starts, and the helpers every fine-tuning family shares (resources, where
runners ran, a CPU copy of the learner's module). The algorithm itself (its config,
model config and :class:`~rllib_diffusion.run_loop.RunFamily`) comes from the registry.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rllib_diffusion.algorithms import registry
from rllib_diffusion.checkpoints import CheckpointError, read_checkpoint_meta
from rllib_diffusion.knobs import Count, NonNegative, NonNegativeFloat, check_ranges
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig
from rllib_diffusion.run_loop import RunControl, run_training


@dataclass
class FinetuneSettings:
    """Settings of a fine-tuning run: the pretrained policy, the algorithm, run control
    and resources. The algorithm's knobs are declared once, by its ``AlgorithmConfig``'s
    ``training()`` and its model config (registry); here they are only the ``knobs`` a
    user set.

    Attributes:
        checkpoint: DiffusionBC checkpoint directory (from ``rllib-diffusion pretrain``).
        algo: the fine-tuning algorithm (registry name).
        out_dir: output directory.
        env_steps: budget of env steps (decisions × executed actions). Reached, not
            rounded up to whole iterations: the last iteration samples exactly the
            decisions still needed and, where episodes ended inside a chunk, the few
            missing ones, all in one update (at most one vector step above).
        num_env_runners: CPU EnvRunners (0: sample in the driver).
        num_envs_per_env_runner: vectorised envs per EnvRunner (None: the algorithm's
            default).
        decisions_per_iteration: action chunks sampled per iteration (all runners).
        use_ddim: sample with DDIM (a DDPM-pretrained policy works too: same ε-network,
            fewer leading timesteps; DPPO's setting for K = 100 policies).
        ddim_steps: DDIM steps with ``use_ddim`` (None: the pretrained policy's).
        knobs: the algorithm's knobs by name (for DPPO ``DPPOConfig.training()`` and
            ``DPPOModelConfig`` fields, e.g. ``{"clip_param": 0.02, "ft_denoising_steps":
            5}``); the others keep their declared defaults. A name the algorithm does not
            declare is refused.
        eval_interval: deterministic evaluation every this many iterations (0: end only).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: checkpoint every this many iterations (0: end only).
        num_learners: remote learners (0: one learner in the driver process).
        num_gpus_per_learner: GPUs per learner (a GPU learner where the cluster has one).
        env_runner_resources: custom Ray resources each EnvRunner requires, e.g.
            '{"rollout": 1}': EnvRunners only run on nodes started with
            ``ray start --resources '{"rollout": N}'``.
        learner_resources: custom Ray resources each remote learner requires, e.g.
            '{"learner": 1}' (needs num_learners >= 1; with 0 the learner is the driver,
            placed by ``ray job submit --entrypoint-resources``).
        env_kwargs: keyword arguments of the training env (``make_env(env_id, **kw)``),
            over the task's defaults, e.g. ``{"terminate_on_success": False}`` for
            DPPO's robomimic reward (``dppo/robomimic.py``); the start and final
            evaluations keep the task's defaults. Python only (no flag).
        resume: continue from OUT/checkpoint if present (iteration, env steps, weights,
            optimisers, reward scaling); without it an existing checkpoint is an error.
        overwrite: replace an earlier run in OUT (its checkpoint, progress, result and
            TensorBoard files); without it (or --resume) an earlier run there is an error.
        seed: RNG seed.
    """

    checkpoint: str
    algo: str = "dppo"
    out_dir: str = "runs/finetune"
    env_steps: Count = 1_000_000
    num_env_runners: NonNegative = 1
    num_envs_per_env_runner: Count | None = None
    decisions_per_iteration: Count = 2000
    use_ddim: bool = False
    ddim_steps: Count | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    eval_interval: NonNegative = 5
    eval_episodes: Count = 10
    checkpoint_interval: NonNegative = 10
    num_learners: NonNegative = 0
    num_gpus_per_learner: NonNegativeFloat = 0.0
    env_runner_resources: dict[str, float] | None = None
    learner_resources: dict[str, float] | None = None
    env_kwargs: dict[str, Any] | None = None
    resume: bool = False
    overwrite: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self)
        registry.get(self.algo)  # an unknown name: one line listing every algorithm
        if self.algo not in registry.finetune_names():
            raise ConfigError(
                f"algo={self.algo!r} is not a fine-tuning algorithm; allowed: "
                f"{', '.join(registry.finetune_names())}."
            )
        registry.get(self.algo, registry.FINETUNE).check_knobs(self.knobs)
        if self.env_kwargs is not None and not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict, got {self.env_kwargs!r}.")
        for name in RUN_DEFAULTS:
            if getattr(self, name) is None:
                setattr(self, name, run_default(self.algo, name))

    @classmethod
    def of(cls, **values: Any) -> FinetuneSettings:
        """Settings from one flat set of names, as on the command line: settings fields
        by name, any other name a knob of ``algo`` (``clip_param`` or its flag's ``clip``)."""
        from rllib_diffusion.knobs import split_knobs

        names = {f.name for f in fields(cls)} - {"knobs"}
        knobs = finetune_knobs(values.get("algo", "dppo"))
        settings, knobs = split_knobs(names, knobs, values, owner=cls.__name__)
        return cls(**settings, knobs=knobs)


#: Defaults of the ``FinetuneSettings`` fields an algorithm may set otherwise (its
#: registry spec's ``run_defaults``): DPPO's 10 envs per EnvRunner.
RUN_DEFAULTS: dict[str, Any] = {"num_envs_per_env_runner": 10}


def run_default(algo: str, name: str) -> Any:
    """Default of settings field ``name`` (one of :data:`RUN_DEFAULTS`) for ``algo``."""
    return registry.get(algo, registry.FINETUNE).run_defaults.get(name, RUN_DEFAULTS[name])


def run_defaults_help(algo: str | None = None) -> dict[str, str]:
    """``--help`` text of each :data:`RUN_DEFAULTS` field: every fine-tuning
    algorithm's default, e.g. ``"(defaults: dppo 10; ...; dsrl 4; ...)"``, or only
    ``algo``'s (``"(default: 4)"``)."""
    if algo is not None:
        return {name: f"(default: {run_default(algo, name)})" for name in RUN_DEFAULTS}
    algos = registry.finetune_names()
    return {
        name: "(defaults: " + "; ".join(f"{a} {run_default(a, name)}" for a in algos) + ")"
        for name in RUN_DEFAULTS
    }


def finetune_knobs(algo: str = "dppo") -> list:
    """Every knob a user can set for fine-tuning algorithm ``algo`` (its registry spec's:
    ``training()``'s, the RLlib knobs it lists and its model config's fields)."""
    return registry.get(algo, registry.FINETUNE).knobs()


def pretrained_policy(checkpoint: str | Path, s: FinetuneSettings) -> DiffusionPolicyConfig:
    """The DiffusionBC checkpoint's policy, switched to DDIM sampling with ``use_ddim``."""
    meta = read_checkpoint_meta(checkpoint)
    if meta.algorithm != "DiffusionBC":
        raise CheckpointError(
            f"{s.algo} fine-tunes DiffusionBC checkpoints; '{checkpoint}' is a "
            f"{meta.algorithm!r} checkpoint. Pretrain with `rllib-diffusion pretrain`."
        )
    policy = DiffusionPolicyConfig.from_dict(meta.policy_config, strict=False)
    if s.use_ddim:
        # Same ε-network, sampled with DDIM over fewer (leading) timesteps.
        policy = DiffusionPolicyConfig.from_dict(
            {**policy.to_dict(), "sampler": "ddim", "ddim_steps": s.ddim_steps}
        )
    return policy


def check_policy_env(policy: DiffusionPolicyConfig, checkpoint: str | Path) -> None:
    """One-line ``CheckpointError`` (before Ray starts) when the env a pretrained policy
    names does not take its observations and actions (a checkpoint whose meta names
    another env): the run would otherwise fail inside an EnvRunner."""
    from rllib_diffusion.envs.tasks import make_env

    env = make_env(policy.env_id)
    try:
        obs = int(np.prod(env.observation_space.shape)) * policy.obs_history
        act = int(env.action_space.shape[-1])
    finally:
        env.close()
    if (obs, act) != (policy.obs_dim, policy.action_dim):
        raise CheckpointError(
            f"'{checkpoint}' holds a policy for {policy.obs_dim}-dim observations and "
            f"{policy.action_dim}-dim actions, but its env {policy.env_id!r} has {obs} and "
            f"{act}: fine-tune it on the env it was pretrained on (its meta's env_id)."
        )


def custom_resources(s: FinetuneSettings) -> tuple[dict[str, float], dict[str, float]]:
    """Checked ``(env_runner_resources, learner_resources)``."""
    runner_resources = check_custom_resources("env_runner_resources", s.env_runner_resources)
    learner_resources = check_custom_resources("learner_resources", s.learner_resources)
    if learner_resources and s.num_learners < 1:
        raise ConfigError(
            "--learner-resources applies to remote learners: set --num-learners "
            "(num_learners >= 1) "
            "(with 0 the learner runs in the driver process; place the driver with "
            "`ray job submit --entrypoint-resources` instead)."
        )
    return runner_resources, learner_resources


def start_line(evaluation: dict[str, Any], episodes: int) -> dict[str, Any]:
    """Print where fine-tuning starts (the pretrained policy's deterministic return) and
    return the run's iteration-0 progress line."""
    from rllib_diffusion.run_loop import EVAL_RETURN

    print(
        f"[finetune] start: pretrained policy return {evaluation['episode_return_mean']:.1f}"
        f" ± {evaluation['episode_return_std']:.1f} ({episodes} episodes)",
        flush=True,
    )
    return {"iteration": 0, "env_steps": 0, EVAL_RETURN: evaluation["episode_return_mean"]}


def return_fields(
    result: dict[str, Any], refs: dict[str, Any] | None, *, evaluated: bool
) -> dict[str, Any]:
    """The progress line's returns from an RLlib result: the training episodes' mean
    return and, where ``evaluated``, the evaluation's; each also normalised when the run
    has reference scores ``refs`` (:func:`~rllib_diffusion.envs.tasks.reference_scores`)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS

    from rllib_diffusion import metrics as M
    from rllib_diffusion.envs.tasks import normalized

    train = M.float_or_none(result.get(ENV_RUNNER_RESULTS, {}).get("episode_return_mean"))
    out: dict[str, Any] = {M.TRAIN_RETURN: train}
    if refs and train is not None:
        out[M.TRAIN_NORMALIZED] = float(normalized(train, refs))
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    if evaluated and "episode_return_mean" in ev:
        out[M.EVAL_RETURN] = M.float_or_none(ev["episode_return_mean"])
        if refs:
            out[M.EVAL_NORMALIZED] = float(normalized(out[M.EVAL_RETURN], refs))
    elif evaluated:
        out[M.EVAL_MISSING] = True
        print(missing_evaluation_warning(result), file=sys.stderr, flush=True)
    return out


def missing_evaluation_warning(result: dict[str, Any]) -> str:
    """One line on a periodic evaluation that was due (``--eval-interval``) but left no
    return in RLlib's result, with what the result's evaluation section held instead."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS

    from rllib_diffusion import metrics as M

    section = result.get(EVALUATION_RESULTS)
    runners = (section or {}).get(ENV_RUNNER_RESULTS) or {}
    if not section:
        found = "no evaluation section at all (RLlib did not evaluate this iteration)"
    elif not runners:
        found = "an evaluation section without EnvRunner metrics (nothing was merged)"
    else:
        found = f"EnvRunner metrics without episode_return_mean ({len(runners)} keys: no "
        found += "evaluation episode completed)"
    return (
        f"[finetune] warning: iteration {result.get('training_iteration', '?')}: the "
        f"evaluation due every --eval-interval iterations recorded no return: RLlib's "
        f"result has {found}; this progress line has {M.EVAL_MISSING}=true and no "
        f"{M.EVAL_RETURN} (the start and final evaluations are separate)."
    )


def lockstep_evaluation(algorithm: Any, eval_env_runner_group: Any) -> tuple[dict, int, int]:
    """RLlib custom evaluation function: the project's lock-step ``evaluate_module`` on the
    algorithm's inference module (its local EnvRunner's, synced after each update).

    All episodes advance together, one batched forward per decision, where RLlib's
    evaluation in the driver runs one env with batch-1 forwards; episode ``i`` resets with
    seed ``10_000 + seed + i``, so every evaluation of a run starts from the same states.
    For modules whose actions go to the env as they are (not DSRL's latent noise)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from rllib_diffusion.evaluation import evaluate_module

    config = algorithm.config
    result = evaluate_module(
        algorithm.get_module(),
        dict(config.env_config),
        num_episodes=int(config.evaluation_duration),
        seed=10_000 + (config.seed or 0),
    )
    metrics = {
        "episode_return_mean": result["episode_return_mean"],
        "episode_return_std": result["episode_return_std"],
        "episode_len_mean": float(np.mean(result["episode_lengths"])),
        "num_episodes": len(result["episode_returns"]),
    }
    if "success_rate" in result:
        metrics["success_rate"] = result["success_rate"]
    # RLlib reads evaluation results from its metrics logger, merged as an EnvRunner's.
    logger = MetricsLogger()
    logger.log_dict(metrics, window=1)
    algorithm.metrics.aggregate([logger.reduce()], key=(EVALUATION_RESULTS, ENV_RUNNER_RESULTS))
    steps = int(result["env_steps"])
    return {ENV_RUNNER_RESULTS: metrics}, steps, steps


def training_env_config(policy: DiffusionPolicyConfig, s: FinetuneSettings) -> dict[str, Any]:
    """``env_config`` of the training envs: the policy's chunked env with ``s.env_kwargs``
    over the task's default kwargs."""
    config = policy.env_config()
    if s.env_kwargs:
        config["env_kwargs"] = {**config.get("env_kwargs", {}), **s.env_kwargs}
    return config


def chunked_run_config(
    config: Any,
    policy: DiffusionPolicyConfig,
    s: FinetuneSettings,
    *,
    lockstep_eval: bool = False,
    **runner_knobs: Any,
) -> Any:
    """``config`` set up as every fine-tuning run is: the action-chunk env of ``policy``
    and its spaces, CPU EnvRunners and learners with their custom resources, EnvRunner
    restarts, deterministic evaluation in the driver and the seed. ``runner_knobs``:
    the algorithm's own ``env_runners()`` knobs. ``lockstep_eval``: evaluate with
    :func:`lockstep_evaluation` (modules whose actions are env actions)."""
    from rllib_diffusion.envs.chunking import chunk_spaces, register_chunked_env

    runner_resources, learner_resources = custom_resources(s)
    obs_space, act_space = chunk_spaces(policy.obs_dim, policy.horizon, policy.action_dim)
    return (
        config.environment(
            register_chunked_env(),
            env_config=training_env_config(policy, s),
            observation_space=obs_space,
            action_space=act_space,
        )
        .env_runners(
            num_env_runners=s.num_env_runners,
            num_envs_per_env_runner=s.num_envs_per_env_runner,
            num_cpus_per_env_runner=1,
            custom_resources_per_env_runner=runner_resources,
            **runner_knobs,
        )
        .learners(
            num_learners=s.num_learners,
            num_gpus_per_learner=s.num_gpus_per_learner,
            custom_resources_per_learner=learner_resources,
        )
        # A crashed EnvRunner (node lost, OOM, kill) is restarted by Ray Core
        # (max_restarts), re-synced by the Algorithm and training continues.
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=1000,
            num_consecutive_env_runner_failures_tolerance=100,
            # Pause of a runner whose env raised before it exits and restarts (2.60
            # default 60 s stalls the whole iteration).
            delay_between_env_runner_restarts_s=5.0,
        )
        # Evaluation in the driver (no evaluation EnvRunners): RLlib 2.60 applies
        # evaluation_sample_timeout_s only to remote evaluation EnvRunners, so slow
        # robot episodes are waited for, not cut (tests/algorithms/test_finetune_evaluation.py).
        .evaluation(
            evaluation_interval=s.eval_interval or None,
            evaluation_duration=s.eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False, "num_envs_per_env_runner": 1},
            custom_evaluation_function=lockstep_evaluation if lockstep_eval else None,
        )
        .debugging(seed=s.seed)
    )


def validated(config: Any, algo: str) -> Any:
    """``config`` after RLlib's and the algorithm's checks, run before Ray starts; a
    failed check is one ``ConfigError`` line naming the flags (knob names as flags)."""
    import logging
    import re

    # RLlib's one-time "running on the new API stack" notice is not for our users.
    rllib_logger = logging.getLogger("ray.rllib.algorithms.algorithm_config")
    level, _ = rllib_logger.level, rllib_logger.setLevel(logging.ERROR)
    try:
        config.validate()
    except ValueError as err:
        text = (str(err).strip().splitlines() or [""])[0]
        for knob in finetune_knobs(algo):
            # Names only, not parts of a flag already spelled out (--gamma-denoising).
            text = re.sub(rf"(?<![-\w]){knob.name}(?![-\w])", knob.flag, text)
        raise ConfigError(f"finetune: {text}") from None
    finally:
        rllib_logger.setLevel(level)
    return config


def finetune(settings: FinetuneSettings) -> dict[str, Any]:
    """Run ``settings.algo``'s fine-tuning (its registry run family) on the run loop;
    returns the summary also written to ``result.json``."""
    from rllib_diffusion.utils.runtime import limit_threads

    s = settings
    limit_threads()
    family = registry.get(s.algo, registry.FINETUNE).family_class(s)
    return run_training(family, RunControl.from_settings(s, budget=s.env_steps))


def check_custom_resources(name: str, value: dict[str, Any] | None) -> dict[str, float]:
    """Validate a custom-resources dict (``{"rollout": 1}``); returns a plain copy."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object like '{{\"rollout\": 1}}', got {value!r}.")
    res: dict[str, float] = {}
    for key, amount in value.items():
        if key in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ConfigError(
                f"{name}: {key!r} is not a custom resource; use the num_cpus/num_gpus flags."
            )
        try:
            amount = float(amount)
        except (TypeError, ValueError):
            amount = -1.0
        if amount <= 0:
            raise ConfigError(f"{name}[{key!r}] must be a positive number, got {value[key]!r}.")
        res[str(key)] = amount
    return res


def warn_missing_resources(config: Any):
    """Context manager around ``build_algo()``: a one-line ``ConfigError`` when the
    cluster can never hold this run's EnvRunners and learners (Ray would queue them
    forever), else progress lines on stderr while they start (issue 20; see
    :func:`rllib_diffusion.utils.resources.resource_guard`)."""
    from rllib_diffusion.utils.resources import resource_guard

    flags = {
        "num_env_runners": "--num-env-runners",
        "custom_resources_per_env_runner": "--env-runner-resources",
        "num_learners": "--num-learners",
        "num_gpus_per_learner": "--num-gpus-per-learner",
        "custom_resources_per_learner": "--learner-resources",
    }
    return resource_guard(config, tag="[finetune] ", flags=flags, stream=sys.stderr)


def runner_placement(algo) -> dict[str, Any]:
    """Node id, IP and pid of the driver, each remote EnvRunner and each remote learner."""
    runners = algo.env_runner_group.foreach_env_runner(
        lambda runner: {**_where(), "worker_index": runner.worker_index},
        local_env_runner=False,
    )
    learners = []
    if algo.config.num_learners > 0:
        learners = [r.get() for r in algo.learner_group.foreach_learner(lambda _: _where())]
    return {"driver": _where(), "env_runners": runners, "learners": learners}


def _where() -> dict[str, Any]:
    """Where the calling process runs (Ray node id, node IP, pid)."""
    import ray

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }


class BudgetedFinetuneHooks:
    """Run-loop hooks shared by the denoiser fine-tuners' families (DPPO and its chain-PPO
    siblings, the replay fine-tuners): the budget's last iteration sized to end at it, and
    restores verified on every EnvRunner. A family sets ``s`` (its settings) and
    ``policy`` (the pretrained policy's config), and names its acting network."""

    s: FinetuneSettings
    policy: DiffusionPolicyConfig

    def acting(self) -> str:
        """The module's network the EnvRunners act with (checked after a restore)."""
        return "actor"

    def before_iteration(self, algo: Any, counter: int, control: RunControl) -> None:
        """The iteration that reaches the budget samples only the decisions it needs
        (:class:`~rllib_diffusion.algorithms.env_step_budget.EnvStepBudgetMixin`)."""
        from rllib_diffusion.algorithms.env_step_budget import last_iteration

        remaining = control.budget - counter
        decisions = self.s.decisions_per_iteration
        algo.limit_next_iteration(last_iteration(remaining, self.policy.act_steps, decisions))

    def restore(self, algo: Any, ckpt_dir: Path) -> dict[str, Any]:
        sums = restore_finetune_checkpoint(algo, ckpt_dir, acting=self.acting())
        print(f"[finetune] restored {algo.env_steps_lifetime} env steps", flush=True)
        return {"env_steps": algo.env_steps_lifetime, "restored_weight_sums": sums}


def restore_finetune_checkpoint(
    algo: Any, ckpt_dir: str | os.PathLike, *, acting: str
) -> dict[str, float]:
    """Restore ``algo`` (learner, optimisers, metrics, iteration, env-step count) from a
    fine-tuning checkpoint and block until every EnvRunner acts with the restored
    weights of its module's ``acting`` network (e.g. DPPO's ``actor_ft``): RLlib's
    ``restore_from_path`` syncs them fire-and-forget.

    Returns per-tensor sums of the restored learner module (recorded in ``result.json``).
    """
    from ray.rllib.core import DEFAULT_MODULE_ID

    algo.restore_from_path(str(Path(ckpt_dir).resolve()))
    learner_sums = [r.get() for r in algo.learner_group.foreach_learner(weight_sums)][0]
    expected = sum(v for k, v in learner_sums.items() if k.startswith(f"{acting}."))
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group,
        inference_only=True,
        timeout_seconds=60.0,
    )

    def acting_sum(runner: Any) -> float:
        module = runner.module
        module = module if hasattr(module, acting) else module[DEFAULT_MODULE_ID]
        return sum(float(t.double().sum()) for t in getattr(module, acting).state_dict().values())

    got = algo.env_runner_group.foreach_env_runner(acting_sum)
    if any(abs(x - expected) > 1e-6 * max(1.0, abs(expected)) for x in got):
        raise RuntimeError(
            f"Restored weights did not reach every EnvRunner (sums {got} vs {expected})."
        )
    return learner_sums


def weight_sums(learner: Any) -> dict[str, float]:
    """Per-tensor sums of a learner's module (a cheap fingerprint of its weights)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return {k: float(v.detach().double().sum()) for k, v in module.state_dict().items()}


def learner_module_copy(algo) -> Any:
    """A CPU copy of the learner's module (public APIs only, local or remote learner)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    spec = algo.config.get_rl_module_spec(spaces=None)
    module = spec.build()
    state = algo.learner_group.get_state(components="learner/rl_module/" + DEFAULT_MODULE_ID)
    module.set_state(state["learner"]["rl_module"][DEFAULT_MODULE_ID])
    return module
