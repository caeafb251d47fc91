"""DyDiff rollouts regenerated with the learning policy during offline training (issue
16, item 3): the current Learner weights drive the rollouts, the cadence, the exact mix
after a pool is replaced, the pool saved with a checkpoint and restored identically (bad
pools refused in one line), and bad settings refused in one line before Ray starts.

Fast: an untrained DyDiff module and a TD3+BC module at Hopper's dims, no Ray. The end
to end runs of both hosts are in ``test_dydiff_regeneration_run.py`` (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.mixed_offline_data import (
    ArrayStream,
    MixedDataIterator,
    MixedOfflineData,
)
from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, check_settings
from rllib_diffusion.algorithms.regenerated_rollouts import (
    AT_STEP,
    KEPT,
    REGENERATION,
    STEPS,
    TRANSITIONS,
    Regenerator,
    learner_policy,
)
from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD, POOL_FILE
from rllib_diffusion.modules.model_config import ConfigError

DATA = "data/hopper-medium-v5-small.npz"
ENV_CONFIG = {"env_id": "Hopper-v5", "horizon": 1, "act_steps": 1, "flatten_actions": True}
MID = "default_policy"


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def hopper():
    """Hopper states (data), an untrained DyDiff module (H = 4, K = 5) with the data's
    statistics, and a TD3+BC module, all at Hopper-v5's dims."""
    from rllib_diffusion.algorithms.dydiff.dydiff_rl_module import (
        DyDiffModelConfig,
        DyDiffModule,
        fit_normalizers,
    )
    from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import TD3BCModelConfig, TD3BCModule
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.segments import make_segments
    from rllib_diffusion.data.transitions import dataset_transitions

    dataset = load_dataset(DATA)
    torch.manual_seed(0)
    cfg = DyDiffModelConfig(
        obs_dim=11, action_dim=3, horizon=4, width=32, depth=2, denoising_steps=5,
        ensemble_size=3, ensemble_width=16, ensemble_depth=2, clip_x0=6.0,
        normalization=fit_normalizers(make_segments(dataset, horizon=4)), env_id="Hopper-v5",
    )  # fmt: skip
    box = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    dydiff = DyDiffModule(observation_space=box, action_space=box, model_config=cfg.to_dict())
    actor = TD3BCModule(
        observation_space=None, action_space=None, inference_only=True,
        model_config=TD3BCModelConfig(11, 3, hidden_dims=(16, 16)).to_dict(),
    )  # fmt: skip
    return dataset_transitions(dataset)[C.OBS], dydiff, actor


class FakeOfflineData:
    """Records the pools an algorithm's ``offline_data`` is given."""

    def __init__(self) -> None:
        self.pools: list[dict[str, np.ndarray]] = []

    @property
    def has_synthetic(self) -> bool:
        return bool(self.pools)

    def replace_synthetic(self, columns, *, seed: int) -> int:
        self.pools.append({k: np.array(v) for k, v in columns.items()})
        return len(columns[C.OBS])


def fake_algo(module) -> SimpleNamespace:
    """An Algorithm as far as the regenerator sees it: one local Learner holding
    ``module`` (``foreach_learner``) and an ``offline_data``."""
    learner = SimpleNamespace(module={MID: module})
    result = SimpleNamespace(get=lambda: None)

    def foreach_learner(fn):
        result.get = lambda: fn(learner)
        return [result]

    return SimpleNamespace(
        learner_group=SimpleNamespace(foreach_learner=foreach_learner),
        offline_data=FakeOfflineData(),
    )


def regenerator(hopper, **kw) -> Regenerator:
    from rllib_diffusion.algorithms.dydiff.regenerate import DyDiffRollouts

    states, dydiff, _ = hopper
    settings = SimpleNamespace(**{
        "seed": 3, "dydiff_regenerate_every": 20, "dydiff_num_rollouts": 24,
        "injection_rounds": 1, "state_mix": 0.5, "filter": "hardmax", "keep_fraction": 0.5,
        "disagreement_threshold": 1.0, "softmax_temperature": 0.05, **kw,
    })  # fmt: skip
    return Regenerator(settings, states, ENV_CONFIG, source=DyDiffRollouts(None, dydiff))


