"""A damaged checkpoint is one CheckpointError naming the file, not an unpickling traceback.

Uses a copy of a small pre-redesign DiffusionBC checkpoint (``tests/fixtures/legacy_v0``);
no Ray instance is started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rllib_diffusion.checkpoints import (
    META_FILE,
    MODULE_SUBDIR,
    CheckpointError,
    load_policy_module,
    read_checkpoint_meta,
)
from rllib_diffusion.cli import main

LEGACY_BC = Path(__file__).parent / "fixtures" / "legacy_v0" / "bc"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoint"
    shutil.copytree(LEGACY_BC, path)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["module_state.pkl", "class_and_ctor_args.pkl"])
def test_truncated_module_pickle_names_the_file(checkpoint: Path, name: str) -> None:
    damaged = checkpoint / MODULE_SUBDIR / name
    _truncate(damaged)
    with pytest.raises(CheckpointError) as err:
        load_policy_module(checkpoint)
    msg = str(err.value)
    assert f"'{damaged}'" in msg and "damaged" in msg and "earlier checkpoint" in msg


def test_empty_module_state_names_the_file(checkpoint: Path) -> None:
    state = checkpoint / MODULE_SUBDIR / "module_state.pkl"
    state.write_bytes(b"")
    with pytest.raises(CheckpointError, match="module_state.pkl' cannot be read"):
        load_policy_module(checkpoint)


@pytest.mark.parametrize(
    "content",
    [b'{"algorithm": "DiffusionBC", "env_', b"\xff\xfe\x00\x01garbage", b"[1, 2]"],
    ids=["truncated", "binary", "not-an-object"],
)
def test_damaged_meta_file_names_it(checkpoint: Path, content: bytes) -> None:
    (checkpoint / META_FILE).write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint_meta(checkpoint)
    msg = str(err.value)
    assert f"'{checkpoint / META_FILE}'" in msg and "damaged" in msg and "re-run" in msg


def test_evaluate_prints_one_line_for_a_damaged_checkpoint(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    _truncate(checkpoint / MODULE_SUBDIR / "module_state.pkl")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "module_state.pkl" in err
    assert "\n" not in err


def test_a_resume_with_other_settings_names_every_differing_field():
    """Nested fields are named ``a.b``; a field one side lacks counts as None; tuples and
    lists are equal (as JSON reads them back); equal settings pass."""
    from rllib_diffusion.checkpoints import check_resume_settings, field_diffs

    theirs = {"lr": 1e-4, "model": {"hidden": [64, 64], "clip": 1.0}, "seed": 0}
    ours = {"lr": 1e-3, "model": {"hidden": (64, 64), "residual": False}, "seed": 0}
    assert field_diffs(theirs, ours) == [
        "lr: checkpoint 0.0001 vs now 0.001",
        "model.clip: checkpoint 1.0 vs now None",
        "model.residual: checkpoint None vs now False",
    ]
    with pytest.raises(CheckpointError, match=r"Cannot resume 'ck' with other settings: lr: "):
        check_resume_settings(theirs, ours, "ck")
    check_resume_settings(theirs, {**theirs, "model": {"hidden": (64, 64), "clip": 1.0}}, "ck")
