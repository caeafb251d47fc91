"""Diagnose a DSRL-NA checkpoint (issue 17): does its actor steer, do its critics see
the action?

On states visited by the base policy (decoded from ``w = 0``), reports the actor's noise
(``|mean|``, ``tanh(mean)`` RMS, std), the temperature, and the critics' spread: the
std of ``Q^A(s, decode(s, w))`` and ``Q^W(s, w)`` over 64 noises per state, of ``Q^A``
over uniform random actions and over states. A critic that ignores the action (std 0)
gives the actor no gradient but the entropy term: its mean goes to 0 and the
deterministic policy becomes the base policy at ``w = 0``. Then evaluates the steered
policy deterministically (``tanh(mean)``) and stochastically (the official evaluation).

    python benchmarks/dsrl_diagnosis.py --checkpoint runs/beyond/dsrl_s0/checkpoint \\
        --name dsrl_diagnosis_hopper --label stalled_120k

A checkpoint from older code needs that code first on the path (``PYTHONPATH=<worktree>``).
Results are merged by ``--label`` into ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, write_result  # noqa: E402


def visited_states(decoder: Any, env_config: dict, n: int, seed: int) -> torch.Tensor:
    """``(n, To*Do)`` observations of the base policy decoded from ``w = 0``."""
    from ray.rllib.core.columns import Columns

    from rllib_diffusion.algorithms.dsrl.decoder import ZeroNoisePolicy
    from rllib_diffusion.envs.chunking import make_chunked_env

    env, policy = make_chunked_env(env_config), ZeroNoisePolicy(decoder)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        rows.append(np.asarray(obs, np.float32).reshape(-1))
        batch = {Columns.OBS: torch.as_tensor(rows[-1][None])}
        action = policy.forward_inference(batch)[Columns.ACTIONS][0].numpy()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.as_tensor(np.stack(rows))


def min_q(module: Any, obs: torch.Tensor, actions: torch.Tensor, *, noise: bool) -> torch.Tensor:
    return torch.stack(module._heads(obs, actions, noise=noise)).min(dim=0).values


def critic_spread(learner: Any, obs: torch.Tensor, draws: int = 64) -> dict[str, float]:
    """Std of the critics over noises/actions per state (mean over states) and over states."""
    n = learner.action_space.shape[0]
    with torch.no_grad():
        w = torch.randn(draws, len(obs), n).clamp(-1, 1)
        qw = torch.stack([min_q(learner, obs, w[i], noise=True) for i in range(draws)])
        qa = torch.stack(
            [min_q(learner, obs, learner.decode(obs, w[i]), noise=False) for i in range(draws)]
        )
        u = torch.rand(draws, len(obs), n) * 2 - 1
        qu = torch.stack([min_q(learner, obs, u[i], noise=False) for i in range(draws)])
        decoded = torch.stack([learner.decode(obs, w[i]) for i in range(draws)])
    return {
        "q_env_mean": float(qa.mean()),
        "q_env_std_over_noises": float(qa.std(0).mean()),
        "q_noise_std_over_noises": float(qw.std(0).mean()),
        "q_env_std_over_uniform_actions": float(qu.std(0).mean()),
        "q_env_std_over_states": float(qa.mean(0).std()),
        "decoded_action_std_over_noises": float(decoded.std(0).mean()),
    }


def actor_noise(module: Any, obs: torch.Tensor) -> dict[str, float]:
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    mean, log_std = logits.chunk(2, dim=-1)
    return {
        "actor_abs_mean": float(mean.abs().mean()),
        "actor_abs_mean_max": float(mean.abs().max()),
        "actor_tanh_mean_rms": float(torch.tanh(mean).pow(2).mean().sqrt()),
        "actor_std_mean": float(log_std.exp().mean()),
    }


def diagnose(ckpt: Path, episodes: int, states: int) -> dict[str, Any]:
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rllib_diffusion.algorithms.dsrl.decoder import load_decoder
    from rllib_diffusion.algorithms.dsrl.finetune import load_steered_policy
    from rllib_diffusion.checkpoints import read_checkpoint_meta
    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    meta = read_checkpoint_meta(ckpt)
    steered = load_steered_policy(ckpt)
    env_config = DiffusionPolicyConfig.from_dict(meta.policy_config, strict=False).env_config()
    obs = visited_states(steered.decoder, env_config, states, seed=5)
    learner = RLModule.from_checkpoint(str(ckpt / "learner_group/learner/rl_module/default_policy"))
    knobs = meta.hyperparameters or {}
    decoder = load_decoder(meta.pretrained_checkpoint, knobs.get("decoder_ddim_steps"))
    learner.decoder.load_state_dict(decoder.state_dict())
    state = pickle.loads((ckpt / "learner_group/learner/state.pkl").read_bytes())
    log_alpha = state.get("dsrl_log_alpha", {}).get("default_policy")
    out: dict[str, Any] = {"env_steps": meta.env_steps, "log_alpha": log_alpha}
    out |= actor_noise(steered.noise_module, obs) | critic_spread(learner, obs)
    for deterministic in (True, False):
        ev = evaluate_module(
            steered, env_config, num_episodes=episodes, seed=30_000, deterministic=deterministic
        )
        key = "eval_deterministic" if deterministic else "eval_stochastic"
        out[key + "_mean"], out[key + "_std"] = ev["episode_return_mean"], ev["episode_return_std"]
    out["load_average"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="a DSRL-NA checkpoint directory")
    p.add_argument("--label", required=True, help="key of this checkpoint in the result")
    p.add_argument("--name", default="dsrl_diagnosis_hopper", help="result file name")
    p.add_argument("--episodes", type=int, default=5, help="episodes per evaluation")
    p.add_argument("--states", type=int, default=200, help="visited states to probe")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    figures = diagnose(Path(args.checkpoint).resolve(), args.episodes, args.states)
    figures["checkpoint"] = args.checkpoint
    path = RESULTS_DIR / f"{args.name}.json"
    merged = json.loads(path.read_text())["figures"] if path.exists() else {}
    merged[args.label] = figures
    write_result(args.name, merged)
    print(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
