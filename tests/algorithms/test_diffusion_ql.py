"""Diffusion-QL: losses against hand computations, target/EMA schedules, checkpoint, learning."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion.algorithms.diffusion_ql import OfflineSettings, train_offline
from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_learner import ACTOR, CRITIC, q_loss_term
from rllib_diffusion.algorithms.diffusion_ql.train import build_offline_config
from rllib_diffusion.checkpoints import load_policy_module
from tests.algorithms.batches import transition_batch

OBS, ACT = 3, 2
MID = "default_policy"


def make_learner(policy="ddpm", **training):
    settings = OfflineSettings(
        dataset="unused",
        algo="diffusion_ql" if policy == "ddpm" else "diffusion_ql_flow",
        hidden_dims=(16, 16),
        num_candidates=4,
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(**training)
    return config.build_learner(), config


def tiny_batch(n=8, seed=0):
    return transition_batch(n, OBS, ACT, seed)


@pytest.mark.parametrize("policy", ["ddpm", "flow"])
def test_critic_loss_matches_hand_computation(policy):
    learner, config = make_learner(policy)
    module = learner.module[MID].unwrapped()
    batch = tiny_batch()
    fixed_next = torch.rand(8, ACT) * 2 - 1
    real_sample = module.sample
    module.sample = lambda obs, ema, x_init=None: fixed_next if ema else real_sample(obs, ema=False)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    logged = float(learner.metrics.peek((MID, "losses/critic_loss")))

    def q_head(net, obs, act):
        return net(torch.cat([obs, act], dim=-1)).squeeze(-1)

    with torch.no_grad():
        q_next = torch.minimum(
            *(q_head(h, batch[Columns.NEXT_OBS], fixed_next) for h in module.critic_target.heads)
        )
        y = batch[Columns.REWARDS] + 0.99 * (1 - batch[Columns.TERMINATEDS]) * q_next
        expected = sum(
            ((q_head(h, batch[Columns.OBS], batch[Columns.ACTIONS]) - y) ** 2).mean()
            for h in module.critic.heads
        )
    assert logged == pytest.approx(float(expected), rel=1e-5)
    learner._temp_losses.clear()


def test_max_q_backup_is_the_min_over_heads_of_each_heads_max():
    """Official ``ql_diffusion.py``: ``target_q_j = max_n Q′_j(s′, a′_n)`` per head, then
    ``min(target_q1, target_q2)`` — not the max over samples of the min over heads."""
    from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_learner import (
        critic_target_values,
    )

    learner, config = make_learner(max_q_backup=3)
    assert config.max_q_backup == 3
    batch = tiny_batch()
    cands = torch.rand(8 * 3, ACT) * 2 - 1  # 3 next actions per next state, state-major
    # Two independent target heads (a fresh critic's heads rank the actions alike).
    q_heads = torch.randn(2, 8 * 3, generator=torch.Generator().manual_seed(3))
    module = SimpleNamespace(
        sample=lambda obs, ema, x_init=None: cands[: obs.shape[0]],
        critic_target=lambda obs, act: q_heads if torch.equal(act, cands) else None,
    )
    y = critic_target_values(module, batch, 0.99, max_q_backup=3)
    with torch.no_grad():
        q = q_heads.view(2, 8, 3)  # (heads, states, samples)
        not_done = 0.99 * (1 - batch[Columns.TERMINATEDS])
        expected = batch[Columns.REWARDS] + not_done * q.max(2).values.min(0).values
        other_order = batch[Columns.REWARDS] + not_done * q.min(0).values.max(1).values
    torch.testing.assert_close(y, expected)
    # min_j max_n ≥ max_n min_j always; on these random critics strictly somewhere.
    assert torch.all(y >= other_order - 1e-6) and torch.any(y > other_order + 1e-6)


@pytest.mark.parametrize("algo", ["diffusion_ql", "idql", "dac", "fql"])
def test_reward_scale_and_bias_reach_every_loss(algo):
    settings = OfflineSettings(dataset="unused", algo=algo, hidden_dims=(16, 16))
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(reward_scale=2.0, reward_bias=-1.0)
    learner = config.build_learner()

    def critic_loss(batch, via_learner):
        torch.manual_seed(0)
        if via_learner:  # Learner.compute_losses applies the reward transform
            learner.compute_losses(fwd_out={MID: {}}, batch={MID: batch})
        else:
            learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
        learner._temp_losses.clear()
        return float(learner.metrics.peek((MID, "losses/critic_loss")))

    scaled = tiny_batch()
    scaled[Columns.REWARDS] = 2.0 * scaled[Columns.REWARDS] - 1.0
    assert critic_loss(tiny_batch(), via_learner=True) == pytest.approx(
        critic_loss(scaled, via_learner=False), rel=1e-5
    )
    assert critic_loss(tiny_batch(), via_learner=True) != pytest.approx(
        critic_loss(tiny_batch(), via_learner=False), rel=1e-3
    )


def test_reward_normalization_defaults_on_only_for_idql_on_locomotion():
    from rllib_diffusion.algorithms.diffusion_ql.train import normalizes_rewards

    def s(algo, flag=None):
        return OfflineSettings(dataset="d", algo=algo, normalize_rewards=flag)

    assert normalizes_rewards(s("idql"), "Hopper-v5")
    assert not normalizes_rewards(s("idql"), "rllib_diffusion/ReachTarget-v0")
    assert not normalizes_rewards(s("diffusion_ql"), "Hopper-v5")
    assert not normalizes_rewards(s("idql", False), "Hopper-v5")
    assert normalizes_rewards(s("fql", True), "rllib_diffusion/ReachTarget-v0")


def test_reward_normalization_factor_spans_1000_over_the_return_range():
    from rllib_diffusion.algorithms.diffusion_ql.train import reward_normalization_factor
    from rllib_diffusion.data.errors import DatasetError

    from .test_dppo_learning import biased_dataset

    data = biased_dataset(num_episodes=6, bias=0.3)
    returns = data.episode_returns()
    assert reward_normalization_factor(data) == pytest.approx(
        1000.0 / (returns.max() - returns.min())
    )
    data.episodes = data.episodes[:1]
    with pytest.raises(DatasetError, match="reward-scale"):
        reward_normalization_factor(data)


def test_lr_end_gives_a_cosine_schedule_over_the_gradient_budget():
    settings = OfflineSettings(
        dataset="unused",
        hidden_dims=(16, 16),
        lr=1e-3,
        lr_end=1e-5,
        gradient_steps=100,
        batch_size=10,
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    sched = config.actor_lr
    # Indexed by RLlib's sample counter, which moves one batch per iteration: the run is
    # one iteration of 100 steps (steps_per_iteration is capped at the budget), so the
    # decay ends at 10 samples, where that counter ends (it ended at 1000 = 100 steps ×
    # batch 10 before, which RLlib's counter never reached: the decay barely started).
    assert sched[0] == [0, pytest.approx(1e-3)] and sched[-1] == [10, pytest.approx(1e-5)]
    assert config.critic_lr == sched


def test_q_term_normalises_by_the_other_head_without_gradient():
    q = torch.tensor([[1.0, 3.0], [-2.0, 6.0]], requires_grad=True)
    term = q_loss_term(q, (0, 1))
    assert float(term) == pytest.approx(-(1 + 3) / 2 / ((2 + 6) / 2))
    term.backward()
    # d/dq0 = -1/(B * mean|q1|) = -1/(2*4); the normalising head gets no gradient.
    np.testing.assert_allclose(q.grad[0].numpy(), [-0.125, -0.125])
    np.testing.assert_allclose(q.grad[1].numpy(), [0.0, 0.0])


def test_actor_loss_does_not_train_the_critic():
    learner, config = make_learner()
    module = learner.module[MID].unwrapped()
    batch = tiny_batch()
    torch.manual_seed(0)
    loss = learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    critic_loss = learner._temp_losses[(MID, CRITIC)]
    expected = torch.autograd.grad(critic_loss, list(module.critic.parameters()), retain_graph=True)
    grads = learner.compute_gradients({MID: loss})
    got = [grads[learner.get_param_ref(p)] for p in module.critic.parameters()]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    assert all(learner.get_param_ref(p) in grads for p in module.actor.parameters())
    assert ACTOR not in {k[1] for k in learner._temp_losses}


def test_targets_polyak_and_ema_schedule():
    learner, config = make_learner(ema_start=1, ema_update_every=2, tau=0.1, ema_decay=0.5)
    module = learner.module[MID].unwrapped()

    def step():
        old_target = [p.clone() for p in module.critic_target.parameters()]
        old_ema = [p.clone() for p in module.ema_actor.parameters()]
        loss = learner.compute_loss_for_module(
            module_id=MID, config=config, batch=tiny_batch(), fwd_out={}
        )
        learner.apply_gradients(learner.compute_gradients({MID: loss}))
        return old_target, old_ema

    old_target, _ = step()  # step 1 (<= ema_start): EMA copies the actor exactly
    for t, o, c in zip(module.critic_target.parameters(), old_target, module.critic.parameters()):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * c)
    for e, a in zip(module.ema_actor.parameters(), module.actor.parameters()):
        torch.testing.assert_close(e, a)
    _, old_ema = step()  # step 2: EMA update with decay 0.5
    for e, o, a in zip(module.ema_actor.parameters(), old_ema, module.actor.parameters()):
        torch.testing.assert_close(e, 0.5 * o + 0.5 * a)
    _, old_ema = step()  # step 3: not an EMA step
    for e, o in zip(module.ema_actor.parameters(), old_ema):
        torch.testing.assert_close(e, o)
    assert int(module.train_step) == 3


@pytest.fixture(scope="module")
def reach_datasets(tmp_path_factory):
    """Toy task data where half of the actions are good and half are bad.

    Diffusion BC reproduces both halves; Q-learning must prefer the good ones.
    """
    from rllib_diffusion.data import save_npz

    from .test_dppo_learning import biased_dataset

    root = tmp_path_factory.mktemp("reach")
    good = biased_dataset(num_episodes=100, bias=0.0, seed=0)
    bad = biased_dataset(num_episodes=100, bias=0.9, seed=1000)
    good.episodes += bad.episodes
    return save_npz(good, root / "mixed.npz"), root


@pytest.fixture(scope="module")
def bc_on_mixed(reach_datasets, ray_session) -> float:
    """Diffusion BC's return on the mixed data: the bar the Q-learners must clear."""
    from rllib_diffusion.algorithms.bc import PretrainSettings, pretrain

    path, root = reach_datasets
    bc = pretrain(
        PretrainSettings(
            dataset=path,
            out_dir=str(root / "bc"),
            horizon=1,
            act_steps=1,
            denoising_steps=5,
            hidden_dims=(64, 64),
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            warmup_steps=0,
            eval_episodes=20,
        )
    )
    return bc["evaluation"]["episode_return_mean"]


