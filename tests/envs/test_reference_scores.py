"""One source of normalised-score references for every command."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_diffusion.envs.tasks import normalized, reference_scores, task_info


def test_the_dataset_s_own_references_win_over_the_task_table():
    data = {"name": "mine", "ref_min_score": -10.0, "ref_max_score": 90.0}
    refs = reference_scores("Hopper-v5", data)
    assert refs == {"min": -10.0, "max": 90.0, "source": "dataset mine"}
    assert normalized(np.array([40.0]), refs)[0] == pytest.approx(50.0)


def test_the_task_table_fills_in_where_the_dataset_has_none():
    table = task_info("Hopper-v5")
    for data in (None, {}, {"ref_min_score": 1.0}, {"ref_min_score": None, "ref_max_score": 5}):
        refs = reference_scores("Hopper-v5", data)
        assert (refs["min"], refs["max"]) == (table.ref_min_score, table.ref_max_score)
    assert reference_scores("Pendulum-v1") is None


def test_evaluate_module_normalises_with_the_dataset_s_references(monkeypatch):
    from rllib_diffusion import evaluation

    def fake(module, env_config, **kwargs):
        return {"episode_returns": [40.0, 60.0]}

    monkeypatch.setattr(evaluation, "_evaluate", fake)
    data = {"name": "mine", "ref_min_score": 0.0, "ref_max_score": 100.0}
    got = evaluation.evaluate_module(None, {"env_id": "Hopper-v5"}, dataset=data)
    assert got["normalized_score"] == pytest.approx(50.0)
    assert got["normalized_score_refs"]["source"] == "dataset mine"
    table = evaluation.evaluate_module(None, {"env_id": "Hopper-v5"})
    assert table["normalized_score_refs"]["min"] == task_info("Hopper-v5").ref_min_score
