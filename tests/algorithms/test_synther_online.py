"""Online SynthER in the replay fine-tuning loop (``finetune --algo dql|idql|qsm
--synther-real-ratio R``, ``algorithms/synther/online.py``): the knobs (off by default,
refused where ignored), the cadence, a retrain fitted on the replay's current rows, the
exact real/synthetic split of every minibatch, the pool and generator through a
checkpoint, and a run whose learner batches, env steps and progress lines are checked
(plus a slow smoke run with ``--resume``).
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from ray.rllib.core.columns import Columns

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.replay import TransitionReplay
from rllib_diffusion.algorithms.synther.online import DEFAULTS, GENERATOR_FILE, OnlineSynthER
from rllib_diffusion.checkpoints import CheckpointError
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import cli_finetune_config

#: A tiny generator (fast on one core).
TINY = {
    "synther_real_ratio": 0.5,
    "synther_retrain_every": 100,
    "synther_pool_size": 300,
    "synther_gradient_steps": 60,
    "synther_batch_size": 64,
    "synther_width": 32,
    "synther_depth": 1,
    "synther_denoising_steps": 5,
}


def _synther(**knobs) -> OnlineSynthER:
    return OnlineSynthER(types.SimpleNamespace(**(DEFAULTS | TINY | knobs), seed=0))


def _columns(n: int, obs_mean: float, seed: int) -> dict[str, np.ndarray]:
    """``n`` replay rows, Do = 3, Da = 2, observations around ``obs_mean``."""
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        Columns.OBS: rng.normal(obs_mean, 1.0, (n, 3)).astype(f),
        Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(f),
        Columns.REWARDS: rng.normal(1.0, 0.5, n).astype(f),
        Columns.NEXT_OBS: rng.normal(obs_mean, 1.0, (n, 3)).astype(f),
        Columns.TERMINATEDS: rng.random(n) < 0.1,
    }


def _held(replay: TransitionReplay) -> dict[str, np.ndarray]:
    return {k: v[: len(replay)] for k, v in replay.data.items()}


@pytest.fixture(scope="module")
def trained():
    """A replay of 500 rows and an OnlineSynthER retrained on it at env step 120."""
    replay = TransitionReplay(10_000, seed=0)
    replay.add_columns(_columns(500, 0.0, seed=0))
    synther = _synther()
    synther.maybe_retrain(_held(replay), 120)
    return replay, synther


# ----------------------------------------------------------------------- knobs
def test_off_by_default_and_on_with_the_cli_flag(fake_bc_checkpoint):
    config = cli_finetune_config("dql", fake_bc_checkpoint)
    assert {k: getattr(config, k) for k in DEFAULTS} == DEFAULTS and not config.synther_enabled
    config = cli_finetune_config(
        "qsm", fake_bc_checkpoint, "--synther-real-ratio", "0.5", "--synther-pool-size", "1000"
    )
    assert config.synther_enabled and config.synther_pool_size == 1000


@pytest.mark.parametrize(
    "algo, flags, match",
    [
        ("dql", ["--synther-pool-size", "100"], "--synther-pool-size is set but online SynthER"),
        ("dql", ["--synther-real-ratio", "0.3333"], "--synther-real-ratio 0.3333 × batch 1000"),
        ("dql", ["--synther-real-ratio", "0.5", "--synther-lr", "0"], "synther.lr must be > 0"),
        ("dipo", ["--synther-real-ratio", "0.5"], "DIPO's actor trains on replay rows"),
    ],
)
def test_refused_in_one_line(algo, flags, match, fake_bc_checkpoint):
    with pytest.raises((ConfigError, ValueError), match=match):
        cli_finetune_config(algo, fake_bc_checkpoint, *flags)


# --------------------------------------------------------------------- cadence
def test_retrain_k_runs_at_the_first_iteration_reaching_k_times_n():
    s = _synther(synther_retrain_every=100)
    assert [s.due(t) for t in (0, 99, 100, 250)] == [False, False, True, True]
    s.index = 2  # retrain 2 ran (at env step 250, say)
    assert [s.due(t) for t in (250, 299, 300)] == [False, False, True]


def test_a_retrain_makes_a_pool_of_replay_rows(trained):
    replay, s = trained
    assert (s.index, s.at_env_step, s.pool.num_rows) == (1, 120, 300)
    for name, column in _held(replay).items():
        assert s.pool.columns[name].dtype == column.dtype
        assert s.pool.columns[name].shape[1:] == column.shape[1:]
    values = s.values()
    assert values[M.SYNTHER_POOL_ROWS] == 300 and values[M.SYNTHER_RETRAIN_STEP] == 120
    assert np.isfinite(values[M.SYNTHER_GENERATOR_LOSS])


def test_the_next_retrain_fits_the_rows_added_since_the_previous_one():
    """Rows added after retrain 1 (observations around 10, the first ones around 0) move
    the fitted statistics to the whole current replay's and the new pool towards them."""
    replay = TransitionReplay(10_000, seed=0)
    replay.add_columns(_columns(500, 0.0, seed=0))
    s = _synther()
    s.maybe_retrain(_held(replay), 100)
    first = float(s.pool.columns[Columns.OBS].mean())
    replay.add_columns(_columns(500, 10.0, seed=1))
    s.maybe_retrain(_held(replay), 200)
    assert s.index == 2 and s.at_env_step == 200
    held = _held(replay)
    fitted = np.asarray(s.module.normalizer.mean)[:3]  # the obs dims
    np.testing.assert_allclose(fitted, held[Columns.OBS].mean(axis=0), atol=1e-4)
    assert abs(first) < 1.0 and float(s.pool.columns[Columns.OBS].mean()) > first + 2.0


