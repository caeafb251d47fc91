"""DPPO fine-tuning run: DiffusionBC checkpoint → DPPO on EnvRunners → checkpoints + curve.

Library function behind ``rllib-diffusion finetune`` and ``experiments/finetune.py``.
Writes into ``out_dir``: ``progress.jsonl`` (one line per iteration), ``checkpoint/``
(atomic, every ``checkpoint_interval`` iterations and at the end), ``tensorboard/``
(event files with the progress-line scalars, x-axis = env steps) and ``result.json``
(incl. the nodes the EnvRunners and learners ran on).

Cluster runs: ``env_runner_resources`` / ``learner_resources`` pin EnvRunners / remote
learners to nodes that advertise those custom resources (``ray start --resources``);
crashed EnvRunners are restarted by Ray and training goes on (RLlib fault tolerance);
``resume`` continues a killed run from ``out_dir/checkpoint``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.dppo import (
    ALGORITHM_NAME,
    DPPOConfig,
    _single,
    check_policy_match,
)
from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
from rllib_diffusion.checkpoints import (
    CheckpointError,
    progress_up_to,
    read_checkpoint_meta,
    resume_checkpoint_meta,
)
from rllib_diffusion.envs.tasks import task_info
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig
from rllib_diffusion.utils.io import jsonable, write_json_atomic, write_jsonl_atomic


@dataclass
class FinetuneSettings:
    """Settings of a DPPO fine-tuning run (CLI flags map 1:1 onto these).

    Attributes:
        checkpoint: DiffusionBC checkpoint directory (from ``rllib-diffusion pretrain``).
        out_dir: output directory.
        env_steps: budget of env steps (decisions × executed actions). Honoured, not
            rounded up to whole iterations: the last iteration samples exactly the
            decisions still needed (see ``last_iteration_decisions``); the true count ends
            at most one vector step of the envs over it, or a little under it where
            episodes ended inside a chunk.
        num_env_runners / num_envs_per_env_runner: rollout layout (CPU EnvRunners).
        decisions_per_iteration: action chunks sampled per iteration (all runners).
        num_epochs / pair_minibatch_size: PPO epochs and (env step, denoising step) pairs
            per minibatch.
        ft_denoising_steps: K_ft; None follows the sampler (every DDIM step, as DPPO's
            DDIM configs set ``ft_denoising_steps = ddim_steps``; else the last 10 DDPM steps).
        use_ddim / ddim_steps: fine-tune a DDPM-pretrained ε-network with DDIM sampling
            over ``ddim_steps`` leading timesteps (DPPO's setting for K = 100 policies).
        ddim_eta: DDIM η of rollouts and log-probs (1: the reference's; evaluation uses 0);
            refused unless the policy samples with DDIM.
        actor_lr: None follows the denoiser (1e-4 MLP, 1e-5 UNet: the reference's values).
        critic_lr / clip / clip_base / target_kl / gamma / lambda_ /
        gamma_denoising / reward_scaling / critic_warmup_iterations / bc_loss_coeff:
            DPPO.md knobs (see ``DPPOConfig.training``).
        eval_interval: deterministic evaluation every this many iterations (0: end only).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: checkpoint every this many iterations (0: end only).
        num_learners / num_gpus_per_learner: LearnerGroup layout (GPU learners when present).
        env_runner_resources: custom Ray resources each EnvRunner requires, e.g.
            ``{"rollout": 1}``: EnvRunners only run on nodes started with
            ``ray start --resources '{"rollout": N}'`` (RLlib
            ``custom_resources_per_env_runner``).
        learner_resources: custom Ray resources each remote learner requires (RLlib
            ``custom_resources_per_learner``); needs ``num_learners >= 1``: with 0 the
            learner lives in the driver process, which ``ray job submit
            --entrypoint-resources`` places instead.
        resume: continue from ``out_dir/checkpoint`` if it exists (iteration counter,
            env-step count, weights, optimiser and reward-scaling state); without it an
            existing checkpoint there is an error rather than being overwritten.
        seed: RNG seed.
    """

    checkpoint: str
    out_dir: str = "runs/finetune"
    env_steps: int = 1_000_000
    num_env_runners: int = 1
    num_envs_per_env_runner: int = 10
    decisions_per_iteration: int = 2000
    num_epochs: int = 5
    pair_minibatch_size: int = 10_000
    ft_denoising_steps: int | None = None
    use_ddim: bool = False
    ddim_steps: int | None = None
    ddim_eta: float = 1.0
    actor_lr: float | None = None
    critic_lr: float = 1e-3
    clip: float = 0.01
    clip_base: float = 0.01
    target_kl: float | None = 1.0
    gamma: float = 0.99
    lambda_: float = 0.95
    gamma_denoising: float = 0.99
    reward_scaling: bool = True
    critic_warmup_iterations: int = 0
    bc_loss_coeff: float = 0.0
    eval_interval: int = 5
    eval_episodes: int = 10
    checkpoint_interval: int = 10
    num_learners: int = 0
    num_gpus_per_learner: float = 0.0
    env_runner_resources: dict[str, float] | None = None
    learner_resources: dict[str, float] | None = None
    resume: bool = False
    seed: int = 0


def dppo_config_from_pretrained(checkpoint: str | Path, s: FinetuneSettings) -> DPPOConfig:
    """A ``DPPOConfig`` whose env, spaces and model match the pretrained checkpoint."""
    from rllib_diffusion.algorithms.bc.pretrain import policy_env_config
    from rllib_diffusion.checkpoints import CheckpointError
    from rllib_diffusion.envs.chunking import chunk_spaces, register_chunked_env

    meta = read_checkpoint_meta(checkpoint)
    if meta.get("algorithm") != "DiffusionBC":
        raise CheckpointError(
            f"DPPO fine-tunes DiffusionBC checkpoints; '{checkpoint}' is a "
            f"{meta.get('algorithm')!r} checkpoint. Pretrain with `rllib-diffusion pretrain`."
        )
    policy = DiffusionPolicyConfig.from_dict(meta["policy_config"], strict=False)
    if s.use_ddim:
        # Same ε-network, sampled with DDIM over fewer (leading) timesteps.
        policy = DiffusionPolicyConfig.from_dict(
            {**policy.to_dict(), "sampler": "ddim", "ddim_steps": s.ddim_steps}
        )
    runner_resources = check_custom_resources("env_runner_resources", s.env_runner_resources)
    learner_resources = check_custom_resources("learner_resources", s.learner_resources)
    if learner_resources and s.num_learners < 1:
        raise ConfigError(
            "learner_resources applies to remote learners: set num_learners >= 1 "
            "(with 0 the learner runs in the driver process; place the driver with "
            "`ray job submit --entrypoint-resources` instead)."
        )
    if s.ddim_eta != 1.0 and policy.sampler != "ddim":
        raise ConfigError(
            f"ddim_eta={s.ddim_eta} applies to DDIM sampling only; add --use-ddim or drop it."
        )
    if not 0.0 <= s.ddim_eta <= 1.0:
        raise ConfigError(f"ddim_eta must be in [0, 1], got {s.ddim_eta}.")
    model = DPPOModelConfig(
        policy=policy.to_dict(), ft_denoising_steps=s.ft_denoising_steps, ddim_eta=s.ddim_eta
    )
    obs_space, act_space = chunk_spaces(policy.obs_dim, policy.horizon, policy.action_dim)
    config = (
        DPPOConfig()
        .environment(
            register_chunked_env(),
            env_config=policy_env_config(policy),
            observation_space=obs_space,
            action_space=act_space,
        )
        .env_runners(
            num_env_runners=s.num_env_runners,
            num_envs_per_env_runner=s.num_envs_per_env_runner,
            num_cpus_per_env_runner=1,
            custom_resources_per_env_runner=runner_resources,
        )
        .learners(
            num_learners=s.num_learners,
            num_gpus_per_learner=s.num_gpus_per_learner,
            custom_resources_per_learner=learner_resources,
        )
        # A crashed EnvRunner (node lost, OOM, kill) is restarted by Ray Core
        # (max_restarts), re-synced by the Algorithm and training continues; DPPO's
        # training_step re-samples when every runner was down (see DPPO).
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=1000,
            num_consecutive_env_runner_failures_tolerance=100,
            # Pause of a runner whose env raised before it exits and restarts (2.60
            # default 60 s stalls the whole iteration).
            delay_between_env_runner_restarts_s=5.0,
        )
        .training(
            train_batch_size_per_learner=s.decisions_per_iteration,
            num_epochs=s.num_epochs,
            pair_minibatch_size=s.pair_minibatch_size,
            actor_lr=s.actor_lr,
            critic_lr=s.critic_lr,
            clip_param=s.clip,
            clip_param_base=s.clip_base,
            target_kl=s.target_kl,
            gamma=s.gamma,
            lambda_=s.lambda_,
            gamma_denoising=s.gamma_denoising,
            reward_scaling=s.reward_scaling,
            critic_warmup_iterations=s.critic_warmup_iterations,
            bc_loss_coeff=s.bc_loss_coeff,
            pretrained_checkpoint=str(Path(checkpoint).expanduser().resolve()),
        )
        .rl_module(model_config=model.to_dict())
        .evaluation(
            evaluation_interval=s.eval_interval or None,
            evaluation_duration=s.eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False, "num_envs_per_env_runner": 1},
        )
        .debugging(seed=s.seed)
    )
    return config


def finetune(settings: FinetuneSettings) -> dict[str, Any]:
    """Run DPPO fine-tuning; returns the summary also written to ``result.json``."""
    from rllib_diffusion.checkpoints import load_policy_module, save_algorithm_checkpoint
    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.utils.runtime import init_ray, limit_threads, run_metadata

    s = settings
    limit_threads()
    out = Path(s.out_dir).expanduser().resolve()
    ckpt_dir = out / "checkpoint"
    resume_meta = resume_checkpoint_meta(
        ckpt_dir, s.resume, algorithms=(ALGORITHM_NAME,), tag="finetune"
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = dppo_config_from_pretrained(s.checkpoint, s)
    policy = DiffusionPolicyConfig.from_dict(config.model_config["policy"], strict=False)
    if resume_meta is not None:
        _check_resumable(resume_meta, config.model_config, ckpt_dir)
    init_ray()
    with _warn_missing_resources(config):
        algo = config.build_algo()
    meta = {
        "algorithm": ALGORITHM_NAME,
        "env_id": policy.env_id,
        "policy_config": policy.to_dict(),
        "dppo_model_config": config.model_config,
        "settings": asdict(s),
        "pretrained_checkpoint": str(Path(s.checkpoint).resolve()),
        "run": run_metadata(),
    }
    writer = None
    try:
        resumed: dict[str, Any] | None = None
        if resume_meta is None:
            # Where fine-tuning starts: the pretrained policy, deterministic, real env.
            start_eval = evaluate_module(
                algo.learner_group._learner.module["default_policy"]
                if s.num_learners == 0
                else _module_from(algo),
                _env_config(policy),
                num_episodes=s.eval_episodes,
                seed=20_000 + s.seed,
            )
            print(
                f"[finetune] start: pretrained policy return "
                f"{start_eval['episode_return_mean']:.1f} ± "
                f"{start_eval['episode_return_std']:.1f} ({s.eval_episodes} episodes)",
                flush=True,
            )
            it = 0
            seconds_before = 0.0
            lines: list[dict[str, Any]] = [
                {
                    "iteration": 0,
                    "env_steps": 0,
                    "eval_return_mean": start_eval["episode_return_mean"],
                }
            ]
        else:
            it = int(resume_meta["iteration"])
            restored_sums = restore_finetune_checkpoint(algo, ckpt_dir)
            if algo.iteration != it:
                raise CheckpointError(
                    f"Checkpoint '{ckpt_dir}' says iteration {it} but restores "
                    f"iteration {algo.iteration}; it is inconsistent, start a new --out."
                )
            start_eval = resume_meta.get("start_evaluation")
            seconds_before = float(resume_meta.get("train_seconds", 0.0))
            lines = progress_up_to(out / "progress.jsonl", it)
            resumed = {
                "from_iteration": it,
                "env_steps": algo._env_steps_lifetime,
                "restored_weight_sums": restored_sums,
            }
            print(
                f"[finetune] resumed from '{ckpt_dir}' at iteration {it} "
                f"({algo._env_steps_lifetime} env steps)",
                flush=True,
            )
        # progress.jsonl: the kept lines (all of them on a fresh run: just line 0),
        # rewritten atomically, then appended to.
        write_jsonl_atomic(out / "progress.jsonl", lines)
        if resume_meta is None:
            # Events of an earlier run here that never reached a checkpoint.
            shutil.rmtree(out / "tensorboard", ignore_errors=True)
        writer = _tensorboard_writer(out / "tensorboard", purge_after=lines[-1])
        if resume_meta is None:
            _log_scalars(writer, lines[0])
        env_steps = algo._env_steps_lifetime
        act_steps = policy.act_steps
        print(describe_run(config, s), flush=True)
        with open(out / "progress.jsonl", "a") as progress:
            done = env_steps >= s.env_steps
            while not done:
                it += 1
                final = last_iteration_decisions(
                    s.env_steps - env_steps, act_steps, s.decisions_per_iteration
                )
                algo.limit_next_iteration(final)
                result = algo.train()
                evaluated = bool(s.eval_interval) and it % s.eval_interval == 0
                line = progress_line(result, it, policy.env_id, evaluated=evaluated)
                # The algorithm's (checkpointed) count is the budget's source of truth.
                env_steps = line["env_steps"] = int(algo._env_steps_lifetime)
                lines.append(line)
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                _log_scalars(writer, line)
                print(format_line(line), flush=True)
                for warning in health_warnings(line, s.critic_warmup_iterations):
                    print(warning, file=sys.stderr, flush=True)
                done = final is not None or env_steps >= s.env_steps
                if s.checkpoint_interval and it % s.checkpoint_interval == 0 and not done:
                    seconds = seconds_before + time.perf_counter() - t0
                    save_algorithm_checkpoint(
                        algo, ckpt_dir, _ckpt_meta(meta, it, env_steps, start_eval, seconds)
                    )
        placement = runner_placement(algo)
        train_seconds = seconds_before + time.perf_counter() - t0
        ckpt = save_algorithm_checkpoint(
            algo, ckpt_dir, _ckpt_meta(meta, it, env_steps, start_eval, train_seconds)
        )
    finally:
        if writer is not None:
            writer.close()
        algo.stop()
    module, _ = load_policy_module(ckpt)
    final_eval = evaluate_module(
        module, _env_config(policy), num_episodes=s.eval_episodes, seed=30_000 + s.seed
    )
    summary = {
        **meta,
        "checkpoint": ckpt,
        "iterations": it,
        "env_steps": env_steps,
        "train_seconds": train_seconds,
        "resumed": resumed,
        "placement": placement,
        "start_evaluation": start_eval,
        "final_evaluation": final_eval,
        "progress": lines,
    }
    write_json_atomic(out / "result.json", summary)
    before = "n/a" if not start_eval else f"{start_eval['episode_return_mean']:.1f}"
    print(
        f"[finetune] return before {before} -> after "
        f"{final_eval['episode_return_mean']:.1f} ± {final_eval['episode_return_std']:.1f} "
        f"({s.eval_episodes} episodes, {env_steps} env steps, "
        f"{train_seconds / 60:.1f} min)",
        flush=True,
    )
    return summary


def last_iteration_decisions(remaining_env_steps: int, act_steps: int, per_iteration: int):
    """Decisions of the budget's last iteration, or None while full iterations remain.

    The last iteration samples exactly the ``ceil(remaining / act_steps)`` decisions the
    budget still needs: up to 1.5 iterations' worth, so that no tiny iteration (a PPO
    update on a handful of chunks) is left over. True env steps can end a little below
    the budget where episodes ended inside a chunk, and up to one vector step of the
    runners' envs above it.
    """
    decisions = -(-remaining_env_steps // act_steps)
    return decisions if decisions <= per_iteration * 3 // 2 else None


# ------------------------------------------------------------------- resume helpers
def _check_resumable(meta: dict[str, Any], model_config: dict[str, Any], where: Path) -> None:
    """The checkpoint's module must be the one these settings build."""
    theirs = meta.get("dppo_model_config", {})
    check_policy_match(theirs.get("policy", {}), model_config["policy"], str(where))
    diffs = [
        f"{k}: checkpoint {theirs.get(k)!r} vs now {v!r}"
        for k, v in model_config.items()
        if k != "policy" and jsonable(theirs.get(k)) != jsonable(v)
    ]
    if diffs:
        raise CheckpointError(
            f"Cannot resume '{where}' with different model settings: " + "; ".join(diffs)
        )


def restore_finetune_checkpoint(algo, ckpt_dir: str | os.PathLike) -> dict[str, float]:
    """Restore ``algo`` (learner, optimisers, metrics, iteration, env-step count) from a
    fine-tuning checkpoint; block until every EnvRunner acts with the restored weights.

    Returns per-tensor sums of the restored learner module (recorded in ``result.json``).
    """
    algo.restore_from_path(str(Path(ckpt_dir)))
    # Algorithm.restore_from_path syncs runner weights fire-and-forget: block and verify.
    sums = algo.learner_group.foreach_learner(lambda learner: _weight_sums(learner))
    learner_sums = [r.get() for r in sums][0]
    expected = sum(v for k, v in learner_sums.items() if k.startswith("actor_ft."))
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group,
        inference_only=True,
        timeout_seconds=60.0,
    )
    got = algo.env_runner_group.foreach_env_runner(
        lambda runner: sum(
            float(t.double().sum()) for t in _single(runner.module).actor_ft.state_dict().values()
        )
    )
    if any(abs(x - expected) > 1e-6 * max(1.0, abs(expected)) for x in got):
        raise RuntimeError(
            f"Restored weights did not reach every EnvRunner (sums {got} vs {expected})."
        )
    return learner_sums


def _weight_sums(learner) -> dict[str, float]:
    from ray.rllib.core import DEFAULT_MODULE_ID

    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return {k: float(v.detach().double().sum()) for k, v in module.state_dict().items()}


def _ckpt_meta(
    meta: dict[str, Any], it: int, env_steps: int, start_eval: Any, seconds: float
) -> dict[str, Any]:
    return {
        **meta,
        "iteration": it,
        "env_steps": env_steps,
        "start_evaluation": start_eval,
        "train_seconds": seconds,
    }


# ------------------------------------------------------------ cluster/logging helpers
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


def _warn_missing_resources(config: DPPOConfig):
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


def _tensorboard_writer(logdir: Path, purge_after: dict[str, Any]):
    """A tensorboardX writer; on resume, events past the checkpoint (env steps >
    ``purge_after['env_steps']``) from the killed run are purged from the view."""
    from tensorboardX import SummaryWriter

    step = int(purge_after.get("env_steps", 0))
    return SummaryWriter(str(logdir), purge_step=step + 1 if purge_after["iteration"] else None)


def _log_scalars(writer, line: dict[str, Any]) -> None:
    """Every number of a progress line as ``finetune/<key>`` at x = env steps."""
    step = int(line.get("env_steps", 0))
    for key, value in line.items():
        if key == "env_steps":
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            tag = f"finetune/{key}" if sub is None else f"finetune/{key}/{sub}"
            writer.add_scalar(tag, float(v), global_step=step)
    writer.flush()


def _env_config(policy: DiffusionPolicyConfig) -> dict[str, Any]:
    from rllib_diffusion.algorithms.bc.pretrain import policy_env_config

    return policy_env_config(policy)


def _module_from(algo) -> Any:
    """A CPU copy of the (remote) learner's module."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    spec = algo.config.get_rl_module_spec(spaces=None)
    module = spec.build()
    state = algo.learner_group.get_state(components="learner/rl_module/" + DEFAULT_MODULE_ID)
    module.set_state(state["learner"]["rl_module"][DEFAULT_MODULE_ID])
    return module


def progress_line(result: dict[str, Any], it: int, env_id: str | None, *, evaluated: bool) -> dict:
    """Flat per-iteration metrics from an RLlib result dict."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS, LEARNER_RESULTS

    dppo = result.get(M.DPPO_NAMESPACE, {})
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    runners = result.get(ENV_RUNNER_RESULTS, {})
    line: dict[str, Any] = {
        "iteration": it,
        "env_steps": int(dppo.get(M.ENV_STEPS, 0)),
        "decisions": int(result.get("num_env_steps_sampled_lifetime", 0)),
        M.TRAIN_RETURN: M.float_or_none(runners.get("episode_return_mean")),
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
        M.BC_REGULARISER,
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
    info = task_info(env_id or "")
    if info and line[M.TRAIN_RETURN] is not None:
        line[M.TRAIN_NORMALIZED] = _score(line[M.TRAIN_RETURN], info)
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    if evaluated and "episode_return_mean" in ev:
        line[M.EVAL_RETURN] = M.float_or_none(ev["episode_return_mean"])
        if info:
            line[M.EVAL_NORMALIZED] = _score(line[M.EVAL_RETURN], info)
    return line


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
    model = DPPOModelConfig.from_dict(config.model_config)
    pol = model.policy_config
    steps = (
        f"DDIM {pol.sampling_steps} steps (eta {model.ddim_eta:g})"
        if pol.sampler == "ddim"
        else (f"DDPM {pol.denoising_steps} steps")
    )
    return (
        f"[finetune] {pol.network} denoiser, {steps}, fine-tuning the last "
        f"{model.ft_denoising_steps}; actor lr {config.resolved_actor_lr(pol.network):g}; "
        f"{s.decisions_per_iteration} decisions x {pol.act_steps} actions per iteration, "
        f"budget {s.env_steps} env steps"
    )


def format_line(line: dict[str, Any]) -> str:
    def g(key: str, fmt: str = ".1f") -> str:
        v = line.get(key)
        return "n/a" if v is None else format(v, fmt)

    msg = (
        f"[finetune] iter {line['iteration']}  env steps {line['env_steps']}  "
        f"train return {g(M.TRAIN_RETURN)}  kl {g(M.APPROX_KL, '.4f')}  "
        f"clipfrac {g(M.CLIP_FRACTION, '.3f')}  ratio0 {g(M.RATIO_FIRST_MINIBATCH, '.6f')}  "
        f"|dθ| {g(M.ACTOR_UPDATE_NORM, '.2e')}  ev {g(M.EXPLAINED_VARIANCE, '.2f')}  "
        f"sample/learn {g(M.SAMPLE_SECONDS)}/{g(M.LEARN_SECONDS)}s"
    )
    if M.EVAL_RETURN in line:
        msg += f"  EVAL return {g(M.EVAL_RETURN)}"
    return msg


def _score(ret: float, info) -> float:
    return 100.0 * (ret - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)
