"""Online SynthER in the offline Q-learners' online phase (``rllib-diffusion online
--synther-real-ratio R``): the knobs from the CLI to the algorithm (declared once, by
``SynthEROnlineConfigMixin``), refusals, a run whose retrains follow the cadence (the
last iteration's skipped) and whose learner minibatches hold exactly the real share,
the generator and pool through ``--resume``, and SynthER off leaving the run as it was.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD
from rllib_diffusion.algorithms.synthetic_replay import DEFAULTS
from rllib_diffusion.modules.model_config import ConfigError

from .test_online import _fake_online_run, _online, _tiny_offline_run

#: A tiny generator retrained every 30 env steps (one iteration), half of each batch real.
TINY = {
    "synther_real_ratio": 0.5,
    "synther_retrain_every": 30,
    "synther_pool_size": 200,
    "synther_gradient_steps": 20,
    "synther_batch_size": 32,
    "synther_width": 16,
    "synther_depth": 1,
    "synther_denoising_steps": 3,
}
#: The offline run's minibatch (``_tiny_offline_run``'s batch size).
BATCH = 32


def _flags(knobs: dict) -> list[str]:
    return [x for k, v in knobs.items() for x in ("--" + k.replace("_", "-"), str(v))]


# ----------------------------------------------------------------------- knobs
def test_online_help_lists_the_knobs_with_their_defaults(capsys):
    from rllib_diffusion.cli import main

    assert main(["online", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    group = out[out.index("online SynthER knobs") :]
    for name, default in DEFAULTS.items():
        metavar = name.upper()
        entry = group[group.index(metavar) :].split(" --")[0]
        assert f"(default: {default})" in entry, entry


def test_flags_become_settings_knobs_and_the_configs_online_phase(tmp_path):
    from rllib_diffusion.algorithms.fql.fql import FQLConfig
    from rllib_diffusion.cli import build_parser, online_settings_from_args

    args = build_parser().parse_args(["online", "--checkpoint", "c", *_flags(TINY)])
    s = online_settings_from_args(args)
    assert s.knobs == TINY and s.checkpoint == "c"
    plain = online_settings_from_args(build_parser().parse_args(["online", "--checkpoint", "c"]))
    assert plain.knobs == {}
    config = FQLConfig().online_phase(enabled=True, synther=s.knobs)
    assert config.online_synther == TINY
    assert FQLConfig().online_phase(enabled=True).online_synther == {}


@pytest.mark.parametrize(
    "knobs, match",
    [
        ({"synther_pool_size": 10}, "--synther-pool-size is set but online SynthER is off"),
        ({"synther_real_ratio": 1.5}, r"must be in \[0, 1\]"),
        ({"synther_typo": 1}, "--synther-typo is not a knob of rllib-diffusion online"),
    ],
)
def test_bad_knobs_are_refused_in_one_line(knobs, match):
    from rllib_diffusion.algorithms.online_run import OnlineSettings

    with pytest.raises(ConfigError, match=match):
        OnlineSettings(checkpoint="c", knobs=knobs)


def test_a_real_share_that_is_not_whole_is_refused_by_the_config():
    from rllib_diffusion.algorithms.fql.fql import FQLConfig

    config = FQLConfig().training(train_batch_size_per_learner=BATCH)
    config.online_phase(enabled=True, synther={"synther_real_ratio": 0.3})
    with pytest.raises(ValueError, match="--synther-real-ratio"):
        config.validate()


def test_resume_with_other_synther_knobs_is_refused(tmp_path, capsys):
    from rllib_diffusion.cli import main

    offline, out = _fake_online_run(tmp_path, knobs={"synther_real_ratio": 0.5})
    argv = ["online", "--checkpoint", str(offline), "--out", str(out), "--resume"]
    assert main([*argv, "--synther-real-ratio", "0.25"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "knobs.synther_real_ratio: checkpoint 0.5 vs now 0.25" in err[0]


def test_resume_of_a_run_saved_before_the_knobs_passes_with_synther_off(tmp_path, monkeypatch):
    """A checkpoint whose settings have no ``knobs`` (saved before them) was SynthER-off:
    it resumes without SynthER flags, and is refused with them."""
    from rllib_diffusion.algorithms import online_run
    from rllib_diffusion.algorithms.online_run import OnlineSettings, finetune_online
    from rllib_diffusion.checkpoints import META_FILE, CheckpointError

    class Built(Exception):
        pass

    monkeypatch.setattr(
        online_run.OnlineFamily, "build", lambda self: (_ for _ in ()).throw(Built())
    )
    offline, out = _fake_online_run(tmp_path)
    meta = json.loads((out / "checkpoint" / META_FILE).read_text())
    del meta["settings"]["online"]["knobs"]
    (out / "checkpoint" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(Built):
        finetune_online(OnlineSettings(checkpoint=str(offline), out_dir=str(out), resume=True))
    with pytest.raises(CheckpointError, match="knobs.synther_real_ratio: checkpoint 1.0"):
        finetune_online(
            OnlineSettings(checkpoint=str(offline), out_dir=str(out), resume=True, knobs=TINY)
        )


# ------------------------------------------------------------------------ runs
class _Spy:
    """Records every ``OnlineSynthER.minibatches`` call (the replay's held observations,
    the batch size, the rows returned) and every learner update's batch and minibatch
    size."""

    def __init__(self, monkeypatch) -> None:
        from ray.rllib.core.learner.learner_group import LearnerGroup

        from rllib_diffusion.algorithms.synther.online import OnlineSynthER

        self.mixed, self.updates = [], []
        mix, update = OnlineSynthER.minibatches, LearnerGroup.update

        def minibatches(synther, replay, batch_size, count):
            rows = mix(synther, replay, batch_size, count)
            held = replay.data[Columns.OBS][: len(replay)]
            self.mixed.append((synther.pool is not None, held.copy(), batch_size, rows))
            return rows

        def learner_update(group, *args, **kwargs):
            batch = kwargs["batch"].policy_batches[DEFAULT_MODULE_ID]
            self.updates.append((np.array(batch[Columns.OBS]), kwargs.get("minibatch_size")))
            return update(group, *args, **kwargs)

        monkeypatch.setattr(OnlineSynthER, "minibatches", minibatches)
        monkeypatch.setattr(LearnerGroup, "update", learner_update)


def test_a_run_retrains_at_its_cadence_and_mixes_exactly(ray_session, tmp_path, monkeypatch):
    """Three iterations of 30 env steps, a retrain every 30: retrains 1 and 2 in the
    first two iterations, the last one's skipped; once a pool exists every learner
    minibatch holds exactly ratio × B replay rows, the rest synthetic."""
    _, offline = _tiny_offline_run(tmp_path, "fql", 10, gradient_steps=20, eval_episodes=1)
    spy = _Spy(monkeypatch)
    run = _online(offline["checkpoint"], tmp_path / "online", 90, knobs=TINY)
    lines = [json.loads(x) for x in (tmp_path / "online" / "progress.jsonl").open()]
    assert [p["iteration"] for p in lines] == [1, 2, 3]
    steps = [p["env_steps"] for p in lines]
    assert [p[M.SYNTHER_RETRAIN_STEP] for p in lines[:2]] == steps[:2]
    assert lines[2][M.SYNTHER_RETRAIN_STEP] == steps[1]  # the last iteration's: skipped
    assert lines[2][M.SYNTHER_SKIPPED_STEP] == steps[2]
    assert all(p[M.SYNTHER_POOL_ROWS] == TINY["synther_pool_size"] for p in lines)
    assert len(spy.mixed) == len(spy.updates) == 3 and all(on for on, *_ in spy.mixed)
    for (_, held, b, rows), (learned, minibatch) in zip(spy.mixed, spy.updates):
        assert b == minibatch == BATCH and len(learned) % BATCH == 0
        np.testing.assert_array_equal(learned, rows[Columns.OBS])
        real = {tuple(r) for r in held}
        for start in range(0, len(learned), BATCH):
            n_real = sum(tuple(r) in real for r in learned[start : start + BATCH])
            assert n_real == BATCH // 2
    assert run["env_steps"] == steps[2]


@pytest.mark.slow
def test_resume_restores_the_generator_and_pool(ray_session, tmp_path, capsys):
    """Two iterations (retrain 1 in the first, the last's skipped), then ``--resume``
    with a larger budget: the checkpoint's pool of retrain 1 is restored and serves
    the third iteration (its retrain skipped again: the last)."""
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    _, offline = _tiny_offline_run(tmp_path, "fql", 10, gradient_steps=20, eval_episodes=1)
    out = tmp_path / "online"
    first = _online(offline["checkpoint"], out, 60, knobs=TINY)
    record = read_checkpoint_meta(first["checkpoint"]).synthetic_pool
    progress = first["progress"]
    assert record["regeneration"] == 1 and record["at_step"] == progress[0]["env_steps"]
    capsys.readouterr()
    resumed = _online(offline["checkpoint"], out, 90, knobs=TINY, resume=True)
    assert "[synther] restored the generator and pool of retrain 1" in capsys.readouterr().out
    assert resumed["resumed"][POOL_FIELD] == {
        "regeneration": 1,
        "at_step": progress[0]["env_steps"],
        "rows": TINY["synther_pool_size"],
    }
    last = [json.loads(x) for x in (out / "progress.jsonl").open()][-1]
    assert last["iteration"] == 3 and last[M.SYNTHER_RETRAIN_STEP] == progress[0]["env_steps"]
    assert read_checkpoint_meta(resumed["checkpoint"]).synthetic_pool["served"] > record["served"]


def test_synther_off_leaves_the_run_unchanged(ray_session, tmp_path, monkeypatch):
    """Ratio 1 (the default, or given): no generator, no SynthER values, the learner's
    batch is one uniform replay sample, as before online SynthER existed."""
    from rllib_diffusion.algorithms.replay import TransitionReplay

    _, offline = _tiny_offline_run(tmp_path, "fql", 10, gradient_steps=20, eval_episodes=1)
    spy = _Spy(monkeypatch)
    drawn = []
    sample = TransitionReplay.sample

    def recorded(replay, batch_size):
        drawn.append(batch_size)
        return sample(replay, batch_size)

    monkeypatch.setattr(TransitionReplay, "sample", recorded)
    knobs = {"synther_real_ratio": 1.0}
    _online(offline["checkpoint"], tmp_path / "online", 30, knobs=knobs)
    line = json.loads((tmp_path / "online" / "progress.jsonl").read_text().splitlines()[-1])
    assert not [k for k in line if k.startswith("synther")]
    assert spy.mixed == [] and len(spy.updates) == 1
    assert drawn == [len(spy.updates[0][0])]
