"""DPPO fine-tuning run: DiffusionBC checkpoint → DPPO on EnvRunners → checkpoints + curve.

Library function behind ``rllib-diffusion finetune`` and ``experiments/finetune.py``.
Writes into ``out_dir``: ``progress.jsonl`` (one line per iteration), ``checkpoint/``
(atomic, every ``checkpoint_interval`` iterations and at the end) and ``result.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.dppo import ALGORITHM_NAME, DPPOConfig
from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
from rllib_diffusion.checkpoints import read_checkpoint_meta
from rllib_diffusion.envs.tasks import task_info
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig
from rllib_diffusion.utils.io import write_json_atomic


@dataclass
class FinetuneSettings:
    """Settings of a DPPO fine-tuning run (CLI flags map 1:1 onto these).

    Attributes:
        checkpoint: DiffusionBC checkpoint directory (from ``rllib-diffusion pretrain``).
        out_dir: output directory.
        env_steps: budget of true env steps (decisions × executed actions).
        num_env_runners / num_envs_per_env_runner: rollout layout (CPU EnvRunners).
        decisions_per_iteration: action chunks sampled per iteration (all runners).
        num_epochs / pair_minibatch_size: PPO epochs and (env step, denoising step) pairs
            per minibatch.
        ft_denoising_steps: K_ft.
        use_ddim / ddim_steps: fine-tune a DDPM-pretrained ε-network with DDIM sampling
            over ``ddim_steps`` leading timesteps (DPPO's setting for K = 100 policies).
        actor_lr / critic_lr / clip / clip_base / target_kl / gamma / lambda_ /
        gamma_denoising / reward_scaling / critic_warmup_iterations / bc_loss_coeff:
            DPPO.md knobs (see ``DPPOConfig.training``).
        eval_interval: deterministic evaluation every this many iterations (0: end only).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: checkpoint every this many iterations (0: end only).
        num_learners / num_gpus_per_learner: LearnerGroup layout (GPU learners when present).
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
    ft_denoising_steps: int = 10
    use_ddim: bool = False
    ddim_steps: int | None = None
    actor_lr: float = 1e-4
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
    model = DPPOModelConfig(policy=policy.to_dict(), ft_denoising_steps=s.ft_denoising_steps)
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
        )
        .learners(num_learners=s.num_learners, num_gpus_per_learner=s.num_gpus_per_learner)
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
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = dppo_config_from_pretrained(s.checkpoint, s)
    policy = DiffusionPolicyConfig.from_dict(config.model_config["policy"], strict=False)
    init_ray()
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
    # Where fine-tuning starts: the pretrained policy, deterministic, in the real env.
    start_eval = evaluate_module(
        algo.learner_group._learner.module["default_policy"]
        if s.num_learners == 0
        else _module_from(algo),
        _env_config(policy),
        num_episodes=s.eval_episodes,
        seed=20_000 + s.seed,
    )
    print(
        f"[finetune] start: pretrained policy return {start_eval['episode_return_mean']:.1f} ± "
        f"{start_eval['episode_return_std']:.1f} ({s.eval_episodes} episodes)",
        flush=True,
    )
    lines: list[dict[str, Any]] = [
        {"iteration": 0, "env_steps": 0, "eval_return_mean": start_eval["episode_return_mean"]}
    ]
    it = 0
    try:
        with open(out / "progress.jsonl", "w") as progress:
            progress.write(json.dumps(lines[0]) + "\n")
            while True:
                it += 1
                result = algo.train()
                evaluated = bool(s.eval_interval) and it % s.eval_interval == 0
                line = progress_line(result, it, policy.env_id, evaluated=evaluated)
                lines.append(line)
                progress.write(json.dumps(line) + "\n")
                progress.flush()
                print(format_line(line), flush=True)
                done = line["env_steps"] >= s.env_steps
                if s.checkpoint_interval and it % s.checkpoint_interval == 0 and not done:
                    save_algorithm_checkpoint(algo, out / "checkpoint", {**meta, "iteration": it})
                if done:
                    break
        ckpt = save_algorithm_checkpoint(algo, out / "checkpoint", {**meta, "iteration": it})
        train_seconds = time.perf_counter() - t0
    finally:
        algo.stop()
    module, _ = load_policy_module(ckpt)
    final_eval = evaluate_module(
        module, _env_config(policy), num_episodes=s.eval_episodes, seed=30_000 + s.seed
    )
    summary = {
        **meta,
        "checkpoint": ckpt,
        "iterations": it,
        "env_steps": lines[-1]["env_steps"],
        "train_seconds": train_seconds,
        "start_evaluation": start_eval,
        "final_evaluation": final_eval,
        "progress": lines,
    }
    write_json_atomic(out / "result.json", summary)
    print(
        f"[finetune] return before {start_eval['episode_return_mean']:.1f} -> after "
        f"{final_eval['episode_return_mean']:.1f} ± {final_eval['episode_return_std']:.1f} "
        f"({s.eval_episodes} episodes, {summary['env_steps']} env steps, "
        f"{train_seconds / 60:.1f} min)",
        flush=True,
    )
    return summary


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
        M.TRAIN_RETURN: _f(runners.get("episode_return_mean")),
        M.SAMPLE_SECONDS: _f(dppo.get(M.SAMPLE_SECONDS)),
        M.LEARN_SECONDS: _f(dppo.get(M.LEARN_SECONDS)),
        M.SYNC_SECONDS: _f(dppo.get(M.SYNC_SECONDS)),
    }
    for key in (
        M.APPROX_KL,
        M.CLIP_FRACTION,
        M.EXPLAINED_VARIANCE,
        M.RATIO_MEAN,
        M.KL_STOPPED,
        M.DENOISING_STD,
        M.BC_REGULARISER,
        "policy_loss",
        "vf_loss",
    ):
        if key in learner:
            line[key] = _f(learner[key])
    per_step = {k: _f(v) for k, v in learner.items() if str(k).startswith(M.CLIP_FRACTION_PER_STEP)}
    if per_step:
        line["clip_fraction_per_step"] = per_step
    info = task_info(env_id or "")
    if info and line[M.TRAIN_RETURN] is not None:
        line[M.TRAIN_NORMALIZED] = _score(line[M.TRAIN_RETURN], info)
    ev = result.get(EVALUATION_RESULTS, {}).get(ENV_RUNNER_RESULTS, {})
    if evaluated and "episode_return_mean" in ev:
        line[M.EVAL_RETURN] = _f(ev["episode_return_mean"])
        if info:
            line[M.EVAL_NORMALIZED] = _score(line[M.EVAL_RETURN], info)
    return line


def format_line(line: dict[str, Any]) -> str:
    def g(key: str, fmt: str = ".1f") -> str:
        v = line.get(key)
        return "n/a" if v is None else format(v, fmt)

    msg = (
        f"[finetune] iter {line['iteration']}  env steps {line['env_steps']}  "
        f"train return {g(M.TRAIN_RETURN)}  kl {g(M.APPROX_KL, '.4f')}  "
        f"clipfrac {g(M.CLIP_FRACTION, '.3f')}  ev {g(M.EXPLAINED_VARIANCE, '.2f')}  "
        f"sample/learn {g(M.SAMPLE_SECONDS)}/{g(M.LEARN_SECONDS)}s"
    )
    if M.EVAL_RETURN in line:
        msg += f"  EVAL return {g(M.EVAL_RETURN)}"
    return msg


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _score(ret: float, info) -> float:
    return 100.0 * (ret - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)