# ------------------------------------------------------------- the current policy
def test_regenerated_rollouts_follow_the_current_learner_weights(hopper) -> None:
    """Perturbing the Learner's actor between two regenerations changes the rollouts;
    the same weights and regeneration index (seed) give identical rollouts; the actions
    are the module's deterministic actions on the rollout states."""
    _, _, actor = hopper
    regen, algo = regenerator(hopper), fake_algo(actor)
    before = {k: v.clone() for k, v in actor.state_dict().items()}
    try:
        regen.regenerate(algo, 0)
        regen.regenerate(algo, 0)  # same weights, same index
        with torch.no_grad():
            for p in actor.parameters():
                p.add_(0.5 * torch.randn_like(p))
        regen.regenerate(algo, 0)
    finally:
        actor.load_state_dict(before)
    first, same, perturbed = algo.offline_data.pools
    for k in first:
        np.testing.assert_array_equal(first[k], same[k])
    assert first[C.ACTIONS].shape != perturbed[C.ACTIONS].shape or not np.allclose(
        first[C.ACTIONS], perturbed[C.ACTIONS]
    )
    with torch.no_grad():
        acted = actor.forward_inference({"obs": torch.as_tensor(first[C.OBS])})["actions"]
    np.testing.assert_allclose(first[C.ACTIONS], np.clip(acted.numpy(), -1, 1), atol=1e-5)


def test_learner_policy_acts_like_the_module_in_data_units(hopper) -> None:
    states, _, actor = hopper
    policy = learner_policy(fake_algo(actor), ENV_CONFIG)
    with torch.no_grad():
        want = actor.forward_inference({"obs": torch.as_tensor(states[:5])})["actions"].numpy()
    np.testing.assert_allclose(policy(states[:5]), np.clip(want, -1, 1), atol=1e-6)


def test_regeneration_leaves_the_global_torch_random_stream_alone(hopper) -> None:
    """Rolling out seeds torch's global RNG (diffusion policies draw their noise from
    it) inside a fork: the training run's stream goes on as if nothing had happened."""
    _, _, actor = hopper
    regen, algo = regenerator(hopper), fake_algo(actor)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    regen.regenerate(algo, 0)
    torch.testing.assert_close(torch.rand(3), expected)


# ------------------------------------------------------------------------ cadence
def test_regenerates_at_steps_0_n_2n_and_once_after_a_resume_without_a_pool(hopper) -> None:
    _, _, actor = hopper
    regen, algo = regenerator(hopper), fake_algo(actor)
    lines = {step: regen.maybe_regenerate(algo, step) for step in range(0, 100, 10)}
    done = [step for step, line in lines.items() if line is not None]
    assert done == [0, 20, 40, 60, 80]
    assert [lines[t][REGENERATION] for t in done] == [0, 1, 2, 3, 4]
    assert all(lines[t][AT_STEP] == t for t in done)
    assert len(algo.offline_data.pools) == 5
    line = lines[0]
    assert line[KEPT] == 12 and 0 < line[TRANSITIONS] <= 12 * 4  # hardmax 0.5 of 24, H = 4
    # A run resumed from a checkpoint without a pool (written before pools were saved)
    # regenerates at once (the pool of index step // N), then on the cadence again.
    resumed, algo2 = regenerator(hopper), fake_algo(actor)
    again = {step: resumed.maybe_regenerate(algo2, step) for step in range(30, 70, 10)}
    assert [t for t, x in again.items() if x is not None] == [30, 40, 60]
    assert again[30][REGENERATION] == 1


def learner_iterations(regen, algo, *, iterations: int, per_iteration: int, on_batch) -> list:
    """Run ``iterations`` RLlib iterations of ``per_iteration`` gradient steps as the
    local Learner does (one ``MiniBatchRayDataIterator`` over the mixed iterator, kept
    across ``update`` calls); ``on_batch(step, batch)`` is the gradient step. Returns each
    iteration's regeneration fields (:meth:`Regenerator.take_lines`)."""
    from ray.rllib.utils.minibatch_utils import MiniBatchRayDataIterator

    data = algo.offline_data
    mixed = MixedDataIterator(None, None, real_ratio=0.75)
    data._mixed_iterators = [mixed]
    learner_iterator, lines = None, []
    for it in range(iterations):
        regen.start_iteration(algo, it * per_iteration)  # the run loop's before_iteration
        if learner_iterator is None:  # RLlib's first sample(): the iterator, then the Learner's
            mixed.real = RealRows(data.synthetic.columns)
            learner_iterator = MiniBatchRayDataIterator(
                iterator=mixed, device="cpu", minibatch_size=16, num_iters=per_iteration
            )
        for batch in learner_iterator:
            on_batch(regen.step - 1, batch.policy_batches[MID])
        lines.append(regen.take_lines())
    return lines


