"""DiffPPO: segments, FIFO, generator, synthetic episodes with the pre-update policy's
behaviour log-probs, the augmented learner batch, knobs, resume."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from rllib_diffusion.algorithms.gaussian.diffppo import (
    GENERATOR_FILE,
    DiffPPOConfig,
    check_diffppo_knobs,
    cut_prefix,
    plausible_prefixes,
)
from rllib_diffusion.algorithms.gaussian.gaussian_bc import GaussianBCSettings, pretrain_gaussian
from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
    GaussianPPOSettings,
    build_gaussian_ppo_config,
    finetune_gaussian_ppo,
    load_bc_policy,
)
from rllib_diffusion.algorithms.synthetic_segments import (
    SegmentFIFO,
    SegmentGenerator,
    SegmentLayout,
    episode_segments,
)
from rllib_diffusion.modules.model_config import ConfigError

TINY_BC = dict(
    hidden_dims=(32, 32), gradient_steps=40, steps_per_iteration=20, batch_size=32, eval_episodes=2
)
TINY_PPO = dict(
    env_steps=64,
    train_batch_size=64,
    minibatch_size=32,
    num_epochs=1,
    num_env_runners=0,
    num_envs_per_env_runner=2,
    eval_interval=0,
    eval_episodes=1,
    checkpoint_interval=0,
)
#: A generator small enough for tests; no plausibility filter so synthetic rows exist.
TINY_KNOBS = dict(
    synthetic_ratio=1.0,
    segment_length=4,
    generator_gradient_steps=20,
    generator_batch_size=16,
    generator_width=32,
    generator_depth=1,
    generator_denoising_steps=4,
    synthetic_logp_filter=False,
)


# ----------------------------------------------------------------- pure pieces
def test_episode_segments_windows_and_terminal_flag():
    obs = np.arange(11, dtype=np.float32)[:, None]  # T = 10 steps
    act = np.arange(10, dtype=np.float32)[:, None] + 100
    rew = np.arange(10, dtype=np.float32) + 1000
    o, a, r, d = episode_segments(obs, act, rew, True, 4)
    # Starts 0, 4 and the window ending at step 10 (start 6); only that one terminal.
    assert o[:, 0, 0].tolist() == [0, 4, 6] and o[:, -1, 0].tolist() == [4, 8, 10]
    assert a[:, 0, 0].tolist() == [100, 104, 106] and r[2].tolist() == [1006, 1007, 1008, 1009]
    assert d.tolist() == [0, 0, 1]
    assert episode_segments(obs, act, rew, False, 4)[3].tolist() == [0, 0, 0]
    short = episode_segments(obs[:3], act[:2], rew[:2], True, 4)
    assert [x.shape for x in short] == [(0, 5, 1), (0, 4, 1), (0, 4), (0,)]
    with pytest.raises(ValueError, match="observations"):
        episode_segments(obs[:10], act, rew, True, 4)


def test_layout_flatten_split_roundtrip_and_fifo():
    lay = SegmentLayout(obs_dim=2, action_dim=3, horizon=4)
    assert lay.dim == 5 * 2 + 4 * 3 + 4 + 1
    rng = np.random.default_rng(0)
    obs, act, rew = rng.normal(size=(6, 5, 2)), rng.normal(size=(6, 4, 3)), rng.normal(size=(6, 4))
    done = np.array([0, 1, 0, 0, 1, 0], np.float32)
    back = lay.split(lay.flatten(obs, act, rew, done))
    np.testing.assert_allclose(back["obs"], obs, rtol=1e-6)
    np.testing.assert_allclose(back["actions"], act, rtol=1e-6)
    np.testing.assert_allclose(back["rewards"], rew, rtol=1e-6)
    assert back["terminated"].tolist() == [False, True, False, False, True, False]
    fifo = SegmentFIFO(5, lay.dim)
    fifo.add(lay.flatten(obs, act, rew, done)[:3])
    fifo.add(lay.flatten(obs, act, rew, done)[3:])
    assert len(fifo) == 5 and np.allclose(fifo.data[0, :2], obs[1, 0])  # oldest dropped
    other = SegmentFIFO(5, lay.dim)
    other.set_state(fifo.get_state())
    np.testing.assert_array_equal(other.data, fifo.data)


def test_generator_learns_the_data_and_its_state_restores_sampling():
    lay = SegmentLayout(obs_dim=1, action_dim=1, horizon=1)
    rng = np.random.default_rng(0)
    data = np.column_stack(
        [rng.normal(5, 0.5, 2000), rng.normal(-3, 0.5, 2000), rng.normal(-3, 0.5, 2000)]
    )
    data = np.column_stack([data, rng.normal(1, 0.1, 2000), np.zeros(2000)]).astype(np.float32)
    gen = SegmentGenerator(lay.dim, width=64, depth=2, denoising_steps=10, batch_size=128, seed=1)
    gen.train(data, 400)
    copy_ = SegmentGenerator(lay.dim, width=64, depth=2, denoising_steps=10, batch_size=128, seed=9)
    copy_.set_state(gen.get_state())
    a, b = lay.split(gen.generate(500)), lay.split(copy_.generate(500))
    np.testing.assert_array_equal(a["obs"], b["obs"])  # same weights, normaliser, RNG
    assert abs(a["obs"][:, 0, 0].mean() - 5.0) < 0.5 and abs(a["actions"].mean() + 3.0) < 0.5
    assert not a["terminated"].any()


def test_conditional_generator_follows_its_condition():
    """As a dynamics model: x = 2·cond + noise is learned (the condition is used)."""
    rng = np.random.default_rng(0)
    cond = rng.uniform(-1, 1, (3000, 1)).astype(np.float32)
    x = (2 * cond + rng.normal(0, 0.05, (3000, 1))).astype(np.float32)
    gen = SegmentGenerator(1, cond_dim=1, width=64, depth=2, denoising_steps=10, seed=0)
    gen.train(x, 600, cond)
    probe = np.array([[-0.8], [0.0], [0.8]] * 200, np.float32)
    out = gen.generate(len(probe), probe)[:, 0].reshape(200, 3).mean(axis=0)
    np.testing.assert_allclose(out, [-1.6, 0.0, 1.6], atol=0.3)


def test_segment_transitions_and_rollout_prefixes():
    from rllib_diffusion.algorithms.synthetic_ppo import rollout_prefixes
    from rllib_diffusion.algorithms.synthetic_segments import segment_transitions

    segs = {
        "obs": np.array([[[0.0], [1.0], [3.0]]], np.float32),
        "actions": np.array([[[5.0], [6.0]]], np.float32),
        "rewards": np.array([[0.5, 0.7]], np.float32),
        "terminated": np.array([True]),
    }
    x, cond = segment_transitions(segs)
    np.testing.assert_allclose(x, [[1.0, 0.5, 0.0], [2.0, 0.7, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(cond, [[0.0, 5.0], [1.0, 6.0]])
    steps = [
        {"obs": np.array([[0.0], [10.0]]), "actions": np.ones((2, 1)), "rewards": np.ones(2),
         "action_logp": np.zeros(2), "done": np.array([False, True])},
        {"obs": np.array([[1.0], [11.0]]), "actions": np.ones((2, 1)), "rewards": np.ones(2),
         "action_logp": np.zeros(2), "done": np.array([False, False])},
    ]  # fmt: skip
    out = rollout_prefixes(steps, np.array([[2.0], [12.0]]), wanted=10)
    assert [len(p["actions"]) for p in out] == [2, 1]
    assert not out[0]["terminated"] and out[1]["terminated"]  # ends at its first done
    assert out[0]["obs"][:, 0].tolist() == [0, 1, 2] and out[1]["obs"][:, 0].tolist() == [10, 11]
    assert [len(p["actions"]) for p in rollout_prefixes(steps, steps[1]["obs"], 1)] == [1]


def test_plausible_prefixes_cut_before_the_first_unlikely_action():
    n, h = 3, 4
    segs = {
        "obs": np.arange(n * (h + 1), dtype=np.float32).reshape(n, h + 1, 1),
        "actions": np.zeros((n, h, 1), np.float32),
        "rewards": np.ones((n, h), np.float32),
        "terminated": np.array([True, True, False]),
    }
    logp = np.array([[-1, -1, -1, -1], [-1, -9, -1, -1], [-9, -1, -1, -1]], np.float32)
    behaviour = {
        "action_logp": logp.reshape(-1),
        "action_dist_inputs": np.zeros((n * h, 2), np.float32),
    }
    out = plausible_prefixes(segs, behaviour, floor=-5.0)
    assert [len(p["actions"]) for p in out] == [4, 1]  # third dropped
    assert out[0]["terminated"] and not out[1]["terminated"]  # a cut prefix is truncated
    assert out[1]["obs"][:, 0].tolist() == [5, 6] and out[1]["action_logp"].tolist() == [-1]
    cut = cut_prefix(out[0], 2)
    assert len(cut["actions"]) == 2 and len(cut["obs"]) == 3 and not cut["terminated"]


@pytest.mark.parametrize(
    "knobs, flag",
    [
        ({"synthetic_ratio": -0.5}, "--synthetic-ratio"),
        ({"segment_length": 0}, "--segment-length"),
        ({"generator_gradient_steps": 1.5}, "--generator-gradient-steps"),
        ({"generator_lr": 0.0}, "--generator-lr"),
        ({"synthetic_actions": "mixed"}, "--synthetic-actions"),
        ({"synthetic_matched_updates": 1}, "--synthetic-matched-updates"),
    ],
)
def test_bad_knobs_are_one_line_errors(knobs, flag):
    with pytest.raises(ConfigError, match=flag):
        check_diffppo_knobs(DiffPPOConfig().training(**knobs))
    with pytest.raises(ConfigError, match=flag):
        GaussianPPOSettings("ckpt", knobs=knobs)
    with pytest.raises(ConfigError, match="not a knob of diffppo"):
        GaussianPPOSettings("ckpt", knobs={"synthetic_ratios": 1.0})


def _cyclic_steps(rows: int, minibatch_size: int, epochs: int) -> int:
    """Minibatch steps RLlib's cyclic iterator takes over a batch of ``rows`` rows."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

    batch = MultiAgentBatch({"p": SampleBatch({"x": np.arange(rows)})}, rows)
    it = MiniBatchCyclicIterator(batch, num_epochs=epochs, minibatch_size=minibatch_size)
    return sum(1 for _ in it)


