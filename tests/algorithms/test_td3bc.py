"""TD3+BC against the official code (github.com/sfujim/TD3_BC, ``main.py``/``TD3_BC.py``):
the defaults and networks the CLI builds, each loss by hand, the clipped smoothing noise,
the delayed actor/target updates, state normalisation (fit, checkpoint round trip, used
when acting), a CLI run resumed after a kill and evaluated, and a one-line refusal."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_diffusion.algorithms.actor_critic import ensemble_mse
from rllib_diffusion.algorithms.offline_q.train import build_offline_config
from rllib_diffusion.algorithms.td3bc import TD3BCConfig
from rllib_diffusion.algorithms.td3bc.td3bc_learner import (
    clipped_double_q,
    is_policy_step,
    smoothed_target_action,
    target_policy_noise,
    td3bc_actor_loss,
)
from rllib_diffusion.algorithms.td3bc.td3bc_rl_module import (
    TD3BCModelConfig,
    TD3BCModule,
    state_statistics,
)
from rllib_diffusion.cli import build_parser, main, offline_settings_from_args
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import transition_batch

from ..conftest import use_data_root

OBS, ACT = 3, 2
MID = "default_policy"


def _cli_learner(*flags: str, dataset=None):
    """The learner, module and config of ``rllib-diffusion offline --algo td3bc <flags>``."""
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", "td3bc", *flags])
    settings = offline_settings_from_args(args)
    config, _ = build_offline_config(settings, "/x", "Hopper-v5", OBS, ACT, dataset=dataset)
    learner = config.build_learner()
    return learner, learner.module[MID].unwrapped(), config


def _fake_dataset(seed: int = 0) -> SimpleNamespace:
    """Two episodes of 5 and 3 steps (6 and 4 observations) with far-from-standard states,
    recorded on Hopper-v5 with no env kwargs."""
    rng = np.random.default_rng(seed)
    eps = [
        SimpleNamespace(observations=rng.normal(5.0, 3.0, size=(n + 1, OBS)).astype(np.float32))
        for n in (5, 3)
    ]
    return SimpleNamespace(episodes=eps, env_id="Hopper-v5", env_kwargs={})


def test_cli_defaults_and_networks_are_the_official_ones():
    """Official: 256-256 ReLU actor with tanh output, twin 256-256 ReLU critics on
    concat(s, a), Adam 3e-4 both, batch 256, γ 0.99, τ 0.005, noise 0.2 / clip 0.5,
    policy_freq 2, α 2.5, states normalised, no grad clip."""
    learner, module, config = _cli_learner()
    assert (config.alpha, config.policy_noise, config.noise_clip, config.policy_freq) == (
        2.5,
        0.2,
        0.5,
        2,
    )
    assert (config.gamma, config.tau, config.train_batch_size_per_learner) == (0.99, 0.005, 256)
    assert (config.actor_lr, config.critic_lr, config.grad_clip) == (3e-4, 3e-4, None)
    assert config.normalize_states is True
    for net in (module.actor, *module.critic.heads):
        layers = [layer.body for layer in net.hidden]
        assert [body[0].out_features for body in layers] == [256, 256]
        assert all(isinstance(body[2], torch.nn.ReLU) for body in layers)
    assert isinstance(module.actor.out_activation, torch.nn.Tanh)
    assert module.critic.heads[0].hidden[0].body[0].in_features == OBS + ACT
    assert len(module.critic.heads) == 2
    for name in ("actor", "critic"):
        assert learner.get_optimizer(MID, name).param_groups[0]["lr"] == pytest.approx(3e-4)


def test_actor_loss_by_hand_with_lambda_detached():
    """Q_1 = (2, −4): λ = 2.5 / mean|Q| = 2.5/3, −λ·mean Q = 2.5/3; π − a has squares 1
    and 0, 0, 0 over 2×2 entries → BC 1/4. dL/dQ_b = −λ/B (no gradient through λ)."""
    q = torch.tensor([2.0, -4.0], requires_grad=True)
    pi = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    loss, lam, bc = td3bc_actor_loss(q, pi, torch.zeros(2, 2), alpha=2.5)
    assert float(lam) == pytest.approx(2.5 / 3)
    assert float(bc) == pytest.approx(0.25)
    assert float(loss.detach()) == pytest.approx(2.5 / 3 + 0.25)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.full((2,), -(2.5 / 3) / 2))


def test_critic_target_and_loss_by_hand():
    """min over the two target heads, r + γ(1 − d)·min, Σ_h MSE (official
    ``mse(Q1, y) + mse(Q2, y)``). Hand: min((1, 5), (3, 2)) = (1, 2); y = (1 + 0.5·1,
    0 + 0) = (1.5, 0); Q = ((1.5, 1), (0.5, 0)) → MSE 0.5 and 0.5 → 1."""
    q_next = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert clipped_double_q(q_next).tolist() == [1.0, 2.0]
    y = torch.tensor([1.0, 0.0]) + 0.5 * (1 - torch.tensor([0.0, 1.0])) * clipped_double_q(q_next)
    assert y.tolist() == [1.5, 0.0]
    assert float(ensemble_mse(torch.tensor([[1.5, 1.0], [0.5, 0.0]]), y)) == pytest.approx(1.0)


def test_target_smoothing_noise_is_clipped_and_the_action_bounded():
    """ε = clip(N(0, std²), ±clip): with std 10 almost every draw hits ±0.5, none beyond;
    ã′ = clip(π′ + ε, ±max_action)."""
    torch.manual_seed(0)
    eps = target_policy_noise(torch.zeros(1000, 3), std=10.0, clip=0.5)
    assert float(eps.abs().max()) == 0.5
    assert float((eps.abs() == 0.5).float().mean()) > 0.9
    assert eps.min() < 0 < eps.max()
    a = smoothed_target_action(torch.tensor([[0.9, -0.9]]), torch.tensor([[0.5, -0.5]]), 1.0)
    assert a.tolist() == [[1.0, -1.0]]


def test_learner_losses_match_an_independent_computation():
    """Step 2 of the learner (an actor step), replaying its noise draw: critic loss and
    actor loss recomputed from the networks with the official equations; the smoothing
    noise is policy_noise × max_action, clipped at noise_clip × max_action."""
    learner, module, config = _cli_learner("--hidden-dims", "16", "16", dataset=_fake_dataset())
    module.train_step += 1  # the next step is the 2nd: an actor step
    batch = transition_batch(8, OBS, ACT, seed=1)
    torch.manual_seed(0)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    critic_loss = learner._temp_losses[(MID, "critic")]
    actor_loss = learner._temp_losses[(MID, "actor")]
    learner._temp_losses.clear()

    def norm(s):
        return (s - module.obs_mean) / module.obs_std

    torch.manual_seed(0)
    a = batch[Columns.ACTIONS]
    noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
    with torch.no_grad():
        s2 = norm(batch[Columns.NEXT_OBS])
        a2 = (torch.tanh(module.actor_target.out(module.actor_target.hidden(s2))) + noise).clamp(
            -1, 1
        )
        sa2 = torch.cat([s2, a2], -1)
        q_t = torch.min(*[h(sa2).squeeze(-1) for h in module.critic_target.heads])
        y = batch[Columns.REWARDS] + 0.99 * (1 - batch[Columns.TERMINATEDS]) * q_t
        sa = torch.cat([norm(batch[Columns.OBS]), a], -1)
        q1, q2 = (h(sa).squeeze(-1) for h in module.critic.heads)
        ref_critic = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
        pi = torch.tanh(module.actor.out(module.actor.hidden(norm(batch[Columns.OBS]))))
        q_pi = module.critic.heads[0](torch.cat([norm(batch[Columns.OBS]), pi], -1)).squeeze(-1)
        ref_actor = -2.5 / q_pi.abs().mean() * q_pi.mean() + ((pi - a) ** 2).mean()
    assert float(critic_loss.detach()) == pytest.approx(float(ref_critic), rel=1e-5)
    assert float(actor_loss.detach()) == pytest.approx(float(ref_actor), rel=1e-5)


class Killed(Exception):
    """Stands in for SIGKILL: raised inside the training loop."""


def _snapshot(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _moved(net, before) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(net.parameters(), before))


@pytest.mark.parametrize("policy_freq", [2, 3])
def test_actor_and_targets_update_exactly_every_policy_freq_steps(policy_freq):
    """Official ``total_it % policy_freq == 0``: the critic steps every time; the actor
    and both targets only at steps policy_freq, 2·policy_freq, ... (and not before)."""
    learner, module, _ = _cli_learner(
        "--hidden-dims", "8", "--policy-freq", str(policy_freq), "--batch-size", "8"
    )
    rows = {k: v.numpy() for k, v in transition_batch(8, OBS, ACT, seed=2).items()}
    batch = MultiAgentBatch({MID: SampleBatch(rows)}, env_steps=8)
    pattern = []
    for step in range(1, 2 * policy_freq + 1):
        before = {
            n: _snapshot(getattr(module, n))
            for n in ("actor", "critic", "actor_target", "critic_target")
        }
        learner.update(batch=batch, minibatch_size=8, num_epochs=1)
        moved = {n: _moved(getattr(module, n), b) for n, b in before.items()}
        assert moved["critic"], step
        assert moved["actor"] == moved["actor_target"] == moved["critic_target"], (step, moved)
        pattern.append(moved["actor"])
        assert is_policy_step(step, policy_freq) == moved["actor"]
    assert pattern == [s % policy_freq == 0 for s in range(1, 2 * policy_freq + 1)]
    assert int(module.train_step) == 2 * policy_freq


def test_state_statistics_fit_round_trip_and_acting():
    """μ, σ + 1e-3 of the transitions' states (not the final observations); the stats
    travel in the model config dict and the module's state (a checkpoint), and the
    acting forward uses them: π(s) = tanh(f((s − μ)/σ))."""
    mean, std = state_statistics(np.array([[0.0], [2.0]]))
    assert (mean, std) == ([1.0], [pytest.approx(1.001)])
    data = _fake_dataset()
    model = TD3BCConfig().model_config_for_data(TD3BCModelConfig(OBS, ACT), data)
    states = np.concatenate([e.observations[:-1] for e in data.episodes])
    np.testing.assert_allclose(model.obs_mean, states.mean(0), rtol=1e-6)
    np.testing.assert_allclose(model.obs_std, states.std(0) + 1e-3, rtol=1e-6)
    off = TD3BCConfig().training(normalize_states=False).model_config_for_data(model, data)
    assert off.obs_mean is None and off.obs_std is None
    assert TD3BCModelConfig.from_dict(json.loads(json.dumps(model.to_dict()))) == model

    module = TD3BCModule(
        observation_space=None, action_space=None, inference_only=True, model_config=model.to_dict()
    )
    obs = torch.as_tensor(states[:4])
    with torch.no_grad():
        acted = module.forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
        normed = (obs - torch.tensor(model.obs_mean)) / torch.tensor(model.obs_std)
        ref = module.actor(normed)  # tanh output layer
        raw = module.actor(obs)
    torch.testing.assert_close(acted, ref)
    assert not torch.allclose(acted, raw, atol=1e-3)
    fresh = TD3BCModule(
        observation_space=None, action_space=None, inference_only=True,
        model_config=TD3BCModelConfig(OBS, ACT).to_dict(),
    )  # fmt: skip
    fresh.set_state(module.get_state())
    torch.testing.assert_close(fresh.obs_mean, module.obs_mean)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.forward_inference({Columns.OBS: obs})[Columns.ACTIONS], acted
        )


def _dataset_with_flat_dims() -> SimpleNamespace:
    """``_fake_dataset`` with state dim 1 constant (2.5) and dim 2 moving by 1e-4 a step."""
    data = _fake_dataset()
    for ep in data.episodes:
        ep.observations[:, 1] = 2.5
        ep.observations[:, 2] = 7.0 + 1e-4 * np.arange(len(ep.observations))
    return data


def test_near_constant_state_dims_are_named_with_the_fix():
    """The warning names the constant and the near-constant dim (their std, the value they
    sit at) and the fix; healthy data, or normalisation off, gives none."""
    model = TD3BCConfig().model_config_for_data(
        TD3BCModelConfig(OBS, ACT), _dataset_with_flat_dims()
    )
    message = TD3BCConfig().data_warning(model)
    assert message.startswith(f"warning: 2 of {OBS} state dims are near-constant")
    assert "1 (constant at 2.5)" in message and "2 (std " in message
    assert "1000 d" in message and "--normalize-states false" in message
    healthy = TD3BCConfig().model_config_for_data(TD3BCModelConfig(OBS, ACT), _fake_dataset())
    assert TD3BCConfig().data_warning(healthy) is None
    off = TD3BCConfig().training(normalize_states=False)
    assert off.data_warning(off.model_config_for_data(model, _dataset_with_flat_dims())) is None


def test_offline_prints_the_state_warning_before_training(isolated_dirs, monkeypatch, capsys):
    """``train_offline`` prints the config's data warning once on stderr before training
    (Ray and the training loop stubbed out)."""
    from rllib_diffusion.algorithms.offline_q import train as train_module
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, train_offline
    from rllib_diffusion.data import Episode, EpisodeDataset
    from rllib_diffusion.data import offline as offline_data

    episodes = []
    for ep in _dataset_with_flat_dims().episodes:
        n = len(ep.observations) - 1
        done = np.arange(n) == n - 1
        episodes.append(
            Episode(
                observations=ep.observations,
                actions=np.zeros((n, ACT), np.float32),
                rewards=np.arange(n, dtype=np.float32),
                terminations=done,
                truncations=np.zeros(n, dtype=bool),
            )
        )
    dataset = EpisodeDataset(episodes=episodes, name="test/flat-v0", env_id="Hopper-v5")
    trained = []
    monkeypatch.setattr(
        train_module, "start_offline_run", lambda s: (isolated_dirs, 0.0, dataset, "Hopper-v5")
    )
    monkeypatch.setattr(offline_data, "prepare_transition_data", lambda d, seed: ("unused", 8))
    monkeypatch.setattr(
        train_module, "run_offline_training", lambda *a, **k: trained.append(capsys.readouterr())
    )
    train_offline(OfflineSettings(dataset="unused", algo="td3bc", out_dir=str(isolated_dirs)))
    ((_, err),) = trained
    assert [line for line in err.splitlines() if "near-constant" in line] != []
    assert err.count("near-constant") == 1 and err.startswith("[offline] warning: 2 of")


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--policy-freq", "0"], "--policy-freq"),
        (["--noise-clip", "-1"], "--noise-clip"),
        (["--alpha", "-2"], "--alpha"),
    ],
)
def test_bad_td3bc_knobs_are_refused_in_one_line(flags, names, tmp_path, capsys):
    """Refused by the CLI before any data is read or Ray starts: exit 2, one line."""
    with pytest.raises(ConfigError, match=names) as err:
        _cli_learner(*flags)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    argv = ["offline", "--dataset", "/nonexistent", "--algo", "td3bc", "--out", str(out)]
    assert main([*argv, *flags]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and names in err_lines[0], err_lines
    assert not out.exists()


@pytest.mark.slow  # 145 s here with the machine loaded (2 cores, load ≈ 30)
def test_cli_run_killed_then_resumed_and_evaluated(
    tiny_dataset, ray_session, tmp_path, monkeypatch, capsys
):
    """``offline --algo td3bc`` killed in iteration 2 (checkpoint at 1): ``--resume``
    trains iteration 2 again and ends at exactly the budget, with the state statistics
    in the checkpoint; ``evaluate`` acts with the saved module."""
    from rllib_diffusion.algorithms import offline_run
    from rllib_diffusion.checkpoints import load_policy_module, read_checkpoint_meta

    root, dataset_id = tiny_dataset
    use_data_root(monkeypatch, root)
    out = tmp_path / "run"
    argv = ["offline", "--dataset", dataset_id, "--algo", "td3bc", "--out", str(out)]
    argv += ["--gradient-steps", "40", "--steps-per-iteration", "20", "--batch-size", "32"]
    argv += ["--hidden-dims", "16", "16", "--eval-episodes", "1", "--checkpoint-interval", "1"]
    real = offline_run.offline_progress_line

    def line_or_kill(result, it, **kw):
        if it == 2:
            raise Killed("killed in iteration 2")
        return real(result, it, **kw)

    with monkeypatch.context() as m:
        m.setattr(offline_run, "offline_progress_line", line_or_kill)
        with pytest.raises(Killed):
            main(argv)
    assert read_checkpoint_meta(out / "checkpoint")["iteration"] == 1
    assert main([*argv, "--resume"]) == 0
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [p["gradient_steps"] for p in progress] == [20, 40]
    module, meta = load_policy_module(out / "checkpoint", expect_algorithms=("td3bc",))
    assert int(module.train_step) == 40 and meta["iteration"] == 2
    assert meta.model_config["obs_mean"] is not None
    torch.testing.assert_close(module.obs_std, torch.tensor(meta.model_config["obs_std"]))
    assert {"loss", "q_mean", "target_mean"} <= set(progress[-1])
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint"), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out.lower()