def test_regenerates_inside_iterations_at_exactly_n_with_the_current_policy(hopper) -> None:
    """N = 3 with 5 gradient steps per iteration: regenerations at steps 0, 3, 6, ..., 18
    (two inside some iterations), each pool the rollouts of the weights after exactly
    that many gradient steps (the actor changes at every step), the batch of step t
    drawing its synthetic rows from the pool regenerated at 3·⌊t/3⌋."""
    _, _, actor = hopper
    regen, algo = regenerator(hopper, dydiff_regenerate_every=3), fake_algo(actor)
    algo.offline_data = mixed_data()
    before = {k: v.clone() for k, v in actor.state_dict().items()}
    pools: dict[int, ArrayStream] = {}

    def gradient_step(step: int, batch) -> None:
        pool = algo.offline_data.synthetic
        if pool not in pools.values():  # new at this step: the current actor's rollouts
            pools[step] = pool
            obs = pool.columns[f"{MID}/obs"]
            with torch.no_grad():
                acted = actor.forward_inference({"obs": torch.as_tensor(obs)})["actions"]
            want = np.clip(acted.numpy(), -1, 1)
            np.testing.assert_allclose(pool.columns[f"{MID}/actions"], want, atol=1e-5)
        synthetic = batch["obs"][:, 0] < RealRows.REAL
        rows = {tuple(r) for r in pools[max(pools)].columns[f"{MID}/obs"].tolist()}
        assert int(synthetic.sum()) == 4 and max(pools) == 3 * (step // 3)
        assert {tuple(r) for r in np.asarray(batch["obs"][synthetic]).tolist()} <= rows
        with torch.no_grad():  # the gradient step: new weights
            for p in actor.parameters():
                p.add_(0.05 * torch.randn_like(p))

    try:
        lines = learner_iterations(
            regen, algo, iterations=4, per_iteration=5, on_batch=gradient_step
        )
    finally:
        actor.load_state_dict(before)
    assert sorted(pools) == [0, 3, 6, 9, 12, 15, 18]
    assert [line[STEPS] for line in lines] == [[0, 3], [6, 9], [12], [15, 18]]
    assert [(line[AT_STEP], line[REGENERATION]) for line in lines] == [
        (3, 1), (9, 3), (12, 4), (18, 6),
    ]  # fmt: skip
    assert regen.step == 20


def test_the_clock_counts_only_batches_drawn_also_without_real_rows() -> None:
    """``real_ratio`` 0 (a pass of the pool per epoch): a pool the clock replaces before
    step 2 serves that step on, the pass ends with the new pool's, and the clock hears
    ``batch_drawn`` once per batch handed out (an epoch's end draws none)."""
    pool_a = ArrayStream({"x": np.full(40, -1.0, np.float32)}, seed=0)  # 5 batches a pass
    pool_b = ArrayStream({"x": np.full(24, -2.0, np.float32)}, seed=0)  # 3 batches a pass
    mixed = MixedDataIterator(RealStream(1000), pool_a, real_ratio=0.0)
    clock = SimpleNamespace(step=0, before=[])

    def before_batch() -> None:
        clock.before.append(clock.step)
        if clock.step == 2 and mixed.synthetic is pool_a:
            mixed.replace_synthetic(pool_b)

    clock.before_batch, clock.batch_drawn = (
        before_batch,
        lambda: setattr(clock, "step", clock.step + 1),
    )
    mixed.clock = clock
    epochs = mixed.iter_torch_batches(batch_size=8)
    first = [float(b["x"][0]) for b in epochs]
    assert first == [-1.0, -1.0, -2.0, -2.0, -2.0] and clock.step == 5
    assert [float(b["x"][0]) for b in epochs] == [-2.0] * 3 and clock.step == 8
    assert clock.before == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8]  # 5 and 8: the ends of the passes


