"""A/B of writing N single-step synthetic transitions as a Minari dataset, in one process:
``minari`` = Minari's own ``ArrowStorage.update_episodes``; ``bulk`` = the bulk arrow writer
(``rllib_diffusion.data.minari_arrow``), which ``write_minari`` uses by default. The
``minari`` arm is ``write_minari`` as it was before the bulk writer (dataset metadata
written once, every episode through Minari).

Usage: ``python benchmarks/minari_write.py 20000 bulk minari [--read]`` (the datasets go
to a scratch Minari root, deleted at the end; the load average is printed with each time
and stored in ``benchmarks/results/minari_write.json``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from functools import partial

import numpy as np
from common import write_result

from rllib_diffusion import columns as C
from rllib_diffusion.data import load_minari, minari_io
from rllib_diffusion.data.transitions import transition_episodes

ARMS = ("bulk", "minari")


def _columns(n: int) -> dict[str, np.ndarray]:
    """``n`` random transitions of Hopper's dims, one in ten terminal."""
    rng = np.random.default_rng(0)
    return {
        C.OBS: rng.standard_normal((n, 11)).astype(np.float32),
        C.ACTIONS: rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        C.REWARDS: rng.standard_normal(n).astype(np.float32),
        C.NEXT_OBS: rng.standard_normal((n, 11)).astype(np.float32),
        C.TERMINATEDS: (rng.random(n) < 0.1).astype(np.float32),
    }


def _timed(label: str, n: int, fn, figures: dict) -> None:
    """Run ``fn``, print and record its seconds (and the load average before it)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    print(f"{label}: {n} in {took:.1f} s ({1000 * took / n:.2f} ms each; load {load:.1f})")
    figures[label] = {"transitions": n, "seconds": round(took, 2), "load_average": load}


def main(argv: list[str]) -> None:
    """Write (and with --read, load back) one dataset per arm named in ``argv``."""
    n, arms = int(argv[0]), [a for a in argv[1:] if a in ARMS]
    root = tempfile.mkdtemp(prefix="bench-minari-")
    os.environ["MINARI_DATASETS_PATH"] = root
    episodes = transition_episodes(_columns(n))
    bulk = minari_io.can_write_in_bulk
    figures: dict = {}
    try:
        for i, arm in enumerate(arms):
            minari_io.can_write_in_bulk = bulk if arm == "bulk" else (lambda *_: False)
            dataset_id = f"bench/{arm}{i}-v0"
            write = partial(minari_io.write_minari, episodes, dataset_id)
            _timed(f"write {arm}", n, write, figures)
            if "--read" in argv:
                _timed(f"read {arm} (load_minari)", n, partial(load_minari, dataset_id), figures)
    finally:
        minari_io.can_write_in_bulk = bulk
        shutil.rmtree(root, ignore_errors=True)
    print(write_result("minari_write", figures))


if __name__ == "__main__":
    main(sys.argv[1:])
