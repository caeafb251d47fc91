"""DPPO with synthetic segments (``synthetic_ratio`` > 0): rollouts of a learned dynamics
model with whole denoising chains sampled by the pre-update policy (``synthetic_actions``
"policy"), or generated segments whose chunks get chains drawn from the forward
posterior (``"generated"``) (rllib_diffusion/algorithms/synthetic_ppo.py)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dppo.dppo_connectors import (
    DENOISE_K,
    OLD_LOGP,
    X_NEXT,
    X_PREV,
    RunningRewardScaling,
)
from rllib_diffusion.algorithms.dppo.finetune import (
    DPPOFamily,
    FinetuneSettings,
    dppo_config_from_pretrained,
    finetune,
)
from rllib_diffusion.algorithms.synthetic_ppo import GENERATOR_FILE
from rllib_diffusion.algorithms.synthetic_segments import SYNTHETIC_EPISODE_PREFIX
from rllib_diffusion.modules.model_config import ConfigError

#: A generator small enough for tests.
TINY_KNOBS = dict(
    synthetic_ratio=1.0,
    segment_length=3,
    generator_gradient_steps=20,
    generator_batch_size=16,
    generator_width=32,
    generator_depth=1,
    generator_denoising_steps=4,
)
TINY_RUN = dict(
    ft_denoising_steps=2,
    decisions_per_iteration=40,
    num_env_runners=0,
    num_envs_per_env_runner=2,
    pair_minibatch_size=40,
    eval_interval=0,
    eval_episodes=1,
)


@pytest.fixture()
def make_algo(pretrained, ray_session):
    """``make_algo(**knobs)``: a DPPO Algorithm on the tiny BC policy (TINY_KNOBS updated)."""
    built = []
    ckpt = str(pretrained[0] / "checkpoint")

    def make(**knobs):
        s = FinetuneSettings.of(checkpoint=ckpt, **TINY_RUN, **{**TINY_KNOBS, **knobs})
        built.append(dppo_config_from_pretrained(ckpt, s).build_algo())
        return built[-1]

    yield make
    for algo in built:
        algo.stop()


def _sample(algo) -> list:
    return algo._sample_tolerating_failures()[0]


def _learner(algo):
    return algo.learner_group._learner


def _pairs(algo, episodes) -> dict:
    """The DPPO learner connector's (env step, denoising step) rows of ``episodes``
    (loss-masked rows only)."""
    learner = _learner(algo)
    out = learner._learner_connector(
        rl_module=learner.module,
        episodes=copy.deepcopy(episodes),
        batch={},
        metrics=learner.metrics,
    )[DEFAULT_MODULE_ID]
    mask = np.asarray(out[Columns.LOSS_MASK], bool)
    return {k: torch.as_tensor(np.asarray(v)[mask]) for k, v in out.items()}


@pytest.mark.parametrize("actions", ["policy", "generated"])
def test_synthetic_rows_carry_the_pre_update_chain_logps(make_algo, actions):
    """Each synthetic decision stores the chain and the K_ft per-step log-probs of the
    Learner's current policy: after the DPPO learner connector, the recomputed
    log-prob of every (decision, denoising step) pair equals its stored one, so the
    first-epoch ratio is exactly 1 (up to float error) on synthetic rows. Every chunk
    is its chain's end, inside the action space."""
    algo = make_algo(synthetic_actions=actions)
    synthetic = algo.synthesize(_sample(algo))
    assert synthetic and all(len(ep) <= TINY_KNOBS["segment_length"] for ep in synthetic)
    assert all(ep.id_.startswith(SYNTHETIC_EPISODE_PREFIX) for ep in synthetic)
    assert all(ep.is_terminated != ep.is_truncated for ep in synthetic)
    k_ft = TINY_RUN["ft_denoising_steps"]
    ep = synthetic[0]
    chains = np.asarray(ep.get_extra_model_outputs(C.CHAINS))
    assert chains.shape[:2] == (len(ep), k_ft + 1)
    assert np.asarray(ep.get_extra_model_outputs(C.CHAIN_LOGP)).shape == (len(ep), k_ft)
    for ep in synthetic:
        chunks = np.asarray(ep.get_actions())
        ends = np.asarray(ep.get_extra_model_outputs(C.CHAINS))[:, -1]
        # A sampled chain's end is unclamped (the chunk is it clamped); a generated
        # chunk is clamped first and its chain ends at it.
        ends = ends if actions == "generated" else np.clip(ends, -1.0, 1.0)
        np.testing.assert_array_equal(ends.reshape(chunks.shape), chunks)
        assert np.abs(chunks).max() <= 1.0
    pairs = _pairs(algo, synthetic)
    assert len(pairs[OLD_LOGP]) == sum(len(e) for e in synthetic) * k_ft
    module = _learner(algo).module[DEFAULT_MODULE_ID].unwrapped()
    with torch.no_grad():
        logp = module.pair_logp(
            pairs[Columns.OBS].float(), pairs[X_PREV], pairs[X_NEXT], pairs[DENOISE_K]
        )
    ratio = torch.exp(logp - pairs[OLD_LOGP])
    assert float((ratio - 1).abs().max()) < 1e-4
    # A wrong behaviour log-prob would show: shuffled old log-probs give ratios ≠ 1.
    shuffled = torch.exp(logp - pairs[OLD_LOGP].flip(0))
    assert float((shuffled - 1).abs().max()) > 1e-3