def test_regeneration_with_remote_learners_is_refused_in_one_line() -> None:
    """The pool is swapped in the driver's objects: remote Learners would train on their
    copy of the first pool, so ``num_learners >= 1`` is refused when the mixed data is
    built (before any data is read, Learner actor started or batch drawn)."""
    from ray.rllib.algorithms.bc import BCConfig

    from rllib_diffusion.algorithms.mixed_offline_data import (
        REAL_RATIO,
        SYNTHETIC_INPUT,
        check_local_pool,
    )

    config = BCConfig().learners(num_learners=1)
    setattr(config, SYNTHETIC_INPUT, [])
    setattr(config, REAL_RATIO, 0.5)
    with pytest.raises(ConfigError, match=r"num_learners=1 .* use num_learners=0") as err:
        MixedOfflineData(config)
    assert "\n" not in str(err.value)
    check_local_pool(config.learners(num_learners=0))  # the local Learner: fine
    setattr(config.learners(num_learners=2), SYNTHETIC_INPUT, ["synthetic.parquet"])
    check_local_pool(config)  # a fixed synthetic parquet is split across Learners by Ray Data


# ------------------------------------------------------------ the mix after a swap
class RealStream:
    """A ``DataIterator`` stand-in: rows 0, 1, 2, ... of column ``x`` in order."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def iter_torch_batches(self, *, batch_size: int, **_):
        n = self.rows // batch_size
        return (
            {"x": torch.arange(i * batch_size, (i + 1) * batch_size, dtype=torch.float32)}
            for i in range(n)
        )


def test_the_next_batch_after_a_replaced_pool_mixes_exactly_with_the_new_pool() -> None:
    """n_real real rows (the real stream goes on where it was) and B − n_real rows all
    from the new pool, in every batch before and after the swap."""
    pool_a = ArrayStream({"x": np.full(50, -1.0, np.float32)}, seed=0)
    pool_b = ArrayStream({"x": np.full(7, -2.0, np.float32)}, seed=0)  # < one batch's share
    mixed = MixedDataIterator(RealStream(1000), pool_a, real_ratio=0.6)
    batches = iter(mixed.iter_torch_batches(batch_size=20))
    seen_real = []
    for i in range(6):
        if i == 3:
            mixed.replace_synthetic(pool_b)
        x = next(batches)["x"]
        assert len(x) == 20
        real = x[x >= 0]
        assert len(real) == 12
        seen_real.append(real.sort().values)
        assert (x[x < 0] == (-1.0 if i < 3 else -2.0)).all()
    torch.testing.assert_close(torch.cat(seen_real), torch.arange(72, dtype=torch.float32))


def test_replace_synthetic_maps_the_rows_with_the_configs_prelearner() -> None:
    """``MixedOfflineData.replace_synthetic`` turns transition columns into Learner batch
    columns (the pre-learner of the real parquet) and hands them to running iterators."""
    from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

    data = object.__new__(MixedOfflineData)  # no Ray Data: only the pool's path
    data.config, data.prelearner_class, data.synthetic = None, TransitionPreLearner, None
    running = MixedDataIterator(RealStream(10), None, real_ratio=0.5)
    data._mixed_iterators = [running]
    n = 9
    columns = {
        C.OBS: np.ones((n, 11), np.float32), C.ACTIONS: np.zeros((n, 3), np.float32),
        C.REWARDS: np.arange(n, dtype=np.float32), C.NEXT_OBS: np.ones((n, 11), np.float32),
        C.TERMINATEDS: np.zeros(n, np.float32),
    }  # fmt: skip
    assert not data.has_synthetic and data.replace_synthetic(columns, seed=1) == n
    assert data.has_synthetic and running.synthetic is data.synthetic and running.generation == 1
    assert set(data.synthetic.columns) == {f"{MID}/{k}" for k in
        ("obs", "actions", "rewards", "new_obs", "terminateds")}  # fmt: skip
    batch = data.synthetic.sample(4).policy_batches[MID]
    assert batch["obs"].shape == (4, 11) and len(set(batch["rewards"].tolist())) == 4


# ------------------------------------------------------------ the pool in checkpoints
def mixed_data() -> MixedOfflineData:
    """A ``MixedOfflineData`` without Ray Data: only the synthetic pool's path."""
    from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

    data = object.__new__(MixedOfflineData)
    data.config, data.prelearner_class, data.synthetic = None, TransitionPreLearner, None
    data._mixed_iterators, data.batch_clock = None, None
    return data


