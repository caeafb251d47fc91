"""A/B of writing N single-step synthetic transitions as a Minari dataset, in one process:
``minari`` = Minari's own ``ArrowStorage.update_episodes``; ``bulk`` = the bulk arrow writer
(``rllib_diffusion.data.minari_arrow``), which ``write_minari`` uses by default. The
``minari`` arm is ``write_minari`` as it was before the bulk writer (dataset metadata
written once, every episode through Minari).

With ``--read``, each arm's dataset is loaded back with ``load_minari`` twice in the same
process: through Minari's own reader (one ``pyarrow.dataset`` per episode) and through the
bulk arrow reader (``minari_arrow.read_arrow_episodes``, which ``load_minari`` uses by
default); the two results are checked to be identical.

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
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from common import write_result

from rllib_diffusion import columns as C
from rllib_diffusion.data import load_minari, minari_io
from rllib_diffusion.data.transitions import transition_episodes

ARMS = ("bulk", "minari")
_EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


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


def _timed(label: str, n: int, fn: Callable[[], Any], figures: dict) -> Any:
    """Run ``fn``, print and record its seconds (and the load average before it); returns
    what ``fn`` returns."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out = fn()
    took = time.perf_counter() - start
    print(f"{label}: {n} in {took:.1f} s ({1000 * took / n:.2f} ms each; load {load:.1f})")
    figures[label] = {"transitions": n, "seconds": round(took, 3), "load_average": load}
    return out


def _read_both(dataset_id: str, arm: str, n: int, figures: dict) -> None:
    """Time ``load_minari(dataset_id)`` with Minari's reader, then with the bulk reader,
    and check that both give the same arrays."""
    bulk = minari_io.can_read_in_bulk
    loaded = []
    try:
        for reader, can_read in (("minari reader", lambda _: False), ("bulk reader", bulk)):
            minari_io.can_read_in_bulk = can_read
            label = f"read {arm} ({reader})"
            loaded.append(_timed(label, n, partial(load_minari, dataset_id), figures))
    finally:
        minari_io.can_read_in_bulk = bulk
    slow, fast = loaded
    for a, b in zip(slow.episodes, fast.episodes, strict=True):
        for field in _EPISODE_FIELDS:
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and np.array_equal(x, y), field
    ratio = figures[f"read {arm} (minari reader)"]["seconds"] / figures[label]["seconds"]
    figures[f"read {arm} speed-up"] = {"minari_over_bulk": round(ratio, 1)}
    print(f"read {arm}: identical episodes; bulk reader {ratio:.1f}x faster")


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
                _read_both(dataset_id, arm, n, figures)
    finally:
        minari_io.can_write_in_bulk = bulk
        shutil.rmtree(root, ignore_errors=True)
    print(write_result("minari_write", figures))


if __name__ == "__main__":
    main(sys.argv[1:])