def _without_terminals(algo) -> None:
    """Make the dynamics model never end a rollout (isolates the step count)."""
    generate = algo.generator.generate

    def no_done(n, cond=None):
        x = generate(n, cond)
        x[:, -1] = 0.0
        return x

    algo.generator.generate = no_done


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_synthetic_decisions_honour_the_ratio(make_algo, ratio):
    algo = make_algo(synthetic_ratio=ratio)
    episodes = _sample(algo)
    algo.synthesize(episodes)  # trains the generator once
    _without_terminals(algo)
    synthetic = algo.synthesize(episodes)
    real = sum(len(ep) for ep in episodes)
    assert sum(len(ep) for ep in synthetic) == math.ceil(ratio * real)


def test_swapping_the_policy_changes_the_synthetic_actions(make_algo):
    """Same generator and torch RNG states: the same module gives the same rollouts, a
    perturbed fine-tuned denoiser other actions (the actions are the policy's)."""
    algo = make_algo()
    algo.synthesize(_sample(algo))
    module = _learner(algo).module[DEFAULT_MODULE_ID].unwrapped()
    other = copy.deepcopy(module)
    with torch.no_grad():
        for p in other.actor_ft.parameters():
            p.add_(0.5 * torch.randn_like(p))
    rng = algo.generator.rng.get_state()

    def actions(module_fn):
        algo.generator.rng.set_state(rng)
        torch.manual_seed(0)
        rollouts = algo.policy_rollouts(12, module_fn)
        return np.concatenate([p["actions"] for p in rollouts])

    same, again = actions(None), actions(None)
    swapped = actions(lambda lrn: other)
    np.testing.assert_array_equal(same, again)
    assert same.shape == swapped.shape and not np.allclose(same, swapped, atol=1e-3)


def test_ratio_zero_is_plain_dppo(make_algo, monkeypatch):
    """``synthetic_ratio`` 0: nothing is built, no random number is drawn, and the learner
    gets the very list of sampled episodes; checkpoints carry no generator file."""
    algo = make_algo(synthetic_ratio=0.0)
    assert algo.generator is None and algo.fifo is None
    episodes = _sample(algo)
    state = torch.random.get_rng_state()
    assert algo.synthesize(episodes) == []
    assert torch.equal(state, torch.random.get_rng_state())
    sampled, updated = [], []
    real_sample, real_update = algo._sample_tolerating_failures, algo.learner_group.update

    def recording_sample():
        out = real_sample()
        sampled.append(out[0])
        return out

    def recording_update(**kw):
        updated.append(kw["episodes"])
        return real_update(**kw)

    monkeypatch.setattr(algo, "_sample_tolerating_failures", recording_sample)
    monkeypatch.setattr(algo.learner_group, "update", recording_update)
    result = algo.train()
    assert updated[0] is sampled[0]
    assert "diffppo" not in result
    path = algo.save_to_path()
    assert not (Path(path) / GENERATOR_FILE).exists()


def test_matched_updates_scale_the_pair_minibatch(make_algo, monkeypatch):
    """``synthetic_matched_updates``: DPPO's update gets ``pair_minibatch_size`` scaled
    by all rows / real rows (the real pairs' number of minibatch steps; DiffPPO's test
    counts the steps), logged as ``diffppo_update_minibatch_size``."""
    from rllib_diffusion.algorithms.synthetic_ppo import matched_minibatch_size
    from tests.algorithms.batches import record_updates

    algo = make_algo(synthetic_matched_updates=True)
    rows, sizes = record_updates(algo, monkeypatch)
    result = algo.train()
    (real_rows, all_rows), base = rows, TINY_RUN["pair_minibatch_size"]
    assert all_rows > real_rows and sizes == [matched_minibatch_size(base, real_rows, all_rows)]
    assert sizes[0] > base and result["diffppo"]["update_minibatch_size"] == sizes[0]