def test_a_retrain_due_in_the_last_iteration_is_skipped(capsys):
    """The run's last iteration would retrain for a pool that serves it alone: skipped
    (said in the log and the progress values), and still due (e.g. after a resume with
    a larger budget)."""
    replay = TransitionReplay(1_000, seed=0)
    replay.add_columns(_columns(200, 0.0, seed=0))
    s = _synther()
    values = s.maybe_retrain(_held(replay), 120, last_iteration=True)
    assert s.index == 0 and s.pool is None and s.due(120)
    assert values == {M.SYNTHER_POOL_ROWS: 0, M.SYNTHER_SKIPPED_STEP: 120}
    out = capsys.readouterr().out
    assert "retrain 1 due at env step 120 skipped: the run's last iteration" in out
    assert s.maybe_retrain(_held(replay), 80, last_iteration=True) == {M.SYNTHER_POOL_ROWS: 0}


# ----------------------------------------------------------------- the mix
@pytest.mark.parametrize("ratio, batch", [(0.5, 16), (0.75, 32), (0.0, 8)])
def test_every_minibatch_has_exactly_the_real_ratio(trained, ratio, batch):
    replay, s = trained
    s.knobs["synther_real_ratio"] = ratio
    try:
        real = {r.tobytes() for r in _held(replay)[Columns.OBS]}
        for _ in range(50):
            rows = s.minibatch(replay, batch)
            assert all(len(v) == batch for v in rows.values())
            n_real = sum(r.tobytes() in real for r in rows[Columns.OBS])
            assert n_real == round(ratio * batch)
    finally:
        s.knobs["synther_real_ratio"] = TINY["synther_real_ratio"]


def test_before_the_first_pool_every_row_is_real():
    replay = TransitionReplay(100, seed=0)
    replay.add_columns(_columns(50, 0.0, seed=0))
    rows = _synther().minibatch(replay, 8)
    real = {r.tobytes() for r in _held(replay)[Columns.OBS]}
    assert all(r.tobytes() in real for r in rows[Columns.OBS])


# ------------------------------------------------------------- checkpoints
def _copy_replay(replay: TransitionReplay) -> TransitionReplay:
    other = TransitionReplay(replay.capacity)
    other.set_state(replay.get_state())
    return other


def test_generator_and_pool_round_trip_and_batches_go_on_exactly(trained, tmp_path):
    from rllib_diffusion.algorithms.synther.online import weights_sha256
    from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD

    replay, s = trained
    s.minibatch(replay, 16)  # a batch served before the checkpoint
    record = s.save(tmp_path)[POOL_FIELD]
    assert (tmp_path / GENERATOR_FILE).is_file() and record["dataset"] == "replay"
    restored = _synther()
    out = restored.restore(tmp_path, record, env_steps=150)
    assert out[POOL_FIELD] == {"regeneration": 1, "at_step": 120, "rows": 300}
    assert weights_sha256(restored.module) == weights_sha256(s.module)
    assert restored.values() == s.values()
    ours, theirs = _copy_replay(replay), _copy_replay(replay)
    for _ in range(3):
        a, b = s.minibatch(ours, 16), restored.minibatch(theirs, 16)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_a_checkpoint_missing_its_generator_or_with_another_one_is_refused(trained, tmp_path):
    import torch

    from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD

    _, s = trained
    record = s.save(tmp_path)[POOL_FIELD]
    saved = torch.load(tmp_path / GENERATOR_FILE, weights_only=False)
    saved["weights"] = {k: v + 1.0 for k, v in saved["weights"].items()}
    torch.save(saved, tmp_path / GENERATOR_FILE)
    with pytest.raises(CheckpointError, match="another model"):
        _synther().restore(tmp_path, record, env_steps=150)
    (tmp_path / GENERATOR_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"generator '{GENERATOR_FILE}' is missing"):
        _synther().restore(tmp_path, record, env_steps=150)


def test_a_checkpoint_without_a_pool_retrains_at_the_first_iteration(tmp_path, capsys):
    s = _synther()
    assert s.restore(tmp_path, None, env_steps=150) == {"synthetic_pool": None}
    assert "holds no SynthER pool: retraining" in capsys.readouterr().out and s.due(150)
    assert _synther().restore(tmp_path, None, env_steps=50) == {"synthetic_pool": None}
    assert capsys.readouterr().out == ""  # none was due yet


