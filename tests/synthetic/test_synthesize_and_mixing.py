"""``synthesize`` end to end (generator trained through RLlib, Minari dataset with
provenance, reproducible from the checkpoint) and batches mixed from real and synthetic
data at an exact ratio (the ray.data iterator, and an offline Q-learner's OfflineData)."""

from __future__ import annotations

import gc
import importlib
from dataclasses import replace

import numpy as np
import pytest

from rllib_diffusion.algorithms.mixed_offline_data import MixedDataIterator, real_rows
from rllib_diffusion.modules.model_config import ConfigError

#: The module of ``synthesize`` (the package's name ``synthesize`` is the function).
SYNTHESIZE_MODULE = "rllib_diffusion.algorithms.synther.synthesize"
#: Reward of the marker transitions that stand for synthetic data (Hopper's are < 10).
MARK = 1000.0


# ------------------------------------------------------------------ ratio arithmetic
def test_real_rows_is_exact_or_refused_in_one_line() -> None:
    assert real_rows(0.5, 256) == 128
    assert real_rows(0.0, 256) == 0
    assert real_rows(1.0, 32) == 32
    with pytest.raises(ConfigError) as err:
        real_rows(0.3, 256)
    assert "\n" not in str(err.value)
    assert "0.296875" in str(err.value)


# ------------------------------------------------------------- the mixing iterator
def _iterators(ray, n_real: int, n_syn: int):
    real = ray.data.from_items([{"rewards": 0.0, "i": i} for i in range(n_real)])
    syn = ray.data.from_items([{"rewards": 1.0, "i": i} for i in range(n_syn)])
    return real.iterator(), syn.iterator()


def test_every_mixed_batch_holds_exactly_the_real_ratio(ray_session) -> None:
    real, syn = _iterators(ray_session, 1000, 300)
    batches = MixedDataIterator(real, syn, 0.75).iter_torch_batches(
        batch_size=64, local_shuffle_buffer_size=100
    )
    for _ in range(2):  # two epochs: the learner re-iterates
        counts = [(len(b["rewards"]), int(b["rewards"].sum())) for b in batches]
        # 1000 // 48 whole real batches; 21 × 16 synthetic rows > 300: the synthetic
        # stream restarted at least once, and no batch is short.
        assert len(counts) == 1000 // 48
        assert set(counts) == {(64, 16)}


def test_synthetic_only_batches(ray_session) -> None:
    real, syn = _iterators(ray_session, 100, 300)
    batches = list(MixedDataIterator(real, syn, 0.0).iter_torch_batches(batch_size=32))
    assert len(batches) == 300 // 32
    assert all(float(b["rewards"].sum()) == 32 for b in batches)


# ------------------------------------------------- through an offline Q-learner's data
@pytest.fixture(scope="module")
def marker_dataset(tiny_dataset):
    """The tiny Hopper data's transitions with reward MARK, as a single-step Minari set."""
    from rllib_diffusion.data import load_minari, write_minari
    from rllib_diffusion.data.transitions import dataset_transitions, transition_episodes

    _, dataset_id = tiny_dataset
    cols = dataset_transitions(load_minari(dataset_id))
    cols["rewards"] = np.full_like(cols["rewards"], MARK)
    write_minari(
        transition_episodes(cols), "test/hopper/marker-v0", env_id="Hopper-v5", overwrite=True
    )
    return "test/hopper/marker-v0"


def _offline_algo(dataset_id: str, synthetic: str, real_ratio: float, out: str, steps: int):
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, build_offline_config
    from rllib_diffusion.data import load_minari
    from rllib_diffusion.data.offline import prepare_transition_data

    s = OfflineSettings(
        algo="idql",
        dataset=dataset_id,
        out_dir=out,
        gradient_steps=steps,
        steps_per_iteration=steps,
        batch_size=32,
        hidden_dims=(16, 16),
        synthetic_dataset=synthetic,
        real_ratio=real_ratio,
    )
    data = load_minari(dataset_id)
    path, _ = prepare_transition_data(data)
    config, _ = build_offline_config(s, path, "Hopper-v5", data.obs_dim, data.action_dim)
    return config.build_algo()