@pytest.mark.parametrize(
    "real, both, minibatch, epochs",
    [(68, 150, 32, 1), (2_040, 4_100, 512, 5), (20_400, 41_000, 10_000, 5), (300, 390, 64, 10)],
)
def test_matched_minibatch_takes_the_real_rows_number_of_steps(real, both, minibatch, epochs):
    from rllib_diffusion.algorithms.synthetic_ppo import matched_minibatch_size

    matched = matched_minibatch_size(minibatch, real, both)
    assert _cyclic_steps(real, minibatch, epochs) == _cyclic_steps(both, matched, epochs)
    assert _cyclic_steps(both, minibatch, epochs) > _cyclic_steps(real, minibatch, epochs)
    assert matched_minibatch_size(minibatch, real, real) == minibatch


# ------------------------------------------------------------ with RLlib and a policy
@pytest.fixture(scope="module")
def bc_ckpt(tiny_dataset, ray_session):
    root, dataset_id = tiny_dataset
    out = root / "diffppo" / "bc"
    pretrain_gaussian(GaussianBCSettings(dataset_id, out_dir=str(out), **TINY_BC))
    return str(out / "checkpoint")


@pytest.fixture()
def make_algo(bc_ckpt, ray_session):
    """``make_algo(**knobs)``: a DiffPPO Algorithm (TINY_KNOBS updated) with the BC policy."""
    from rllib_diffusion.checkpoints import load_policy_module

    bc_module, meta = load_policy_module(bc_ckpt)
    built = []

    def make(**knobs):
        settings = GaussianPPOSettings(bc_ckpt, knobs={**TINY_KNOBS, **knobs}, **TINY_PPO)
        config = build_gaussian_ppo_config(settings, meta["env_config"], meta["model_config"])
        built.append(config.build_algo())
        load_bc_policy(built[-1], bc_module)
        return built[-1]

    yield make
    for algo in built:
        algo.stop()


