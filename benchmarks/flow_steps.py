"""Benchmark (issue #17, item 1): one flow-matching BC policy sampled with K Euler steps.

Flow matching learns a velocity field in continuous time, so one checkpoint
(``rllib-diffusion pretrain --sampler flow``) can act with any number of integration
steps K. For each K this rebuilds the checkpoint's module with ``denoising_steps = K``,
loads the same weights, and measures the deterministic return (``--episodes`` episodes,
the same seeds for every K) and the module's action-chunk rate (batch 1, one torch
thread). Writes ``benchmarks/results/<name>.json``.

Example::

    python benchmarks/flow_steps.py --checkpoint runs/bc_flow/checkpoint --steps 1 2 4 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def module_with_steps(checkpoint: str, steps: int):
    """The checkpoint's policy module, rebuilt to integrate with ``steps`` Euler steps."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rllib_diffusion.checkpoints import load_policy_module

    trained, meta = load_policy_module(checkpoint)
    config = {**trained.model_config, "denoising_steps": steps}
    spec = RLModuleSpec(
        module_class=type(trained),
        observation_space=trained.observation_space,
        action_space=trained.action_space,
        inference_only=trained.inference_only,
        model_config=config,
    )
    module = spec.build()
    module.load_state_dict(trained.state_dict())
    module.eval()
    return module, meta


def chunks_per_second(module, obs_dim: int, seconds: float = 3.0) -> float:
    """Deterministic forward passes (one action chunk each) per second, batch 1."""
    import torch
    from ray.rllib.core.columns import Columns

    batch = {Columns.OBS: torch.zeros(1, obs_dim)}
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        module.forward_inference(batch)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    import torch

    from rllib_diffusion.evaluation import evaluate_module
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="flow DiffusionBC checkpoint")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--name", default="flow_steps_hopper_medium")
    args = p.parse_args()
    torch.set_num_threads(1)
    figures = {}
    for k in args.steps:
        module, meta = module_with_steps(args.checkpoint, k)
        policy = DiffusionPolicyConfig.from_dict(module.model_config, strict=False)
        if policy.sampler != "flow":
            raise SystemExit(f"'{args.checkpoint}' samples with {policy.sampler!r}, not flow.")
        ev = evaluate_module(
            module,
            policy.env_config(),
            num_episodes=args.episodes,
            seed=40_000,
            dataset=meta.dataset,
        )
        figures[f"K{k}"] = {
            "return_mean": ev["episode_return_mean"],
            "return_std": ev["episode_return_std"],
            "episodes": args.episodes,
            "chunks_per_second": chunks_per_second(module, policy.obs_dim),
        }
        print(f"K={k}: {figures[f'K{k}']}", flush=True)
    path = write_result(args.name, figures, checkpoint=str(args.checkpoint))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
