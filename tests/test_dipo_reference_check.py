"""``benchmarks/dipo_reference_check.py`` at small sizes: our DIPO pieces and one whole
gradient step equal the DPPO reference's (where its mirror is present)."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def check():
    module = load_benchmark("dipo_reference_check")
    if not (module.MIRROR / "repo").is_dir():
        pytest.skip(f"no DPPO reference mirror at {module.MIRROR}")
    return module


@pytest.mark.slow
def test_dipo_pieces_and_one_step_equal_the_reference(check):
    figures = check.check(32, 0, (64, 64), check.MIRROR)["figures"]
    named = {"critic_loss_value", "action_shift_mean", "action_step_bound"}
    order = {k for k in figures if k.startswith("order_effect")}
    for key, value in figures.items():
        if key not in named | order:
            assert value < 1e-4, key
    # Adam's sign-like steps: each improvement moves an action by about lr × steps.
    assert 0.5e-3 < figures["action_shift_mean"] <= figures["action_step_bound"] + 1e-6