@pytest.fixture()
def algo(make_algo):
    return make_algo()


def _sample(algo):
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

    return synchronous_parallel_sample(
        worker_set=algo.env_runner_group, max_env_steps=64, _uses_new_env_runners=True
    )


def _learner_module(algo):
    from ray.rllib.core import DEFAULT_MODULE_ID

    return algo.learner_group._learner.module[DEFAULT_MODULE_ID]


@pytest.mark.parametrize("actions", ["generated", "policy"])
def test_synthetic_behaviour_logps_are_the_pre_update_policys(make_algo, actions):
    """Stored log-probs = a diagonal Gaussian's log-density (by hand) under the Learner's
    current policy, so PPO's first-epoch ratio on synthetic rows is exactly 1."""
    from ray.rllib.core.columns import Columns

    algo = make_algo(synthetic_actions=actions)
    synthetic = algo.synthesize(_sample(algo))
    assert synthetic and all(len(ep) <= TINY_KNOBS["segment_length"] for ep in synthetic)
    module = _learner_module(algo)
    for ep in synthetic[:5]:
        obs = torch.as_tensor(np.asarray(ep.get_observations())[:-1])
        act = torch.as_tensor(np.asarray(ep.get_actions()))
        with torch.no_grad():
            inputs = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        mean, log_std = inputs.chunk(2, dim=-1)
        by_hand = (
            -0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
        stored = np.asarray(ep.get_extra_model_outputs(Columns.ACTION_LOGP))
        np.testing.assert_allclose(stored, by_hand.numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            np.asarray(ep.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS)),
            inputs.numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        assert ep.is_terminated != ep.is_truncated


def test_synthetic_rows_reach_the_learner_and_real_rows_are_unchanged(algo, monkeypatch):
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.execution import rollout_ops

    sampled, updated = [], []
    real_sample = rollout_ops.synchronous_parallel_sample

    def recording_sample(**kw):
        out = real_sample(**kw)
        sampled.append(copy.deepcopy(out[0]))
        return out

    real_update = algo.learner_group.update

    def recording_update(**kw):
        updated.append(copy.deepcopy(kw["episodes"]))
        return real_update(**kw)

    monkeypatch.setattr(rollout_ops, "synchronous_parallel_sample", recording_sample)
    monkeypatch.setattr(algo.learner_group, "update", recording_update)
    result = algo.train()
    real, episodes = sampled[0], updated[0]
    synthetic = episodes[len(real) :]
    n_syn = sum(len(e) for e in synthetic)
    assert n_syn == result["diffppo"]["synthetic_steps"] > 0
    learner = algo.learner_group._learner

    def batch_of(eps):
        out = learner._learner_connector(
            rl_module=learner.module, episodes=copy.deepcopy(eps), batch={}, metrics=learner.metrics
        )[DEFAULT_MODULE_ID]
        mask = np.asarray(out[Columns.LOSS_MASK], bool)
        return {
            k: np.asarray(out[k])[mask] for k in (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP)
        }

    only_real, both = batch_of(real), batch_of(episodes)
    n_real = sum(len(e) for e in real)
    assert len(only_real[Columns.OBS]) == n_real and len(both[Columns.OBS]) == n_real + n_syn
    for key, rows in only_real.items():  # the real episodes come first, unchanged
        np.testing.assert_array_equal(both[key][:n_real], rows)


@pytest.mark.parametrize("matched", [False, True])
def test_matched_updates_take_the_real_batchs_minibatch_steps(make_algo, monkeypatch, matched):
    """``synthetic_matched_updates``: the update on real + synthetic rows takes the
    minibatch steps the real rows alone take with the configured minibatch (off: the
    configured minibatch, about twice the steps at ratio 1)."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_MODULE_STEPS_TRAINED

    from rllib_diffusion.algorithms.synthetic_ppo import SYNTHETIC_STEPS
    from tests.algorithms.batches import record_updates

    algo = make_algo(synthetic_matched_updates=matched)
    rows, sizes = record_updates(algo, monkeypatch)
    result = algo.train()
    assert result["diffppo"][SYNTHETIC_STEPS] > 0
    (real_rows, all_rows), size, epochs = rows, sizes[0], algo.config.num_epochs
    steps = math.ceil(epochs * all_rows / size)  # RLlib's cyclic iterator
    trained = result[LEARNER_RESULTS][DEFAULT_MODULE_ID][NUM_MODULE_STEPS_TRAINED]
    assert trained == steps * size
    real_steps = math.ceil(epochs * real_rows / TINY_PPO["minibatch_size"])
    if matched:
        assert steps == real_steps and result["diffppo"]["update_minibatch_size"] == size
    else:
        assert size == TINY_PPO["minibatch_size"] and steps > real_steps
        assert "update_minibatch_size" not in result["diffppo"]


def test_ratio_zero_is_plain_ppo(bc_ckpt, ray_session):
    from rllib_diffusion.checkpoints import load_policy_module

    _, meta = load_policy_module(bc_ckpt)
    settings = GaussianPPOSettings(
        bc_ckpt, knobs={**TINY_KNOBS, "synthetic_ratio": 0.0}, **TINY_PPO
    )
    algo = build_gaussian_ppo_config(
        settings, meta["env_config"], meta["model_config"]
    ).build_algo()
    try:
        episodes = _sample(algo)
        assert algo.synthesize(episodes) == []
        assert algo.generator is None and algo.fifo is None  # nothing built: plain PPO
    finally:
        algo.stop()


@pytest.mark.slow
def test_diffppo_run_resumes_with_its_generator_and_fifo(
    bc_ckpt, ray_session, tmp_path, monkeypatch
):
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import GaussianPPOFamily

    out = tmp_path / "diffppo"
    kw = {**TINY_PPO, "env_steps": 192, "checkpoint_interval": 1}
    real_line = GaussianPPOFamily.progress_line

    def crash_in_iteration_2(self, algo, result, it, **kwargs):
        if it == 2:
            raise KeyboardInterrupt("killed")
        return real_line(self, algo, result, it, **kwargs)

    monkeypatch.setattr(GaussianPPOFamily, "progress_line", crash_in_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        finetune_gaussian_ppo(
            GaussianPPOSettings(bc_ckpt, out_dir=str(out), knobs=TINY_KNOBS, **kw)
        )
    saved = torch.load(out / "checkpoint" / GENERATOR_FILE, weights_only=False)
    assert saved["generator"]["steps_done"] == TINY_KNOBS["generator_gradient_steps"]
    monkeypatch.setattr(GaussianPPOFamily, "progress_line", real_line)
    with pytest.raises(Exception, match="synthetic_ratio"):  # other knobs: refused
        finetune_gaussian_ppo(
            GaussianPPOSettings(
                bc_ckpt,
                out_dir=str(out),
                resume=True,
                knobs={**TINY_KNOBS, "synthetic_ratio": 0.5},
                **kw,
            )
        )
    summary = finetune_gaussian_ppo(
        GaussianPPOSettings(bc_ckpt, out_dir=str(out), resume=True, knobs=TINY_KNOBS, **kw)
    )
    assert summary["algorithm"] == "DiffPPO" and summary["resumed"]["from_iteration"] == 1
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    fifo = [x["diffppo_fifo_segments"] for x in lines]
    assert fifo[1] > fifo[0]  # the FIFO was restored, not refilled from scratch
    final = torch.load(out / "checkpoint" / GENERATOR_FILE, weights_only=False)
    steps = TINY_KNOBS["generator_gradient_steps"]
    assert final["generator"]["steps_done"] == steps * len(lines)