# ------------------------------------------------------------------ the loop
def test_learner_batches_env_steps_and_progress_of_a_dql_run(pretrained, tmp_path):
    """Two iterations of DQL (20 decisions of 4 env steps each) with a retrain every 40
    env steps: every learner batch is exactly half replay rows, the replay and env steps
    hold only what the EnvRunners sampled, and the loop logs the pool's numbers. A third
    iteration, the budget's last (``limit_next_iteration``), skips the retrain due in it
    and keeps the previous pool."""
    from rllib_diffusion.algorithms.denoiser_finetune import denoiser_finetune_config
    from rllib_diffusion.algorithms.env_step_budget import last_iteration
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, validated

    knobs = TINY | {"synther_retrain_every": 40, "minibatch_size": 16}
    knobs |= {"critic_warmup_decisions": 0}
    s = FinetuneSettings.of(
        algo="dql",
        checkpoint=str(pretrained[0] / "checkpoint"),
        out_dir=str(tmp_path),
        num_envs_per_env_runner=2,
        decisions_per_iteration=20,
        **knobs,
    )
    algorithm = validated(denoiser_finetune_config(s), "dql").build_algo()
    batches: list = []
    update = algorithm.learner_group.update

    def recording(*args, batch, **kwargs):
        batches.append(
            {k: np.asarray(v) for k, v in next(iter(batch.policy_batches.values())).items()}
        )
        return update(*args, batch=batch, **kwargs)

    algorithm.learner_group.update = recording
    try:
        results = [algorithm.train() for _ in range(2)]
        real = {r.tobytes() for r in _held(algorithm.replay)[Columns.OBS]}
        assert batches and all(len(b[Columns.OBS]) == 16 for b in batches)
        assert [sum(r.tobytes() in real for r in b[Columns.OBS]) for b in batches] == [8] * len(
            batches
        )
        assert 40 <= len(algorithm.replay) <= 44  # sampled decisions only
        assert algorithm.env_steps_lifetime <= 4 * len(algorithm.replay)
        own = results[-1][M.REPLAY_FINETUNE_NAMESPACE]
        assert own[M.ENV_STEPS] == algorithm.env_steps_lifetime
        assert own[M.SYNTHER_POOL_ROWS] == 300 and algorithm.synther.index >= 3
        assert own[M.SYNTHER_RETRAIN_STEP] == algorithm.synther.at_env_step
        assert M.SYNTHER_SKIPPED_STEP not in own
        index, at_step = algorithm.synther.index, algorithm.synther.at_env_step
        algorithm.limit_next_iteration(last_iteration(80, 4, 20))  # 80 env steps: one falls due
        own = algorithm.train()[M.REPLAY_FINETUNE_NAMESPACE]
        assert (algorithm.synther.index, algorithm.synther.at_env_step) == (index, at_step)
        assert algorithm.synther.due(algorithm.env_steps_lifetime)
        assert own[M.SYNTHER_SKIPPED_STEP] == algorithm.env_steps_lifetime
        assert own[M.SYNTHER_RETRAIN_STEP] == at_step and own[M.SYNTHER_POOL_ROWS] == 300
    finally:
        algorithm.stop()


@pytest.mark.slow
def test_smoke_run_checkpoints_the_pool_and_resumes_it(pretrained, tmp_path):
    """``finetune --algo dql`` with online SynthER to 300 env steps, then ``--resume``:
    the checkpoint holds the generator and pool, the resumed run restores them. Two
    iterations: the retrain due after the first (<= 160 env steps) runs, the one due in
    the budget's last iteration is skipped, so the pool stays the first one's."""
    from tests.algorithms.batches import smoke_and_resume

    knobs = TINY | {"synther_retrain_every": 80, "minibatch_size": 16}
    knobs |= {"critic_warmup_decisions": 0}
    run = smoke_and_resume("dql", pretrained, tmp_path / "dql", 300, knobs=knobs)
    lines = run["lines"][1:]
    assert all(line[M.SYNTHER_POOL_ROWS] == 300 for line in lines)
    assert 80 <= lines[-1][M.SYNTHER_RETRAIN_STEP] <= 160
    assert lines[-1][M.SYNTHER_GENERATOR_LOSS] > 0
    pool = run["meta"]["synthetic_pool"]
    assert pool["rows"] == 300 and pool["model"] == GENERATOR_FILE
    assert (tmp_path / "dql" / "checkpoint" / GENERATOR_FILE).is_file()
    resumed = run["resumed"]["resumed"]["synthetic_pool"]
    assert resumed == {k: pool[k] for k in ("regeneration", "at_step", "rows")}
    last = json.loads((tmp_path / "dql" / "progress.jsonl").read_text().splitlines()[-1])
    assert last[M.SYNTHER_POOL_ROWS] == 300