class RealRows:
    """A real ``DataIterator`` stand-in with the pool's columns: row ``i`` has
    ``obs[:, 0] = REAL + i`` (rollout states are standardised-scale, far below)."""

    REAL = 1e6

    def __init__(self, like: dict[str, np.ndarray], rows: int = 10_000) -> None:
        self.like, self.rows = like, rows

    def iter_torch_batches(self, *, batch_size: int, **_):
        for i in range(self.rows // batch_size):
            batch = {k: torch.zeros((batch_size, *v.shape[1:])) for k, v in self.like.items()}
            batch[f"{MID}/obs"][:, 0] = self.REAL + torch.arange(
                i * batch_size, (i + 1) * batch_size
            )
            yield batch


def draw(data: MixedOfflineData, n: int, batch_size: int = 16, ratio: float = 0.75) -> list:
    """The synthetic rows (sorted) of the next ``n`` mixed batches of ``data``'s pool,
    checking each batch holds exactly ``ratio · batch_size`` real rows."""
    mixed = MixedDataIterator(RealRows(data.synthetic.columns), data.synthetic, ratio)
    data._mixed_iterators = [mixed]
    batches, rows = iter(mixed.iter_torch_batches(batch_size=batch_size)), []
    for _ in range(n):
        batch = next(batches)
        real = batch[f"{MID}/obs"][:, 0] >= RealRows.REAL
        assert int(real.sum()) == round(ratio * batch_size)
        flat = torch.cat([v[~real].reshape(int((~real).sum()), -1) for v in batch.values()], 1)
        rows.append(sorted(map(tuple, flat.tolist())))
    return rows


def saved_pool(hopper, tmp_path, *, served: int = 7):
    """A pool of regeneration 1 (step 20), ``served`` batches drawn, saved into
    ``tmp_path/ckpt``: ``(algo, record)``."""
    regen, algo = regenerator(hopper, **PROVENANCE), fake_algo(hopper[2])
    algo.offline_data = mixed_data()
    assert regen.maybe_regenerate(algo, 20)[REGENERATION] == 1
    draw(algo.offline_data, served)
    (tmp_path / "ckpt").mkdir()
    return algo, regen.save(algo, tmp_path / "ckpt")[POOL_FIELD]


PROVENANCE = {"dydiff_model": "runs/model/checkpoint", "dataset": DATA}


def test_the_saved_pool_is_restored_identically_and_batches_go_on_from_it(hopper, tmp_path):
    """A pool saved mid-pass (7 batches served) and restored into a fresh run has
    identical arrays, seed and position; its next batches hold exactly 12 real + 4
    synthetic rows, the synthetic ones those the uninterrupted run drew (across the end
    of a pass); no regeneration until the next multiple of N."""
    algo, record = saved_pool(hopper, tmp_path)
    assert (tmp_path / "ckpt" / POOL_FILE).is_file()
    assert (record["regeneration"], record["at_step"], record["served"]) == (1, 20, 7)
    uninterrupted = draw(algo.offline_data, 12)  # 12 · 4 rows > the pool (≤ 48): a new pass

    regen2, algo2 = regenerator(hopper, **PROVENANCE), fake_algo(hopper[2])
    algo2.offline_data = mixed_data()
    resumed = regen2.restore(algo2, tmp_path / "ckpt", record, step=30)
    assert resumed == {POOL_FIELD: {"regeneration": 1, "at_step": 20, "rows": record["rows"]}}
    before, after = algo.offline_data.synthetic, algo2.offline_data.synthetic
    assert list(after.columns) == list(before.columns) and after.seed == before.seed
    for k, v in before.columns.items():
        assert after.columns[k].dtype == v.dtype
        np.testing.assert_array_equal(after.columns[k], v)
    assert after.served == 7
    assert draw(algo2.offline_data, 12) == uninterrupted
    assert regen2.maybe_regenerate(algo2, 30) is None
    assert regen2.maybe_regenerate(algo2, 40)[REGENERATION] == 2


def test_array_stream_rebuilt_from_its_state_serves_the_same_batches() -> None:
    """Columns, seed and ``served`` are the whole state, for pools larger and smaller
    than a batch, through both of RLlib's ways of pulling (iterator and ``sample``)."""
    key = f"{MID}/x"
    for rows, batch in ((50, 8), (5, 8)):
        cols = {key: np.arange(rows, dtype=np.float32)}
        a = ArrayStream(cols, seed=3)
        next(iter(a.iter_torch_batches(batch_size=batch)))
        a.sample(batch)
        assert a.served == 2
        b = ArrayStream(cols, seed=3, served=a.served)
        want = [x[key].numpy() for _, x in zip(range(9), _batches(a, batch))]
        got = [x[key].numpy() for _, x in zip(range(9), _batches(b, batch))]
        np.testing.assert_array_equal(np.stack(got), np.stack(want))
        np.testing.assert_array_equal(
            a.sample(batch).policy_batches[MID]["x"], b.sample(batch).policy_batches[MID]["x"]
        )
        assert all(len(set(w.tolist())) == min(rows, batch) for w in want)
    perm = ArrayStream({key: np.arange(50, dtype=np.float32)}, seed=3)
    one_pass = np.concatenate([perm.next_indices(10) for _ in range(5)])
    np.testing.assert_array_equal(np.sort(one_pass), np.arange(50))  # a pass: each row once


def _batches(stream: ArrayStream, batch: int):
    """Endless batches of ``stream`` (a new ``iter()`` after each pass)."""
    while True:
        yield from stream.iter_torch_batches(batch_size=batch)


def test_a_bad_pool_in_a_checkpoint_is_refused_in_one_line(hopper, tmp_path) -> None:
    """Missing, damaged, another model's, another dataset's, an unreadable record, a
    pool from after the checkpoint: one-line CheckpointErrors naming the field/file."""
    import copy
    import shutil

    from rllib_diffusion.algorithms.dydiff.regenerate import DyDiffRollouts
    from rllib_diffusion.checkpoints import CheckpointError

    _, record = saved_pool(hopper, tmp_path, served=2)
    ckpt = tmp_path / "ckpt"
    states, dydiff, actor = hopper
    other_model = copy.deepcopy(dydiff)
    with torch.no_grad():
        next(other_model.parameters()).add_(1e-3)
    other = regenerator(hopper, **PROVENANCE)
    other.source = DyDiffRollouts(None, other_model)
    fewer = regenerator((states[:-1], dydiff, actor), **PROVENANCE)

    def refused(regen, where, rec, step, names):
        with pytest.raises(CheckpointError, match=names) as err:
            regen.restore(fake_algo(actor), where, rec, step)
        assert "\n" not in str(err.value)

    ok = regenerator(hopper, **PROVENANCE)
    refused(other, ckpt, record, 30, r"another model \(synthetic_pool.model_sha256")
    refused(fewer, ckpt, record, 30, r"another dataset \(synthetic_pool.dataset_sha256")
    refused(ok, ckpt, {**record, "sha256": "0" * 64}, 30, r"checksum \(synthetic_pool.sha256")
    refused(ok, ckpt, {k: v for k, v in record.items() if k != "seed"}, 30, "record")
    refused(ok, ckpt, record, 10, r"after the checkpoint's step 10 \(synthetic_pool.at_step")
    shutil.copytree(ckpt, tmp_path / "cut")
    pool = tmp_path / "cut" / POOL_FILE
    pool.write_bytes(pool.read_bytes()[: pool.stat().st_size // 2])
    refused(ok, tmp_path / "cut", record, 30, f"is damaged: its regenerated pool '{POOL_FILE}'")
    pool.unlink()
    refused(ok, tmp_path / "cut", record, 30, f"'{POOL_FILE}' is missing")


def test_a_checkpoint_without_a_pool_regenerates_at_the_resume_with_a_notice(
    hopper, tmp_path, capsys
) -> None:
    """Checkpoints written before pools were saved (no ``synthetic_pool``) still resume:
    a one-line notice, then regeneration ``step // N`` at once and the cadence."""
    regen, algo = regenerator(hopper, **PROVENANCE), fake_algo(hopper[2])
    algo.offline_data = mixed_data()
    assert regen.save(algo, tmp_path) == {}  # no pool yet: nothing to save
    assert regen.restore(algo, tmp_path, None, step=30) == {POOL_FIELD: None}
    notice = capsys.readouterr().out.strip()
    assert "holds no regenerated pool" in notice and "differs" in notice and "\n" not in notice
    assert regen.maybe_regenerate(algo, 30)[REGENERATION] == 1
    saved = regen.save(algo, tmp_path)[POOL_FIELD]  # the next checkpoint holds it
    assert (saved["regeneration"], saved["at_step"], saved["served"]) == (1, 30, 0)


def test_checkpoint_files_are_saved_atomically_with_the_checkpoint(tmp_path) -> None:
    """``save_algorithm_checkpoint(files=...)``: the files and the meta fields they
    return are in the checkpoint; when writing them fails, the previous checkpoint
    stays as it was and nothing half-written is left."""
    from rllib_diffusion.checkpoints import read_checkpoint_meta, save_algorithm_checkpoint

    algo = SimpleNamespace(save_to_path=lambda p: Path(p).mkdir(parents=True))
    record = {"rows": 3}

    def files(directory):
        (directory / POOL_FILE).write_bytes(b"pool")
        return {POOL_FIELD: record}

    ckpt = tmp_path / "checkpoint"
    save_algorithm_checkpoint(algo, ckpt, {"algorithm": "td3bc", "iteration": 1}, files=files)
    assert read_checkpoint_meta(ckpt).synthetic_pool == record
    assert (ckpt / POOL_FILE).read_bytes() == b"pool"

    def broken(directory):
        (directory / POOL_FILE).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_algorithm_checkpoint(algo, ckpt, {"algorithm": "td3bc", "iteration": 2}, files=broken)
    assert read_checkpoint_meta(ckpt).iteration == 1 and (ckpt / POOL_FILE).read_bytes() == b"pool"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# -------------------------------------------------------------------- bad settings
def _settings(**kw) -> OfflineSettings:
    return OfflineSettings(dataset=DATA, out_dir="/nonexistent/out", algo="td3bc", **kw)


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        ({"dydiff_regenerate_every": 1000}, "--dydiff-regenerate-every apply only with --dydiff-model"),
        ({"filter": "softmax", "keep_fraction": 0.3}, "--filter, --keep-fraction apply only"),
        ({"dydiff_model": "m"}, r"--real-ratio < 1 go together"),
        ({"dydiff_model": "m", "real_ratio": 0.5, "synthetic_dataset": "d"}, "drop --synthetic-dataset"),
        ({"dydiff_model": "m", "real_ratio": 0.6, "steps_per_iteration": 500, "batch_size": 256},
         "--real-ratio 0.6 × batch 256"),
        ({"dydiff_model": "m", "real_ratio": 0.5, "steps_per_iteration": 500, "filter": "top"},
         "--filter 'top'"),
    ],
)  # fmt: skip
def test_bad_regeneration_settings_are_one_line_errors(kw, names) -> None:
    with pytest.raises(ConfigError, match=names) as err:
        _settings(**kw)
    assert "\n" not in str(err.value)


def test_a_checkpoint_that_is_not_a_dydiff_model_of_the_dataset_is_refused(tmp_path) -> None:
    """Before anything is read or Ray starts: a missing path, another algorithm's
    checkpoint, a DyDiff model of another dataset."""
    from rllib_diffusion.checkpoints import META_FILE, CheckpointError, CheckpointMeta

    def checkpoint(name: str, algorithm: str, dataset: str) -> str:
        path = tmp_path / name
        path.mkdir()
        meta = CheckpointMeta.from_dict({"algorithm": algorithm, "settings": {"dataset": dataset}})
        (path / META_FILE).write_text(json.dumps(meta.to_dict()))
        return str(path)

    ok = {"real_ratio": 0.5, "steps_per_iteration": 500, "batch_size": 256}
    cases = [
        (str(tmp_path / "nope"), CheckpointError, "not found"),
        (checkpoint("td3bc", "td3bc", DATA), CheckpointError, "'td3bc' checkpoint, not a DyDiff"),
        (checkpoint("other", "DyDiff", "other.npz"), ConfigError, "trained on 'other.npz'"),
    ]
    for path, error, names in cases:
        with pytest.raises(error, match=names):
            check_settings(_settings(dydiff_model=path, **ok))
    check_settings(_settings(dydiff_model=checkpoint("good", "DyDiff", DATA), **ok))