def _synthetic_rows(rewards) -> int:
    return int((np.asarray(rewards) == MARK).sum())


@pytest.mark.slow  # 1-4 min: builds IDQL twice and trains one iteration each
@pytest.mark.parametrize("steps", [10, 1], ids=["iterator", "single-batch"])
def test_offline_q_batches_hold_exactly_the_real_ratio(
    steps, tiny_dataset, marker_dataset, ray_session, tmp_path
) -> None:
    from ray.rllib.utils.metrics import ALL_MODULES, LEARNER_RESULTS

    _, dataset_id = tiny_dataset
    algo = _offline_algo(dataset_id, marker_dataset, 0.25, str(tmp_path / "run"), steps)
    data = algo.offline_data
    try:
        if steps == 1:  # RLlib's single-batch mode (dataset_num_iters_per_learner=1)
            for _ in range(5):
                batch = data.sample(num_samples=32, return_iterator=False, num_shards=0)
                rewards = batch.policy_batches["default_policy"]["rewards"]
                assert (len(rewards), _synthetic_rows(rewards)) == (32, 24)
        else:
            (iterator,) = data.sample(num_samples=32, return_iterator=True, num_shards=0)
            seen = 0
            for batch in iterator.iter_torch_batches(batch_size=32, **data.iter_batches_kwargs):
                rewards = batch["default_policy/rewards"]
                assert (len(rewards), _synthetic_rows(rewards)) == (32, 24)
                seen += 1
            assert seen >= 10
        result = algo.train()  # the learner consumes the mixed stream
        assert result[LEARNER_RESULTS][ALL_MODULES]["num_env_steps_trained"] == steps * 32
    finally:
        algo.stop()
        gc.collect()  # close the Ray Data iterators while Ray is up


# ----------------------------------------------------------------------- synthesize
@pytest.fixture(scope="module")
def synthesized(tiny_dataset, ray_session, tmp_path_factory):
    from rllib_diffusion.algorithms.synther import SynthesizeSettings, synthesize

    _, dataset_id = tiny_dataset
    s = SynthesizeSettings(
        dataset=dataset_id,
        out_dir=str(tmp_path_factory.mktemp("synther") / "run"),
        gradient_steps=60,
        steps_per_iteration=30,
        batch_size=64,
        width=32,
        depth=2,
        denoising_steps=10,
        dataset_id="test/hopper/synthetic-v0",
        num_transitions=300,
        sample_batch_size=128,
        seed=3,
    )
    return s, synthesize(s)


def test_synthesize_writes_minari_with_provenance(synthesized) -> None:
    from rllib_diffusion.algorithms.synther import read_provenance
    from rllib_diffusion.checkpoints import read_checkpoint_meta
    from rllib_diffusion.data import load_minari

    s, summary = synthesized
    prov = read_provenance(s.dataset_id)
    assert prov == summary["provenance"]
    assert prov["num_transitions"] == 300 and prov["seed"] == 3
    assert prov["source_dataset"] == s.dataset
    assert read_checkpoint_meta(prov["generator_checkpoint"]).algorithm == "SynthER"
    assert read_provenance(s.dataset) is None  # real data has none
    data = load_minari(s.dataset_id)
    assert data.num_episodes == data.num_transitions == 300
    assert data.env_id == "Hopper-v5"
    term = np.array([e.terminations[0] for e in data.episodes])
    trunc = np.array([e.truncations[0] for e in data.episodes])
    assert (term != trunc).all()
    assert term.mean() == pytest.approx(prov["terminal_rate"])
    # The generator run's fidelity check (its "evaluation") is in the summary.
    assert summary["generator_evaluation"]["num_samples"] > 0