# ------------------------------------------------------------ generated chunks' chains
def _chain_module(sampler: str, k_ft: int):
    """A DPPOModule on the tiny policy (K = 5; DDIM: 3 steps)."""
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig, DPPOModule
    from rllib_diffusion.envs.chunking import chunk_spaces
    from tests.algorithms.batches import DA, OBS_DIM, TA, tiny_policy

    policy = tiny_policy() | ({"sampler": "ddim", "ddim_steps": 3} if sampler == "ddim" else {})
    cfg = DPPOModelConfig(policy=policy, ft_denoising_steps=k_ft, critic_hidden_dims=(8,))
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    torch.manual_seed(0)
    return DPPOModule(
        observation_space=obs_space, action_space=act_space, model_config=cfg.to_dict()
    )


def _by_hand_logp(module, obs, chains, k: int) -> torch.Tensor:
    """The Normal log-density of pair k under the module's step mean and log-prob std,
    each element clamped, the executed rows kept, averaged (DPPO.md)."""
    n = len(obs)
    with torch.no_grad():
        mean, std = module.step_mean_std(obs, chains[:, k], torch.full((n,), k))
    z = (chains[:, k + 1] - mean) / std
    elem = -0.5 * z**2 - std.log() - 0.5 * math.log(2 * math.pi)
    elem = elem.clamp(*module.dppo_config.logprob_clamp)
    return elem[:, : module.policy_config.act_steps].mean(dim=(1, 2))


@pytest.mark.parametrize(("sampler", "k_ft"), [("ddpm", 2), ("ddpm", 5), ("ddim", 3)])
def test_generated_chunks_get_posterior_chains_scored_by_the_policy(sampler, k_ft):
    """``posterior_chains``: a K_ft-step chain ending exactly at each given chunk, its
    stored log-probs the module's own per-step log-probs of those pairs (by hand), and
    those follow the module's weights (a perturbed fine-tuned actor, same chain draw,
    scores them differently)."""
    from tests.algorithms.batches import DA, OBS_DIM, TA

    module, n = _chain_module(sampler, k_ft), 64
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, OBS_DIM, generator=g)
    chunks = torch.rand(n, TA, DA, generator=g) * 2 - 1
    with torch.no_grad():
        out = module.posterior_chains(obs, chunks, generator=torch.Generator().manual_seed(1))
    chains, logp = out[C.CHAINS], out[C.CHAIN_LOGP]
    assert chains.shape == (n, k_ft + 1, TA, DA) and logp.shape == (n, k_ft)
    assert torch.equal(chains[:, -1], chunks) and torch.equal(out[Columns.ACTIONS], chunks)
    for k in range(k_ft):
        torch.testing.assert_close(logp[:, k], _by_hand_logp(module, obs, chains, k))
    torch.testing.assert_close(out[Columns.ACTION_LOGP], logp.sum(-1))
    with torch.no_grad():
        for p in module.actor_ft.parameters():
            p.add_(0.3 * torch.randn_like(p))
        other = module.posterior_chains(obs, chunks, generator=torch.Generator().manual_seed(1))
    assert torch.equal(other[C.CHAINS], chains)
    assert not torch.allclose(other[C.CHAIN_LOGP], logp, atol=1e-3)


def test_generated_dppo_iteration_trains_on_real_and_generated_rows(make_algo, monkeypatch):
    """A DPPO iteration with ``synthetic_actions`` "generated": the update gets ⌈R × real⌉
    generated decisions (every generated step kept, none filtered) besides the real
    ones, and the learner's numbers stay finite."""
    from tests.algorithms.batches import record_updates

    algo = make_algo(synthetic_actions="generated")
    assert not algo.uses_policy_actions() and algo.generator.cond_dim == 0
    rows, _ = record_updates(algo, monkeypatch)
    result = algo.train()
    real_rows, all_rows = rows
    syn = result["diffppo"]
    assert syn["synthetic_steps"] == math.ceil(TINY_KNOBS["synthetic_ratio"] * syn["real_steps"])
    assert all_rows - real_rows >= syn["synthetic_steps"] > 0
    # π_old's log-probs of the generated chains are logged beside the real ones'.
    assert np.isfinite([syn["synthetic_action_logp_mean"], syn["real_action_logp_mean"]]).all()
    learner = result["learners"][DEFAULT_MODULE_ID]
    numbers = [v for v in learner.values() if isinstance(v, (int, float))]
    assert numbers and all(np.isfinite(numbers))


