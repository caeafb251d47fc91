"""``benchmarks/performance.py`` end to end at smoke sizes: its cheapest rows write ours,
the peer and their ratio, and a missing reference is named and leaves ours measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark

FAST = ["--smoke", "--rounds", "1", "--target-seconds", "0.01", "--in-process"]


@pytest.fixture(scope="module")
def perf():
    return load_benchmark("performance")


def test_bc_row_has_ours_peer_and_ratio(perf, tmp_path: Path) -> None:
    path = perf.main(["--rows", "bc", *FAST, "--results-dir", str(tmp_path)])
    result = json.loads(path.read_text())
    row = result["figures"]["rows"]["bc"]
    assert row["ours_per_cpu_s"] > 0 and row["peer_per_cpu_s"] > 0
    assert row["ratio"] == pytest.approx(row["ours_per_cpu_s"] / row["peer_per_cpu_s"])
    assert row["target"] == 1.0 and isinstance(row["target_met"], bool)
    assert set(result["series"]["bc"]["config"]) == {"ours", "peer"}
    assert result["smoke"] and result["figures"]["load_average_start"]
    assert "| `bc` | gradient steps |" in perf.markdown(path)


def test_missing_reference_is_said_and_ours_still_measured(perf, tmp_path, capsys) -> None:
    nowhere = tmp_path / "no_dppo_here"
    argv = [
        "--rows",
        "dppo_sample",
        *FAST,
        "--results-dir",
        str(tmp_path),
        "--dppo-ref",
        str(nowhere),
    ]
    path = perf.main(argv)
    assert "reference dppo missing" in capsys.readouterr().out
    result = json.loads(path.read_text())
    row = result["figures"]["rows"]["dppo_sample"]
    assert row["ours_per_cpu_s"] > 0 and "ratio" not in row
    assert row["peer"].startswith("reference missing")
    assert result["references"]["dppo"]["source"] == str(nowhere)


def test_unknown_row_is_one_line(perf, capsys) -> None:
    with pytest.raises(SystemExit):
        perf.main(["--rows", "bc,nope"])
    assert "unknown row(s) nope" in capsys.readouterr().err