def test_synthesize_from_the_checkpoint_reproduces_the_data(synthesized) -> None:
    from rllib_diffusion.algorithms.synther import synthesize
    from rllib_diffusion.data import load_minari

    s, summary = synthesized
    again = replace(
        s,
        generator=summary["provenance"]["generator_checkpoint"],
        dataset_id="test/hopper/synthetic-v1",
        out_dir=s.out_dir + "-again",
    )
    synthesize(again)
    first, second = load_minari(s.dataset_id), load_minari(again.dataset_id)
    for a, b in zip(first.episodes, second.episodes):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
    with pytest.raises(ConfigError, match="trained on"):
        synthesize(replace(again, dataset="test/other/data-v0", dataset_id="test/x/y-v2"))


# --------------------------------------------------------------- terminal labelling
def test_env_rule_terminals_relabel_exactly_the_rows_the_rule_flags(synthesized) -> None:
    """Same generator and seed: the same transitions, terminal flags from Hopper's rule on
    the generated next state; the provenance records the choice and both counts."""
    from rllib_diffusion.algorithms.synther import read_provenance, synthesize
    from rllib_diffusion.data import load_minari
    from rllib_diffusion.envs.termination import termination_fn

    module = importlib.import_module(SYNTHESIZE_MODULE)
    s, summary = synthesized
    ruled = replace(
        s,
        generator=summary["provenance"]["generator_checkpoint"],
        dataset_id="test/hopper/synthetic-rule-v0",
        out_dir=s.out_dir + "-rule",
        terminals=module.ENV_RULE_TERMINALS,
    )
    synthesize(ruled)
    first, second = load_minari(s.dataset_id), load_minari(ruled.dataset_id)
    next_obs = np.stack([e.observations[1] for e in second.episodes])
    np.testing.assert_array_equal(next_obs, [e.observations[1] for e in first.episodes])
    by_hand = termination_fn("Hopper-v5")(next_obs)
    assert 0 < by_hand.sum() < len(by_hand)  # both kinds of rows, or the check is blind
    np.testing.assert_array_equal([e.terminations[0] for e in second.episodes], by_hand)
    np.testing.assert_array_equal([e.truncations[0] for e in second.episodes], ~by_hand)
    generated, prov = read_provenance(s.dataset_id), read_provenance(ruled.dataset_id)
    assert generated[module.TERMINALS_KEY] == module.GENERATED_TERMINALS
    assert module.RULE_TERMINALS_KEY not in generated
    assert prov[module.TERMINALS_KEY] == module.ENV_RULE_TERMINALS
    assert prov[module.RULE_TERMINALS_KEY] == int(by_hand.sum())
    assert prov["terminal_rate"] == pytest.approx(by_hand.mean())
    assert prov[module.GENERATED_TERMINAL_RATE_KEY] == pytest.approx(generated["terminal_rate"])


def test_env_rule_is_refused_before_training_for_an_env_without_a_rule(
    isolated_dirs, monkeypatch
) -> None:
    from rllib_diffusion.algorithms.synther import SynthesizeSettings, synthesize
    from rllib_diffusion.data.npz_io import save_npz
    from tests.synthetic.toy import toy_dataset

    module = importlib.import_module(SYNTHESIZE_MODULE)
    data = save_npz(toy_dataset(4, 0), isolated_dirs / "toy.npz")  # ReachTarget: no rule
    monkeypatch.setattr(module, "train_generator", lambda s: pytest.fail("it trained"))
    s = SynthesizeSettings(
        dataset=data,
        out_dir=str(isolated_dirs / "run"),
        dataset_id="test/toy/synthetic-v0",
        terminals=module.ENV_RULE_TERMINALS,
    )
    with pytest.raises(ConfigError) as err:
        synthesize(s)
    msg = str(err.value)
    assert "\n" not in msg
    assert "ReachTarget" in msg and "--terminals generated" in msg and "termination.py" in msg
    with pytest.raises(ConfigError, match="--terminals 'bogus'; allowed: generated, env-rule"):
        replace(s, terminals="bogus")
