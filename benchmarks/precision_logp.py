"""Benchmark: how far bf16 autocast moves the PPO ratio of DPPO/ReinFlow at its start.

DPPO's ratio ``exp(logp_new − logp_old)`` is clipped at ``1 ± 0.01`` (gym default); right
after sampling it is 1 up to float error. Recomputing ``logp_new`` with the denoiser under
``torch.autocast(bfloat16)`` while ``logp_old`` came from fp32 sampling (the EnvRunners)
shifts it by the bf16 error of ε. This script samples real rollouts of a trained DPPO
checkpoint (``--episodes`` lock-step chunk envs, exploration noise, as an EnvRunner does),
recomputes every (env step, denoising step) pair's log-prob in fp32 and under bf16
autocast, and reports ``|ratio − 1|`` (median, 99th percentile, max) and the share of
pairs whose ratio already lies outside the clip range — against the clip coefficient.

Example::

    OMP_NUM_THREADS=1 python benchmarks/precision_logp.py \\
        --checkpoint runs/main_job/dppo/checkpoint
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, write_result  # noqa: E402


def rollout_pairs(module, env_config: dict, envs: int, chunks: int, seed: int) -> dict:
    """``chunks`` exploration decisions in ``envs`` lock-step chunk envs (an env that ends
    resets): per pair its obs, ``x_prev``, ``x_next``, step ``k`` and fp32 ``old_logp``."""
    from rllib_diffusion.envs.chunking import make_chunked_env

    torch.manual_seed(seed)
    pool = [make_chunked_env(dict(env_config)) for _ in range(envs)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(pool)])
    parts: dict[str, list] = {"obs": [], "x_prev": [], "x_next": [], "k": [], "old_logp": []}
    for _ in range(chunks):
        with torch.no_grad():
            out = module.sample(torch.as_tensor(obs, dtype=torch.float32), deterministic=False)
        n, k_ft = out["logp"].shape
        chain = out["chain"]
        parts["obs"].append(torch.as_tensor(obs).float().repeat_interleave(k_ft, 0))
        parts["x_prev"].append(chain[:, :-1].reshape(n * k_ft, *chain.shape[2:]))
        parts["x_next"].append(chain[:, 1:].reshape(n * k_ft, *chain.shape[2:]))
        parts["k"].append(torch.arange(k_ft).repeat(n))
        parts["old_logp"].append(out["logp"].reshape(-1))
        actions = out["actions"].numpy()
        for i, env in enumerate(pool):
            o, _, term, trunc, _ = env.step(actions[i])
            obs[i] = env.reset()[0] if term or trunc else o
    return {key: torch.cat(v) for key, v in parts.items()}


def ratio_deviation(module, pairs: dict, precision: str) -> np.ndarray:
    """``|exp(logp_new − old_logp) − 1|`` per pair, ``logp_new`` at ``precision``."""
    from rllib_diffusion.utils.precision import autocast

    with torch.no_grad(), autocast(precision, "cpu"):
        new = module.pair_logp(pairs["obs"], pairs["x_prev"], pairs["x_next"], pairs["k"])
    assert new.dtype == torch.float32, new.dtype
    return (new - pairs["old_logp"]).exp().sub(1).abs().numpy()


def summary(dev: np.ndarray, clip: np.ndarray) -> dict:
    return {
        "median": float(np.median(dev)),
        "p99": float(np.quantile(dev, 0.99)),
        "max": float(dev.max()),
        "share_outside_clip": float((dev > clip).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="a DPPO (or ReinFlow) checkpoint")
    p.add_argument("--envs", type=int, default=40)
    p.add_argument("--chunks", type=int, default=25, help="decisions per env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="precision_dppo_logp")
    args = p.parse_args()
    torch.set_num_threads(1)
    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
    from rllib_diffusion.algorithms.dppo.dppo_learner import clip_schedule
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.evaluation import checkpoint_env_config

    load_start = load_average()
    module, meta = load_policy_module(args.checkpoint)
    pairs = rollout_pairs(
        module, checkpoint_env_config(args.checkpoint, meta), args.envs, args.chunks, args.seed
    )
    cfg = DPPOConfig()
    clip = clip_schedule(module.ratio_steps, cfg.clip_param, cfg.clip_param_base).numpy()
    clip_per_pair = clip[pairs["k"].numpy()]
    figures = {"pairs": len(pairs["k"]), "clip_min": float(clip.min())}
    for precision in ("fp32", "bf16"):
        dev = ratio_deviation(module, pairs, precision)
        figures[precision] = summary(dev, clip_per_pair)
        by_step = [float(np.median(dev[pairs["k"].numpy() == k])) for k in range(len(clip))]
        figures[f"{precision}_median_by_step"] = by_step
    figures["load_average_start"], figures["load_average_end"] = load_start, load_average()
    path = write_result(args.name, figures, checkpoint=args.checkpoint)
    for precision in ("fp32", "bf16"):
        print(precision, figures[precision])
    print(f"clip {clip.min():g}..{clip.max():g}; wrote {path}")


if __name__ == "__main__":
    main()