@pytest.mark.learning
def test_diffusion_ql_beats_diffusion_bc_on_mixed_data(reach_datasets, bc_on_mixed):
    path, root = reach_datasets
    dql = train_offline(
        OfflineSettings(
            dataset=path,
            out_dir=str(root / "dql"),
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            hidden_dims=(64, 64),
            eval_episodes=20,
            num_candidates=20,
        )
    )
    bc_ret = bc_on_mixed
    dql_ret = dql["evaluation"]["episode_return_mean"]
    print(json.dumps({"bc": bc_ret, "dql": dql_ret}))
    assert dql_ret > bc_ret + 1.0, f"Diffusion-QL {dql_ret:.2f} vs BC {bc_ret:.2f}"


@pytest.mark.parametrize("algo", ["diffusion_ql", "idql", "dac", "fql"])
def test_checkpoint_round_trip_identical_actions(algo, reach_datasets, ray_session, tmp_path):
    """Actions, step counters, targets, EMA and optimizer states survive a checkpoint."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.checkpoints import save_algorithm_checkpoint
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.data.offline import prepare_transition_data

    path, _ = reach_datasets
    settings = OfflineSettings(
        dataset=path,
        algo=algo,
        steps_per_iteration=20,
        batch_size=32,
        hidden_dims=(16, 16),
        num_candidates=None if algo == "fql" else 4,
    )
    dataset = load_dataset(path)
    data_path, _ = prepare_transition_data(dataset)
    config, _ = build_offline_config(settings, data_path, dataset.env_id, 2, 1)
    algo_obj = config.build_algo()
    try:
        algo_obj.train()
        learner = algo_obj.learner_group._learner
        module = learner.module[MID]
        optim_state = {k: v["state"]["state"] for k, v in learner._get_optimizer_state().items()}
        ckpt = save_algorithm_checkpoint(algo_obj, tmp_path / "ckpt", {"algorithm": algo})
    finally:
        algo_obj.stop()

    def act(m):
        torch.manual_seed(0)
        with torch.no_grad():
            return m.forward_inference({Columns.OBS: torch.zeros(5, 2)})[Columns.ACTIONS]

    before = act(module)
    loaded, _ = load_policy_module(ckpt, expect_algorithms=(algo,))
    torch.testing.assert_close(act(loaded), before)
    assert int(loaded.train_step) == 20
    restored = registry.get(algo).config_class().algo_class.from_checkpoint(ckpt)
    try:
        r_learner = restored.learner_group._learner
        r_module = r_learner.module[MID]
        torch.testing.assert_close(act(r_module), before)
        assert int(r_module.train_step) == 20
        for name in ("critic_target", "ema_actor"):
            if hasattr(module, name):
                target = getattr(r_module, name).state_dict()
                for k, v in getattr(module, name).state_dict().items():
                    torch.testing.assert_close(target[k], v)
        if algo == "dac":
            torch.testing.assert_close(r_module.dual_eta, module.dual_eta)
        r_optim = {k: v["state"]["state"] for k, v in r_learner._get_optimizer_state().items()}
        assert r_optim.keys() == optim_state.keys()
        for name, state in optim_state.items():
            assert state, f"optimizer {name} has no state after a training iteration"
            for pid, slots in state.items():
                for slot, value in slots.items():
                    np.testing.assert_allclose(r_optim[name][pid][slot], value)
    finally:
        restored.stop()


# ------------------------------------------------------------------------------- IDQL
def make_idql_learner(**training):
    settings = OfflineSettings(
        dataset="unused", algo="idql", hidden_dims=(16, 16), num_candidates=4
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(**training)
    return config.build_learner(), config


def test_idql_losses_match_hand_computation():
    from rllib_diffusion.algorithms.idql.idql_learner import VALUE, expectile_loss

    learner, config = make_idql_learner(expectile=0.8)
    module = learner.module[MID].unwrapped()
    batch = tiny_batch()
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    obs, act = batch[Columns.OBS], batch[Columns.ACTIONS]
    with torch.no_grad():
        xa = torch.cat([obs, act], dim=-1)
        q_t = torch.minimum(*(h(xa).squeeze(-1) for h in module.critic_target.heads))
        u = (q_t - module.value(obs).squeeze(-1)).numpy()
        w = np.where(u < 0, 0.2, 0.8)
        expected_v = float(np.mean(w * u**2))
        y = batch[Columns.REWARDS] + 0.99 * (1 - batch[Columns.TERMINATEDS]) * module.value(
            batch[Columns.NEXT_OBS]
        ).squeeze(-1)
        # The mean over the two heads (the official update_q's).
        heads = module.critic.heads
        expected_q = float(sum(((h(xa).squeeze(-1) - y) ** 2).mean() for h in heads)) / 2
    assert float(learner.metrics.peek((MID, "losses/value_loss"))) == pytest.approx(
        expected_v, rel=1e-5
    )
    assert float(learner.metrics.peek((MID, "losses/critic_loss"))) == pytest.approx(
        expected_q, rel=1e-5
    )
    assert float(expectile_loss(torch.tensor([-1.0, 2.0]), 0.7)) == pytest.approx(
        (0.3 * 1 + 0.7 * 4) / 2
    )
    assert {VALUE, CRITIC, ACTOR} == {k[1] for k in learner._temp_losses}
    learner._temp_losses.clear()


def test_idql_expectile_selection_needs_value_network():
    from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import (
        DiffusionQLModelConfig,
    )
    from rllib_diffusion.modules.model_config import ConfigError

    with pytest.raises(ConfigError, match="value_network"):
        DiffusionQLModelConfig(obs_dim=2, action_dim=1, action_selection="expectile")


def test_acting_can_be_changed_for_evaluation():
    """`evaluate --num-candidates/--action-selection`: N = 1 acts with the EMA actor's own
    sample; a selection the module cannot do, or a module of another family, is refused."""
    from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_rl_module import set_acting
    from rllib_diffusion.modules.model_config import ConfigError

    module = make_idql_learner()[0].module[MID].unwrapped()
    assert module.dql_config.num_candidates == 4
    used = set_acting(module, num_candidates=1, action_selection="expectile")
    assert used == {"num_candidates": 1, "action_selection": "expectile"}
    obs = torch.randn(6, OBS)
    with torch.no_grad():
        torch.manual_seed(0)
        picked = module.select_actions(obs, explore=False)
        torch.manual_seed(0)
        torch.testing.assert_close(picked, module.sample(obs, ema=True))
    dql = make_learner()[0].module[MID].unwrapped()
    with pytest.raises(ConfigError, match="value_network"):
        set_acting(dql, action_selection="expectile")
    with pytest.raises(ConfigError, match="do(es)? not act that way"):
        set_acting(torch.nn.Linear(2, 2), num_candidates=3)


@pytest.mark.learning
def test_idql_beats_diffusion_bc_on_mixed_data(reach_datasets, bc_on_mixed):
    path, root = reach_datasets
    bc_return = bc_on_mixed
    idql = train_offline(
        OfflineSettings(
            dataset=path,
            algo="idql",
            out_dir=str(root / "idql"),
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            hidden_dims=(64, 64),
            eval_episodes=20,
            num_candidates=20,
            # The official EMA (0.999 every step from step 0) still holds ~37% of the
            # initial actor after 1000 steps: this short run acts with the copy schedule.
            knobs={"ema_decay": 0.995, "ema_update_every": 5, "ema_start": 1000},
        )
    )
    ret = idql["evaluation"]["episode_return_mean"]
    print(json.dumps({"bc": bc_return, "idql": ret}))
    assert ret > bc_return + 1.0, f"IDQL {ret:.2f} vs BC {bc_return:.2f}"


# -------------------------------------------------------------------------------- FQL
def test_fql_losses_and_gradient_routing():
    from rllib_diffusion.algorithms.fql.fql_learner import BC_FLOW

    settings = OfflineSettings(
        dataset="unused", algo="fql", hidden_dims=(16, 16), denoising_steps=2
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(alpha=3.0, normalize_q_loss=True)  # the Q term's normalised option
    learner = config.build_learner()
    module = learner.module[MID].unwrapped()
    assert module.fql_config.flow_steps == 4
    batch = tiny_batch()
    torch.manual_seed(0)
    loss = learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    assert {ACTOR, BC_FLOW, CRITIC} == {k[1] for k in learner._temp_losses}
    # The one-step policy's loss: alpha * distillation - Q / mean|Q| (hand computation with
    # the same noise: re-seed and replay the learner's draws).
    torch.manual_seed(0)
    with torch.no_grad():
        torch.randn(8, ACT)  # next-action noise
        _ = torch.rand(8)  # flow-matching time ...
        _ = torch.randn(8, 1, ACT)  # ... and noise
        z = torch.randn(8, ACT)
        raw = module.onestep_raw(batch[Columns.OBS], z)
        a = raw.clamp(-1.0, 1.0)
        target = module.flow_actions(batch[Columns.OBS], z)
        q_pi = module.critic(batch[Columns.OBS], a).mean(0)
        expected = 3.0 * ((raw - target) ** 2).mean() - q_pi.mean() / q_pi.abs().mean()
    assert float(learner.metrics.peek((MID, "losses/actor_loss"))) == pytest.approx(
        float(expected), rel=1e-4
    )
    grads = learner.compute_gradients({MID: loss})
    critic_loss_grads_only = all(
        learner.get_param_ref(p) in grads for p in module.critic.parameters()
    )
    assert critic_loss_grads_only
    # The inference-only module carries only the one-step policy.
    assert module.get_non_inference_attributes() == ["bc_flow", "critic", "critic_target"]


def test_fql_beats_diffusion_bc_on_mixed_data(reach_datasets, bc_on_mixed):
    """The one-step policy must leave the bad half of the BC flow's modes.

    α = 0.1: on this task the Q gap between the modes (≈0.9 per step) is small next to
    |Q| (≈ r / (1 − γ)), so the normalised Q term needs a weak distillation pull
    (α = 10 keeps the policy on the flow's modes; measured 6.2 with the same budget).
    """
    path, root = reach_datasets
    fql = train_offline(
        OfflineSettings(
            dataset=path,
            algo="fql",
            alpha=0.1,
            out_dir=str(root / "fql"),
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            hidden_dims=(64, 64),
            eval_episodes=20,
        )
    )
    ret = fql["evaluation"]["episode_return_mean"]
    print(json.dumps({"bc": bc_on_mixed, "fql": ret}))
    assert ret > bc_on_mixed + 1.0, f"FQL {ret:.2f} vs BC {bc_on_mixed:.2f}"


# -------------------------------------------------------------------------------- DAC
def make_dac_learner(**training):
    settings = OfflineSettings(dataset="unused", algo="dac", hidden_dims=(16, 16))
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(**training)
    return config.build_learner(), config


def test_dac_defaults_from_the_paper():
    learner, config = make_dac_learner()
    module = learner.module[MID].unwrapped()
    assert (config.lcb_rho, config.bc_threshold, config.grad_clip) == (1.5, 1.0, 1.0)  # hopper
    assert module.critic.num_heads == 10 and module.dql_config.num_candidates == 10
    assert float(module.dual_eta) == 1.0


def test_dac_lcb_target_matches_hand_computation():
    from rllib_diffusion.algorithms.dac.dac_learner import lcb_target

    learner, _ = make_dac_learner()
    module = learner.module[MID].unwrapped()
    batch = tiny_batch(n=4)
    # Next actions: a fixed function of the repeated next observation and its sample index.
    counter = {"calls": 0}

    def fake_sample(obs, ema, x_init=None):
        counter["calls"] += 1
        idx = torch.arange(obs.shape[0], dtype=torch.float32).remainder(3).unsqueeze(1)
        return torch.tanh(obs[:, :ACT] + 0.1 * idx)

    module.sample = fake_sample
    y = lcb_target(module, batch, gamma=0.9, rho=1.5, num_samples=3, ddof=1)  # old std
    with torch.no_grad():
        rows = []
        for i in range(4):
            s_next = batch[Columns.NEXT_OBS][i]
            qs = []
            for j in range(3):
                a = torch.tanh(s_next[:ACT] + 0.1 * j)
                xa = torch.cat([s_next, a])[None]
                qs.append(torch.stack([h(xa)[0, 0] for h in module.critic_target.heads]))
            per_head = torch.stack(qs).mean(dim=0)  # (H,)
            lcb = per_head.mean() - 1.5 * per_head.std()
            rows.append(batch[Columns.REWARDS][i] + 0.9 * (1 - batch[Columns.TERMINATEDS][i]) * lcb)
    torch.testing.assert_close(y, torch.stack(rows), rtol=1e-5, atol=1e-5)
    assert counter["calls"] == 1


def test_dac_actor_loss_matches_hand_computation():
    learner, _ = make_dac_learner()
    module = learner.module[MID].unwrapped()
    module.dual_eta.fill_(2.0)
    batch = tiny_batch(n=5)
    obs, act = batch[Columns.OBS], batch[Columns.ACTIONS]
    t = torch.tensor([0, 1, 2, 3, 4])
    noise = torch.randn(5, 1, ACT)
    loss, bc = learner.actor_loss(module, obs, act, t, noise, reduction="sum")  # old sum
    ab = module.schedule.alphas_cumprod[t].view(5, 1, 1)
    a_t = ab.sqrt() * act.unsqueeze(1) + (1 - ab).sqrt() * noise
    # Finite-difference gradient of the mean-over-heads target Q at a_t.
    eps = 1e-3
    grad = torch.zeros_like(a_t)
    with torch.no_grad():
        for d in range(ACT):
            shift = torch.zeros_like(a_t)
            shift[..., d] = eps
            up = module.critic_target(obs, (a_t + shift)[:, 0]).mean(0)
            down = module.critic_target(obs, (a_t - shift)[:, 0]).mean(0)
            grad[:, 0, d] = (up - down) / (2 * eps)
        scale = module.critic_target(obs, act).abs().mean() + 1e-6
        eps_hat = module.actor(a_t, t, obs)
        expected_bc = ((eps_hat - noise) ** 2).sum(dim=(1, 2)).mean()
        expected = (
            2.0 * expected_bc + ((1 - ab).sqrt() * grad / scale * eps_hat).sum(dim=(1, 2)).mean()
        )
    assert float(bc) == pytest.approx(float(expected_bc), rel=1e-5)
    assert float(loss) == pytest.approx(float(expected), rel=1e-3, abs=1e-4)


def test_dac_dual_ascent_direction_and_bounds():
    from rllib_diffusion.algorithms.dac.dac_learner import dual_eta_step

    assert dual_eta_step(1.0, 3.0, lr=0.1, threshold=1.0) == pytest.approx(1.1)  # clipped +1
    assert dual_eta_step(1.0, 0.5, lr=0.1, threshold=1.0) == pytest.approx(0.95)
    assert dual_eta_step(0.001, 0.0, lr=0.1, threshold=1.0) == 0.001
    assert dual_eta_step(100.0, 9.0, lr=0.1, threshold=1.0) == 100.0
    learner, config = make_dac_learner(eta_lr=0.01, bc_threshold=1e9)
    module = learner.module[MID].unwrapped()
    loss = learner.compute_loss_for_module(
        module_id=MID, config=config, batch=tiny_batch(), fwd_out={}
    )
    learner.apply_gradients(learner.compute_gradients({MID: loss}))
    assert float(module.dual_eta) == pytest.approx(0.99)  # BC loss below threshold: η falls


@pytest.mark.learning
def test_dac_beats_diffusion_bc_on_mixed_data(reach_datasets, bc_on_mixed):
    path, root = reach_datasets
    dac = train_offline(
        OfflineSettings(
            dataset=path,
            algo="dac",
            out_dir=str(root / "dac"),
            gradient_steps=1000,
            steps_per_iteration=500,
            batch_size=128,
            hidden_dims=(64, 64),
            eval_episodes=20,
        )
    )
    ret = dac["evaluation"]["episode_return_mean"]
    print(json.dumps({"bc": bc_on_mixed, "dac": ret}))
    assert ret > bc_on_mixed + 1.0, f"DAC {ret:.2f} vs BC {bc_on_mixed:.2f}"
