"""``benchmarks/dql_reference_check.py`` at small sizes: our DQL actor loss and one whole
gradient step equal the DPPO reference's (where its mirror is present); the one-forward
order (``actor_after_critic_step=False``) does not."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def check():
    module = load_benchmark("dql_reference_check")
    if not (module.MIRROR / "repo").is_dir():
        pytest.skip(f"no DPPO reference mirror at {module.MIRROR}")
    return module


@pytest.mark.slow
def test_dql_actor_loss_and_one_step_equal_the_reference(check):
    figures = check.check(32, 0, (64, 64), check.MIRROR)["figures"]
    for key, value in figures.items():
        if not key.endswith("_value") and not key.startswith("step_one_forward"):
            assert value < 1e-4, key
    # The critic before its step picks other Adam directions for the actor (±lr each).
    assert figures["step_one_forward_actor"] > 1e-5
