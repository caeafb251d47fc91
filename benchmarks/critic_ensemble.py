"""Benchmark: does evaluating a Q ensemble's heads in one batched forward pay on CPU?

``QEnsemble`` runs its H heads in a Python loop. The alternative measured here stacks each
layer's weights into ``(H, d_in, d_out)`` and runs ``baddbmm`` per layer (what a grouped
linear layer or ``torch.func.stack_module_state`` + ``vmap`` lowers to), in two forms:
``stacked`` keeps the per-head parameters and stacks them on every forward (the
checkpoint layout unchanged), ``prestacked`` holds the stacked tensors as its parameters
(a new layout; the lower bound of the batched cost). Timed: forward + backward of
``sum(Q)`` on a batch, CPU seconds on one torch thread, interleaved rounds, medians.
Sizes: Diffusion-QL (2 × 3×256 Mish), DAC (10 × 3×256 Mish), FQL (2 × 4×512 GELU with
LayerNorm).

Example::

    OMP_NUM_THREADS=1 python benchmarks/critic_ensemble.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from rllib_diffusion.modules.critics import QEnsemble  # noqa: E402

OBS_DIM, ACTION_DIM = 11, 3
#: case -> (heads, hidden dims, activation, LayerNorm, batch)
CASES = {
    "dql_2x3x256_b256": (2, (256, 256, 256), "mish", False, 256),
    "dac_10x3x256_b256": (10, (256, 256, 256), "mish", False, 256),
    "fql_2x4x512_ln_b256": (2, (512,) * 4, "gelu", True, 256),
}


def _layers(q: QEnsemble) -> list[list[tuple]]:
    """Per layer, per head: ``(Linear, LayerNorm | Identity | None, activation | None)``."""
    n = len(q.heads[0].hidden)
    hidden = [[tuple(h.hidden[i].body[:3]) for h in q.heads] for i in range(n)]
    return [*hidden, [(h.out, None, None) for h in q.heads]]


def batched_forward(q: QEnsemble, prestacked: dict | None = None):
    """``f(obs, actions) -> (H, B)`` with one ``baddbmm`` per layer over all heads."""
    layers = _layers(q)
    last = len(layers) - 1

    def stack(i):
        if prestacked is not None:
            return prestacked[i]
        w = torch.stack([lin.weight for lin, *_ in layers[i]]).transpose(1, 2)
        return w, torch.stack([lin.bias for lin, *_ in layers[i]]).unsqueeze(1)

    def f(obs, actions):
        x = torch.cat([obs, actions], dim=-1).expand(len(q.heads), *obs.shape[:1], -1)
        for i, heads in enumerate(layers):
            w, b = stack(i)
            x = torch.baddbmm(b, x, w)
            if i < last:
                _, norm, act = heads[0]
                if isinstance(norm, torch.nn.LayerNorm):
                    ws = torch.stack([h[1].weight for h in heads]).unsqueeze(1)
                    bs = torch.stack([h[1].bias for h in heads]).unsqueeze(1)
                    x = torch.nn.functional.layer_norm(x, x.shape[-1:]) * ws + bs
                x = act(x)  # stateless, the same for every head
        return x.squeeze(-1)

    return f


def build(case: str):
    heads, hidden, activation, ln, batch = CASES[case]
    torch.manual_seed(0)
    q = QEnsemble(OBS_DIM, ACTION_DIM, num_heads=heads, hidden_dims=hidden,
                  activation=activation, layer_norm=ln)  # fmt: skip
    pre = {}
    for i, layer in enumerate(_layers(q)):
        w = torch.stack([lin.weight for lin, *_ in layer]).transpose(1, 2).contiguous()
        b = torch.stack([lin.bias for lin, *_ in layer]).unsqueeze(1)
        pre[i] = (w.detach().requires_grad_(), b.detach().requires_grad_())
    obs, act = torch.randn(batch, OBS_DIM), torch.rand(batch, ACTION_DIM) * 2 - 1
    fns = {"loop": q, "stacked": batched_forward(q), "prestacked": batched_forward(q, pre)}
    return fns, obs, act


def time_fn(fn, obs, act, calls: int) -> float:
    c0 = time.process_time()
    for _ in range(calls):
        fn(obs, act).sum().backward()
    return (time.process_time() - c0) / calls


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    figures, series = {}, {}
    for case in CASES:
        fns, obs, act = build(case)
        ref = fns["loop"](obs, act)
        for name, fn in fns.items():
            figures[f"{case}_{name}_max_abs_diff"] = float(
                (fn(obs, act) - ref).detach().abs().max()
            )
            time_fn(fn, obs, act, 3)  # warm-up
        times = {name: [] for name in fns}
        for r in range(args.rounds):
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for name in order:
                times[name].append(time_fn(fns[name], obs, act, args.calls))
        series[case] = times
        loop = statistics.median(times["loop"])
        for name in fns:
            figures[f"{case}_{name}_ms"] = 1e3 * statistics.median(times[name])
            figures[f"{case}_{name}_speedup"] = loop / statistics.median(times[name])
        print(case, {k: round(v, 3) for k, v in figures.items() if k.startswith(case)})
    figures["load_average_start"] = load_start
    figures["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {load_start} -> {figures['load_average_end']}")
    print(f"wrote {write_result('critic_ensemble', figures, series)}")


if __name__ == "__main__":
    main()