def test_reinflow_refuses_generated_actions_in_one_line():
    from rllib_diffusion.algorithms.dppo.reinflow import ReinFlowConfig

    with pytest.raises(ConfigError, match="--synthetic-actions policy") as err:
        ReinFlowConfig().training(synthetic_actions="generated").validate()
    assert "\n" not in str(err.value)


def test_reward_scaling_statistics_ignore_synthetic_episodes():
    """Synthetic episodes are scaled by the real returns' std and leave it unchanged."""
    import gymnasium as gym

    space = gym.spaces.Box(-1, 1, (2,))

    def episode(rewards, id_=None):
        n = len(rewards)
        return SingleAgentEpisode(
            id_=id_,
            observations=[np.zeros(2, np.float32)] * (n + 1),
            actions=[np.zeros(2, np.float32)] * n,
            rewards=list(rewards),
            terminated=True,
            observation_space=space,
            action_space=space,
            len_lookback_buffer=0,
        )

    real = [episode([1.0, 2.0, 3.0])]
    only_real, both = RunningRewardScaling(gamma=0.9), RunningRewardScaling(gamma=0.9)
    only_real(rl_module=None, batch={}, episodes=copy.deepcopy(real))
    syn = episode([5.0, 6.0], id_=SYNTHETIC_EPISODE_PREFIX + "x")
    both(rl_module=None, batch={}, episodes=copy.deepcopy(real) + [syn])
    assert both.get_state() == only_real.get_state() and both.count > 1
    np.testing.assert_allclose(syn.get_rewards(), np.array([5.0, 6.0]) / both.std, rtol=1e-6)


@pytest.mark.parametrize(
    ("knobs", "flag"),
    [
        ({"synthetic_ratio": -1.0}, "--synthetic-ratio"),
        ({"segment_length": 0}, "--segment-length"),
        ({"synthetic_actions": "mixed"}, "--synthetic-actions"),
    ],
)
def test_bad_synthetic_knobs_are_one_line_errors(pretrained, knobs, flag):
    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings.of(checkpoint=ckpt, **TINY_RUN, **knobs)
    with pytest.raises((ConfigError, ValueError)) as err:
        dppo_config_from_pretrained(ckpt, s).validate()
    assert flag in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_dppo_synthetic_run_resumes_with_its_generator_and_fifo(
    pretrained, ray_session, tmp_path, monkeypatch
):
    ckpt = str(pretrained[0] / "checkpoint")
    out = tmp_path / "dppo_syn"
    run = {**TINY_RUN, "env_steps": 480, "checkpoint_interval": 1}
    real_line = DPPOFamily.progress_line

    def crash_in_iteration_2(self, algo, result, it, **kwargs):
        if it == 2:
            raise KeyboardInterrupt("killed")
        return real_line(self, algo, result, it, **kwargs)

    monkeypatch.setattr(DPPOFamily, "progress_line", crash_in_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneSettings.of(checkpoint=ckpt, out_dir=str(out), **run, **TINY_KNOBS))
    saved = torch.load(out / "checkpoint" / GENERATOR_FILE, weights_only=False)
    steps = TINY_KNOBS["generator_gradient_steps"]
    assert saved["generator"]["steps_done"] == steps
    monkeypatch.setattr(DPPOFamily, "progress_line", real_line)
    summary = finetune(
        FinetuneSettings.of(checkpoint=ckpt, out_dir=str(out), resume=True, **run, **TINY_KNOBS)
    )
    assert summary["resumed"]["from_iteration"] == 1
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    trained = [x for x in lines if x["iteration"] > 0]
    assert [x["iteration"] for x in trained] == list(range(1, len(trained) + 1))
    fifo = [x["diffppo_fifo_segments"] for x in trained]
    assert fifo[1] > fifo[0]  # the FIFO was restored, not refilled from scratch
    final = torch.load(out / "checkpoint" / GENERATOR_FILE, weights_only=False)
    assert final["generator"]["steps_done"] == steps * len(trained)
