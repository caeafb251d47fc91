"""Benchmark: what RLlib's mode switches cost an inference-only module's forwards.

RLlib 2.60's ``TorchRLModule.forward_inference``/``forward_exploration`` run
``self.eval()`` before the forward and, for a module found in training mode,
``self.train()`` after it: each a recursive walk over every submodule. Modules built
``inference_only`` now start in eval mode (``EvalWhenInferenceOnly``), so only the
``eval()`` walk is left. This times, in one process with interleaved rounds (CPU time,
torch 1 thread), the same inference-only module

* ``training``: put in training mode first (as built before the change: two walks),
* ``eval``: in eval mode (as built now: one walk),
* ``no_walk``: its ``_forward_*`` called directly under ``no_grad`` (no walk: the floor),

for ``dql_action`` (the Diffusion-QL module of ``benchmarks/performance.py``'s row, one
state, 50 candidates, ``forward_inference``) and ``dppo_sample`` (the DPPO module of the
``dppo_sample`` row, batch 40, K=20, K'=10, ``forward_exploration``).

Example::

    OMP_NUM_THREADS=1 python benchmarks/module_mode.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, write_result  # noqa: E402

MODES = ("training", "eval", "no_walk")


def _dql_action():
    import torch
    from learner_speed import inference_only_dql

    module, states = inference_only_dql()
    batches = [{"obs": torch.from_numpy(s[None])} for s in states]
    return module, "inference", batches


def _dppo_sample():
    from sampling_speed import _build

    module, _, obs = _build("dppo_ddpm_explore", 40)
    return module, "exploration", [{"obs": obs}]


CASES = {"dql_action": _dql_action, "dppo_sample": _dppo_sample}


def time_mode(module, forward: str, batches: list, mode: str, calls: int) -> float:
    """CPU seconds per call of ``module``'s ``forward`` in ``mode``."""
    import torch

    module.train(mode == "training")
    fn = getattr(module, f"_forward_{forward}" if mode == "no_walk" else f"forward_{forward}")
    c0 = time.process_time()
    with torch.no_grad():
        for i in range(calls):
            out = fn(batches[i % len(batches)])
            out["actions"].numpy()
    module.eval()
    return (time.process_time() - c0) / calls


def time_walks(module, calls: int = 2000) -> dict:
    """CPU µs of RLlib's switches alone: one ``eval()`` walk (module in eval mode, as now)
    and ``train()`` + ``eval()`` (module found in training mode, as before)."""

    def both() -> None:
        module.train()
        module.eval()

    out = {}
    for name, fn in (("eval_walk", module.eval), ("eval_and_train_walks", both)):
        c0 = time.process_time()
        for _ in range(calls):
            fn()
        out[name] = 1e6 * (time.process_time() - c0) / calls
    return out


def measure(case: str, rounds: int, target_s: float) -> dict:
    module, forward, batches = CASES[case]()
    per_call = time_mode(module, forward, batches, "training", 5)
    calls = max(5, round(target_s / per_call))
    walks = sum(1 for _ in module.modules())
    times = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            times[mode].append(time_mode(module, forward, batches, mode, calls))
    med = {m: statistics.median(v) for m, v in times.items()}
    walks_us = [time_walks(module) for _ in range(3)]
    return {
        "walk_us": {k: statistics.median(w[k] for w in walks_us) for k in walks_us[0]},
        "submodules": walks,
        "calls_per_timing": calls,
        "ms_per_call": {m: 1e3 * v for m, v in med.items()},
        "speedup_eval_vs_training": med["training"] / med["eval"],
        "speedup_no_walk_vs_training": med["training"] / med["no_walk"],
        "walk_share_training": 1 - med["no_walk"] / med["training"],
        "walk_share_eval": 1 - med["no_walk"] / med["eval"],
        "cpu_seconds_per_call": times,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--target-seconds", type=float, default=1.0, help="CPU-s per timing")
    p.add_argument("--name", default="module_mode")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    load_start = load_average()
    figures: dict = {"load_average_start": load_start}
    for case in args.case or list(CASES):
        figures[case] = measure(case, args.rounds, args.target_seconds)
        f = figures[case]
        print(f"{case}: ms/call {({k: round(v, 3) for k, v in f['ms_per_call'].items()})}, "
              f"eval vs training {f['speedup_eval_vs_training']:.3f}x, walks "
              f"{100 * f['walk_share_training']:.1f}% -> {100 * f['walk_share_eval']:.1f}%; "
              f"walks alone (us): {({k: round(v) for k, v in f['walk_us'].items()})}",
              flush=True)  # fmt: skip
    figures["load_average_end"] = load_average()
    print(f"wrote {write_result(args.name, figures)}")


if __name__ == "__main__":
    main()
