"""Benchmark: how far one DPPO actor step moves each pretrained denoiser (issue 18).

For each DiffusionBC checkpoint × sampler × actor learning rate: build the DPPO module,
sample the fine-tuned chains of ``--states`` dataset states (normalised like the env
does), then take ``--steps`` AdamW steps on the unclipped surrogate ``mean(A·ratio)`` with
fixed random advantages, on that fixed batch, and record the approx-KL (k3), the mean
ratio, the fraction of pairs whose ratio left ``1 ± clip`` and the actor's gradient norm
after each step. A policy that moves much further per step at the same learning rate
needs a smaller one (the UNet: see ``DEFAULT_ACTOR_LR`` in ``algorithms/dppo/dppo.py``).

Example::

    python benchmarks/dppo_update_size.py --dataset data/hopper-medium-v5-small.npz \\
        --checkpoint mlp=runs/bc/checkpoint --checkpoint unet=runs/bc_unet/checkpoint \\
        --lr 1e-4 --lr 1e-5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def first_steps(ckpt: str, states: np.ndarray, sampler: str, lr: float, args) -> dict:
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig, DPPOModule
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    bc, meta = load_policy_module(ckpt, expect_algorithms=("DiffusionBC",))
    pol = DiffusionPolicyConfig.from_dict(meta.policy_config, strict=False)
    if sampler == "ddim":
        pol = DiffusionPolicyConfig.from_dict(
            {**pol.to_dict(), "sampler": "ddim", "ddim_steps": args.ddim_steps}
        )
    cfg = DPPOModelConfig(policy=pol.to_dict())
    spaces = chunk_spaces(pol.obs_dim, pol.horizon, pol.action_dim)
    module = DPPOModule(
        observation_space=spaces[0], action_space=spaces[1], model_config=cfg.to_dict()
    )
    module.load_pretrained_denoiser(bc.ema_net.state_dict())
    low = np.asarray(pol.normalization["obs"]["low"])
    high = np.asarray(pol.normalization["obs"]["high"])
    obs = torch.tensor(2 * (states - low) / (high - low + 1e-6) - 1, dtype=torch.float32)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        out = module.sample(obs, deterministic=False)
    n, k_ft = out["logp"].shape
    k = torch.arange(k_ft).repeat(n)
    o = obs.repeat_interleave(k_ft, 0)
    x_prev = out["chain"][:, :-1].reshape(n * k_ft, *out["chain"].shape[2:])
    x_next = out["chain"][:, 1:].reshape(n * k_ft, *out["chain"].shape[2:])
    old = out["logp"].reshape(-1)
    adv = torch.randn(n * k_ft, generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.AdamW(module.actor_ft.parameters(), lr=lr, weight_decay=0.0)
    rows = []
    for _ in range(args.steps):
        opt.zero_grad()
        ratio = (module.pair_logp(o, x_prev, x_next, k) - old).exp()
        (-(adv * ratio).mean()).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in module.actor_ft.parameters()]).norm()
        opt.step()
        with torch.no_grad():
            log_ratio = module.pair_logp(o, x_prev, x_next, k) - old
            r = log_ratio.exp()
        rows.append(
            {
                "approx_kl": float(((r - 1) - log_ratio).mean()),
                "ratio_mean": float(r.mean()),
                "outside_clip_fraction": float(((r - 1).abs() > args.clip).float().mean()),
                "actor_grad_norm": float(grad),
            }
        )
    return {
        "network": pol.network,
        "sampler": sampler,
        "k_ft": k_ft,
        "lr": lr,
        "parameters": sum(p.numel() for p in module.actor_ft.parameters()),
        "steps": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, help="DPPO .npz with a 'states' array")
    p.add_argument("--checkpoint", action="append", required=True, help="LABEL=DIR")
    p.add_argument("--lr", type=float, action="append", required=True)
    p.add_argument("--sampler", action="append", choices=["ddpm", "ddim"])
    p.add_argument("--ddim-steps", type=int, default=5)
    p.add_argument("--states", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--clip", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="dppo_update_size")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = np.load(args.dataset)["states"]
    states = data[np.random.default_rng(args.seed).choice(len(data), args.states)]
    runs = []
    for item in args.checkpoint:
        label, _, ckpt = item.partition("=")
        for sampler in args.sampler or ["ddpm"]:
            for lr in args.lr:
                run = {"label": label, **first_steps(ckpt, states, sampler, lr, args)}
                first = run["steps"][0]
                print(
                    f"{label:>6} {sampler} K'={run['k_ft']:>2} lr {lr:g}: first-step approx_kl "
                    f"{first['approx_kl']:.2e}  ratio {first['ratio_mean']:.5f}  outside clip "
                    f"{first['outside_clip_fraction']:.2f}  |g| {first['actor_grad_norm']:.3f}",
                    flush=True,
                )
                runs.append(run)
    figures = {
        f"{r['label']}_{r['sampler']}_lr{r['lr']:g}_first_step_approx_kl": r["steps"][0][
            "approx_kl"
        ]
        for r in runs
    }
    path = write_result(args.name, figures, {"runs": runs}, checkpoints=args.checkpoint)
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
