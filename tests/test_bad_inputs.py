"""Every case of the bad-input battery (``tests/bad_inputs.py``) fails cleanly: non-zero
exit, one ``error:`` line naming the flag or file, no traceback, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rllib_diffusion.cli import main
from tests.bad_inputs import CASES, fill, listing, make_inputs, snapshot

#: Log lines of Ray/RLlib (timestamped) are not our output.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s|\(pid=|\[\d{4}-\d\d-\d\d )")


@pytest.fixture(scope="module")
def inputs(pretrained, tmp_path_factory):
    out, _ = pretrained
    return make_inputs(tmp_path_factory.mktemp("battery"), out / "checkpoint", out)


def test_the_battery_covers_every_sub_command_with_at_least_40_cases():
    from rllib_diffusion.cli import COMMANDS

    assert len(CASES) >= 40
    assert {argv[0] for _, argv, _ in CASES} == set(COMMANDS)
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "argv", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line(case_id, argv, names, inputs, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    values = {**inputs, "out": str(out)}
    before = snapshot(values)
    rc = main(fill(argv, values))
    captured = capfd.readouterr()
    ours = [x for x in captured.err.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert rc != 0, captured
    assert "Traceback" not in captured.err + captured.out
    assert len(ours) == 1 and ours[0].startswith("error:"), ours
    assert names.lower() in ours[0].lower(), ours[0]
    assert listing(out) == [], "a failed run left files behind"
    assert snapshot(values) == before, "a failed run changed an existing run or file"
    assert not (Path(tmp_path) / "runs").exists()
