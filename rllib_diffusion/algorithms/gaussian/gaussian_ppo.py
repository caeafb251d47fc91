"""Gaussian PPO fine-tuning from a GaussianBC checkpoint: DPPO's Gaussian-policy baseline.

RLlib's own ``PPO`` with its default ``DefaultPPOTorchRLModule`` (separate actor and
critic MLPs of the BC policy's sizes) in the BC policy's env: the action-chunk env with
Ta = act_steps = 1, flat actions and the dataset's min-max normalisation, so the
pretrained policy acts exactly as it did under BC.

Weight transfer (:func:`load_bc_policy`): RLlib's BC module has ``_encoder`` + ``_pi_head``,
PPO's has ``encoder.actor_encoder`` + ``pi`` (+ ``encoder.critic_encoder`` + ``vf``), with
identical layer layouts below those prefixes. The policy weights (log-std included) are
renamed and loaded into the Learner's module, the critic keeps its fresh initialisation,
the EnvRunners get the weights, and the result is checked: the Learner's and every
EnvRunner's action-distribution inputs (so the deterministic actions and the log-std)
must equal the BC module's on a batch of observations, or :func:`load_bc_policy` raises.

Env steps are decisions of the chunk env; with Ta = act_steps = 1 they are real env steps.
Runs on the shared run loop (``rllib_diffusion.run_loop``): writes into ``out_dir``
``checkpoint/`` (``algorithm="GaussianPPO"``), ``progress.jsonl`` (one line per
iteration), ``tensorboard/`` and ``result.json``, and continues with ``resume``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rllib_diffusion.algorithms.gaussian.gaussian_bc import ALGORITHM_NAME as BC_ALGORITHM
from rllib_diffusion.checkpoints import CheckpointError, CheckpointMeta
from rllib_diffusion.knobs import (
    Count,
    Discount,
    NonNegative,
    PositiveFloat,
    Probability,
    check_ranges,
)
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.run_loop import RunControl, RunFamily, eval_fields, run_training

ALGORITHM_NAME = "GaussianPPO"

#: BC module key prefix -> PPO module key prefix, for the policy's weights.
BC_TO_PPO_PREFIXES: tuple[tuple[str, str], ...] = (
    ("_encoder.", "encoder.actor_encoder."),
    ("_pi_head.", "pi."),
)


@dataclass
class GaussianPPOSettings:
    """Settings of a Gaussian PPO fine-tuning run (CLI flags map 1:1 onto these).

    Attributes:
        checkpoint: GaussianBC checkpoint (``<pretrain-gaussian out>/checkpoint``).
        out_dir: output directory.
        env_steps: env-step budget; training stops at the first iteration reaching it.
        num_env_runners: CPU EnvRunners (0: sample in the driver).
        num_envs_per_env_runner: vectorised envs per EnvRunner.
        train_batch_size: env steps per iteration (per PPO update).
        minibatch_size: env steps per SGD minibatch.
        num_epochs: passes over each iteration's batch.
        lr: Adam learning rate (actor and critic share RLlib PPO's one optimizer);
            1e-4 is DPPO's fine-tuning actor rate.
        clip_param: PPO ratio clip.
        gamma: discount per env step.
        lambda_: GAE λ.
        eval_interval: deterministic evaluation every this many iterations, plus one
            before training (0: only the final one).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: save every this many iterations (0: only at the end).
        seed: RNG seed.
        resume: continue from ``out_dir/checkpoint`` if present (learner and optimizer
            state, iteration and env-step counters, progress lines up to it); the other
            settings must match the checkpoint's. Without it an existing checkpoint in
            ``out_dir`` is an error.
        overwrite: replace an earlier run in OUT (its checkpoint, progress, result and
            TensorBoard files); without it (or --resume) an earlier run there is an error.
        knobs: ``DiffPPOConfig.training()`` knobs given (e.g. ``synthetic_ratio``); any
            makes the run DiffPPO (synthetic-segment augmentation, checkpoint algorithm
            "DiffPPO"), none is plain RLlib PPO.
    """

    checkpoint: str
    out_dir: str = "runs/finetune_gaussian"
    env_steps: Count = 1_000_000
    num_env_runners: NonNegative = 1
    num_envs_per_env_runner: Count = 8
    train_batch_size: Count = 8192
    minibatch_size: Count = 512
    num_epochs: Count = 5
    lr: PositiveFloat = 1e-4
    clip_param: PositiveFloat = 0.2
    gamma: Discount = 0.99
    lambda_: Probability = 0.95
    eval_interval: NonNegative = 5
    eval_episodes: Count = 10
    checkpoint_interval: NonNegative = 10
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.knobs:
            from rllib_diffusion.algorithms.gaussian.diffppo import (
                DiffPPOConfig,
                check_diffppo_knobs,
            )
            from rllib_diffusion.knobs import check_knobs, declared_knobs

            check_knobs("diffppo", declared_knobs(DiffPPOConfig), self.knobs)
            check_diffppo_knobs(DiffPPOConfig().training(**self.knobs))
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError(
                f"minibatch_size={self.minibatch_size} (--minibatch-size) must be <= "
                f"train_batch_size={self.train_batch_size} (--train-batch-size)."
            )


def read_gaussian_bc_meta(path: str) -> CheckpointMeta:
    """Metadata of a GaussianBC checkpoint, or a CheckpointError naming what ``path`` is."""
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    meta = read_checkpoint_meta(path)
    algo = meta.algorithm
    if algo != BC_ALGORITHM:
        hint = " Diffusion policies are fine-tuned with DPPO." if algo == "DiffusionBC" else ""
        raise CheckpointError(
            f"'{path}' is a {algo!r} checkpoint, not a {BC_ALGORITHM!r} one; Gaussian PPO "
            f"starts from the checkpoint of `rllib-diffusion pretrain-gaussian`.{hint}"
        )
    missing = [k for k in ("env_config", "model_config") if getattr(meta, k) is None]
    if missing:
        raise CheckpointError(f"GaussianBC checkpoint '{path}' lacks {missing} in its metadata.")
    return meta


def build_gaussian_ppo_config(
    settings: GaussianPPOSettings, env_config: dict[str, Any], model_config: dict[str, Any]
):
    """RLlib ``PPOConfig`` for the BC policy's env and network (``DiffPPOConfig`` with
    the settings' knobs when it has any)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from rllib_diffusion.algorithms.gaussian.diffppo import DiffPPOConfig
    from rllib_diffusion.algorithms.gaussian.gmm import GMMPPOCatalog, policy_module_args
    from rllib_diffusion.envs.chunking import register_chunked_env

    s = settings
    config = DiffPPOConfig().training(**s.knobs) if s.knobs else PPOConfig()
    return (
        config.environment(register_chunked_env(), env_config=env_config)
        .env_runners(
            num_env_runners=s.num_env_runners,
            num_envs_per_env_runner=s.num_envs_per_env_runner,
        )
        .training(
            train_batch_size_per_learner=s.train_batch_size,
            minibatch_size=s.minibatch_size,
            num_epochs=s.num_epochs,
            lr=s.lr,
            gamma=s.gamma,
            lambda_=s.lambda_,
            clip_param=s.clip_param,
            # RLlib clamps the *squared* value error at vf_clip_param (default 10),
            # which zeroes the critic's gradient on returns in the hundreds.
            vf_clip_param=float("inf"),
            # Plain clipped PPO as DPPO compares against: no KL penalty, no entropy bonus.
            use_kl_loss=False,
            entropy_coeff=0.0,
            # No global-norm clip: actor and critic share one optimizer, and the fresh
            # critic's large gradients would shrink the actor's steps.
            grad_clip=None,
        )
        .rl_module(**policy_module_args(model_config, GMMPPOCatalog))
        .debugging(seed=s.seed)
    )


def bc_to_ppo_state(
    bc_state: dict[str, Any], ppo_state: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``ppo_state`` with its policy entries replaced by ``bc_state``'s (critic untouched).

    Returns ``(new_state, [(bc_key, ppo_key), ...])``. Raises CheckpointError when a BC
    key has no PPO counterpart, shapes differ, or a PPO policy key stays unfilled.
    """
    new_state = dict(ppo_state)
    mapping: list[tuple[str, str]] = []
    for key, value in bc_state.items():
        target = next(
            (dst + key[len(src) :] for src, dst in BC_TO_PPO_PREFIXES if key.startswith(src)),
            None,
        )
        if target is None or target not in ppo_state:
            raise CheckpointError(
                f"BC weight '{key}' has no counterpart in the PPO module (looked for "
                f"{target!r}); the RLlib module layouts differ from what this loader knows."
            )
        if tuple(np.shape(value)) != tuple(np.shape(ppo_state[target])):
            raise CheckpointError(
                f"BC weight '{key}' has shape {tuple(np.shape(value))} but PPO's '{target}' "
                f"has {tuple(np.shape(ppo_state[target]))}: the networks differ."
            )
        new_state[target] = value
        mapping.append((key, target))
    filled = {dst for _, dst in mapping}
    policy_prefixes = tuple(dst for _, dst in BC_TO_PPO_PREFIXES)
    unfilled = [k for k in ppo_state if k.startswith(policy_prefixes) and k not in filled]
    if unfilled:
        raise CheckpointError(f"The BC checkpoint has no weights for PPO's policy keys {unfilled}.")
    return new_state, mapping


def load_bc_policy(
    algo: Any, bc_module: Any, *, check_obs: np.ndarray | None = None
) -> list[tuple[str, str]]:
    """Load ``bc_module``'s policy into ``algo``'s PPO Learner and EnvRunners, and check it.

    Raises RuntimeError if afterwards the Learner's or any EnvRunner's action-distribution
    inputs on ``check_obs`` (default: 256 seeded uniform [-1.5, 1.5] observations)
    differ from the BC module's. Returns the key mapping used.
    """
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.utils.numpy import convert_to_numpy

    path = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
    ppo_state = algo.learner_group.get_state(components=path)[COMPONENT_LEARNER][
        COMPONENT_RL_MODULE
    ][DEFAULT_MODULE_ID]
    new_state, mapping = bc_to_ppo_state(convert_to_numpy(bc_module.get_state()), ppo_state)
    algo.learner_group.set_state(
        {COMPONENT_LEARNER: {COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: new_state}}}
    )
    # sync_weights is fire-and-forget and silently skips an EnvRunner whose previous
    # "set_state" request (e.g. from build_algo) is still in flight; waiting for those
    # first makes this sync actually go out. Actor calls run in order, so the check
    # below sees its result.
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group,
        inference_only=True,
        timeout_seconds=60.0,
    )
    if check_obs is None:
        obs_dim = int(np.prod(bc_module.observation_space.shape))
        check_obs = np.random.default_rng(0).uniform(-1.5, 1.5, (256, obs_dim))
    check_obs = np.asarray(check_obs, dtype=np.float32)
    expected = _dist_inputs(bc_module, check_obs)
    copies = {
        # foreach_learner returns call results (local or remote) to unwrap.
        "learner": [
            r.get()
            for r in algo.learner_group.foreach_learner(
                lambda learner: _dist_inputs(learner.module[DEFAULT_MODULE_ID], check_obs)
            )
        ],
        "env runner": algo.env_runner_group.foreach_env_runner(
            lambda runner: _dist_inputs(_single_module(runner.module), check_obs)
        ),
    }
    for where, outputs in copies.items():
        for i, got in enumerate(outputs):
            diff = float(np.abs(got - expected).max())
            if got.shape != expected.shape or not diff <= 1e-6:
                raise RuntimeError(
                    f"Loading the BC policy into PPO failed: the {where} #{i} module's "
                    f"action-distribution inputs differ from the BC module's by {diff:.3g}."
                )
    return mapping


def _single_module(module: Any) -> Any:
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    return module[DEFAULT_MODULE_ID] if isinstance(module, MultiRLModule) else module


def _dist_inputs(module: Any, obs: np.ndarray) -> np.ndarray:
    """Action-distribution inputs (mean, log-std) of an RLlib default module, (B, 2*Da)."""
    from ray.rllib.core.columns import Columns

    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    device = next(iter(module.parameters())).device
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(obs, device=device)})
    return out[Columns.ACTION_DIST_INPUTS].cpu().numpy()


class GaussianPPOFamily(RunFamily):
    """Gaussian PPO on the run loop: budget in env steps, the BC policy loaded on a fresh
    start (with an iteration-0 evaluation when ``eval_interval`` > 0)."""

    tag = "finetune-gaussian"
    unit = "env_steps"

    def __init__(self, s: GaussianPPOSettings) -> None:
        from rllib_diffusion.checkpoints import CheckpointMeta, load_policy_module
        from rllib_diffusion.utils.runtime import run_metadata

        self.s = s
        bc_meta = read_gaussian_bc_meta(s.checkpoint)
        self.bc_module, _ = load_policy_module(s.checkpoint, expect_algorithms=(BC_ALGORITHM,))
        self.env_config, self.model_config = bc_meta.env_config, bc_meta.model_config
        self.mapping: list | None = None
        from rllib_diffusion.algorithms.gaussian.diffppo import ALGORITHM_NAME as DIFFPPO

        self.algorithm = DIFFPPO if s.knobs else ALGORITHM_NAME
        self._meta = CheckpointMeta(
            algorithm=self.algorithm,
            env_id=bc_meta.env_id,
            env_config=self.env_config,
            model_config=self.model_config,
            bc_checkpoint=str(Path(s.checkpoint).expanduser().resolve()),
            dataset=bc_meta.dataset,
            settings=asdict(s),
            run=run_metadata(),
        )

    def meta(self):
        return self._meta

    def check_resumable(self, saved, where: Path) -> None:
        from rllib_diffusion.algorithms.offline_run import check_same_run_settings

        # Runs saved before DiffPPO's knobs existed had none.
        check_same_run_settings({"knobs": {}, **(saved.settings or {})}, asdict(self.s), where)

    def build(self):
        from rllib_diffusion.envs.chunking import make_chunked_env
        from rllib_diffusion.utils.resources import resource_guard
        from rllib_diffusion.utils.runtime import init_ray

        init_ray()
        config = build_gaussian_ppo_config(self.s, self.env_config, self.model_config)
        # Fail fast when the cluster can never hold the EnvRunners (issue 20).
        flags = {"num_env_runners": "--num-env-runners"}
        with resource_guard(config, tag=f"[{self.tag}] ", flags=flags):
            algo = config.build_algo()
        # Local inference copy of the Learner's policy for evaluate_module.
        env = make_chunked_env(self.env_config)
        self.eval_module = config.get_rl_module_spec(env=env, inference_only=True).build()
        env.close()
        return algo

    def evaluate(self, algo, seed: int) -> dict[str, Any]:
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

        from rllib_diffusion.evaluation import evaluate_module

        path = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
        state = algo.learner_group.get_state(components=path)
        self.eval_module.set_state(state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID])
        return evaluate_module(
            self.eval_module,
            self.env_config,
            num_episodes=self.s.eval_episodes,
            seed=seed,
            dataset=self._meta.dataset,
        )

    def start(self, algo, control: RunControl) -> dict[str, Any] | None:
        self.mapping = load_bc_policy(algo, self.bc_module)
        print(
            f"[{self.tag}] loaded {len(self.mapping)} policy tensors from {self.s.checkpoint}; "
            "PPO and BC actions match",
            flush=True,
        )
        if not control.eval_interval:
            return None
        self.start_evaluation = self.evaluate(algo, 10_000 + control.seed)
        line = {"iteration": 0, "env_steps": 0, "seconds": 0.0}
        line.update(eval_fields(self.start_evaluation))
        print(self.format_line(line, control), flush=True)
        return line

    def progress_line(self, algo, result, it: int, *, evaluated: bool) -> dict[str, Any]:
        line = _progress_line(result, it, int(result.get("num_env_steps_sampled_lifetime", 0)))
        line.update(_diffppo_fields(result))
        if evaluated:
            line.update(eval_fields(self.evaluate(algo, 10_000 + self.s.seed + it)))
        return line

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        return _message(line, self.s)

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.evaluation import evaluate_module

        module, _ = load_policy_module(ckpt, expect_algorithms=(self.algorithm,))
        return evaluate_module(
            module,
            self.env_config,
            num_episodes=control.eval_episodes,
            seed=20_000 + control.seed,
            dataset=self._meta.dataset,
        )

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        summary = {
            **base,
            "weight_mapping": self.mapping,
            "initial_evaluation": self.start_evaluation,
            "evaluation": evaluation,
        }
        msg = (
            f"[{self.tag}] eval return {evaluation['episode_return_mean']:.1f} ± "
            f"{evaluation['episode_return_std']:.1f} over {self.s.eval_episodes} episodes"
        )
        if "normalized_score" in evaluation:
            msg += f" (normalised score {evaluation['normalized_score']:.1f})"
        print(f"{msg}; {base['env_steps']} env steps in {base['train_seconds']:.0f}s", flush=True)
        return summary


def finetune_gaussian_ppo(settings: GaussianPPOSettings) -> dict[str, Any]:
    """Fine-tune a GaussianBC policy with RLlib PPO; returns the summary in ``result.json``."""
    from rllib_diffusion.utils.runtime import limit_threads

    s = settings
    limit_threads()
    return run_training(GaussianPPOFamily(s), RunControl.from_settings(s, budget=s.env_steps))


def _progress_line(result: dict[str, Any], it: int, env_steps: int) -> dict:
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    line: dict[str, Any] = {
        "iteration": it,
        "env_steps": env_steps,
        "train_return_mean": float(runners.get("episode_return_mean", float("nan"))),
    }
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "vf_explained_var"):
        if key in learner:
            line[key] = float(learner[key])
    return line


def _diffppo_fields(result: dict[str, Any]) -> dict[str, float]:
    """DiffPPO's own numbers of an iteration (none for plain PPO), prefixed ``diffppo_``."""
    from rllib_diffusion.algorithms.gaussian.diffppo import METRICS_NAMESPACE

    found = result.get(METRICS_NAMESPACE, {})
    return {f"{METRICS_NAMESPACE}_{k}": float(v) for k, v in found.items()}


def _message(line: dict[str, Any], s: GaussianPPOSettings) -> str:
    msg = (
        f"[finetune-gaussian] iter {line['iteration']}  env steps {line['env_steps']}/{s.env_steps}"
    )
    if "train_return_mean" in line:
        msg += f"  train return {line['train_return_mean']:.1f}"
    if "eval_return_mean" in line:
        msg += f"  eval return {line['eval_return_mean']:.1f} ± {line['eval_return_std']:.1f}"
        if "eval_normalized_score" in line:
            msg += f" (score {line['eval_normalized_score']:.1f})"
    return msg + f"  {line['seconds']:.0f}s"
