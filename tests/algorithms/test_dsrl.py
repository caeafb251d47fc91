"""DSRL: SAC over the initial noise of a frozen diffusion/flow policy.

Decoder and connector tests use tiny random-weight base checkpoints (no Ray); the RLlib
tests build DSRL on the toy task (``rllib_diffusion/ReachTarget-v0``, chunks of Ta = 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_diffusion.algorithms.dsrl.decoder import decode_noise, load_decoder
from rllib_diffusion.algorithms.dsrl.dsrl_connectors import NoiseToActionChunk
from rllib_diffusion.checkpoints import META_FILE, MODULE_SUBDIR, CheckpointMeta, load_policy_module
from rllib_diffusion.diffusion import sample_chain
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.envs.toy import ENV_ID
from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig
from tests.algorithms.batches import stepped_episode

TA, DA, DO = 2, 1, 2  # toy task: obs [target, t/T], 1-D actions, chunks of 2
N = TA * DA
BOUND = 1.5
DDIM_STEPS = 3


def toy_policy(cfg: DiffusionPolicyConfig, seed: int = 0) -> DiffusionPolicyModule:
    """A freshly initialised (learner-side) toy policy module."""
    torch.manual_seed(seed)
    obs_space, act_space = chunk_spaces(cfg.obs_dim, cfg.horizon, cfg.action_dim)
    return DiffusionPolicyModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=False,
        model_config=cfg.to_dict(),
    )


def save_base_checkpoint(path: Path, module: DiffusionPolicyModule) -> str:
    """``module`` as a DiffusionBC checkpoint (what ``rllib-diffusion pretrain`` writes)."""
    module.save_to_path(str(path / MODULE_SUBDIR))
    cfg = module.policy_config.to_dict()
    meta = CheckpointMeta(algorithm="DiffusionBC", env_id=ENV_ID, policy_config=cfg)
    (path / META_FILE).write_text(meta.to_json())
    return str(path)


def make_base_checkpoint(path: Path, sampler: str, seed: int = 0) -> str:
    """A DiffusionBC checkpoint of an untrained (random-weight) toy policy."""
    cfg = DiffusionPolicyConfig(
        obs_dim=DO,
        action_dim=DA,
        horizon=TA,
        act_steps=TA,
        denoising_steps=5,
        sampler=sampler,
        ddim_steps=4 if sampler == "ddim" else None,
        hidden_dims=(32, 32),
        env_id=ENV_ID,
    )
    return save_base_checkpoint(path, toy_policy(cfg, seed))


@pytest.fixture(scope="module")
def base_checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dsrl_bases")
    return {s: make_base_checkpoint(root / s, s) for s in ("ddpm", "ddim", "flow")}


def reference_chunk(checkpoint: str, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The base policy's deterministic chunk from initial noise ``w``, computed without
    the DSRL code: DDPM bases by DDIM η = 0 over DDIM_STEPS (the official decoding),
    DDIM and flow bases by their own deterministic sampler."""
    base, _ = load_policy_module(checkpoint)
    cfg = base.policy_config
    with torch.no_grad():
        if cfg.sampler != "ddpm":
            return base.sample_actions(obs, deterministic=True, x_init=w)
        return sample_chain(
            lambda x, t: base.ema_net(x, t, obs),
            base.schedule,
            tuple(w.shape),
            method="ddim",
            ddim_steps=DDIM_STEPS,
            clip_x0=cfg.clip_x0,
            deterministic=True,
            x_init=w,
        ).actions


def episodes_at(obs: np.ndarray) -> list[SingleAgentEpisode]:
    """One just-reset episode per row of ``obs``."""
    return [SingleAgentEpisode(observations=[o.astype(np.float32)]) for o in obs]


def connector(checkpoint: str, sampler: str, **kwargs) -> NoiseToActionChunk:
    return NoiseToActionChunk(
        base_checkpoint=checkpoint,
        noise_bound=BOUND,
        ddim_steps=DDIM_STEPS if sampler == "ddpm" else None,
        **kwargs,
    )


def observations(batch: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-0.8, 0.8, batch), rng.uniform(0, 1, batch)].astype(np.float32)


# ---------------------------------------------------------------- decoder / connector
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "flow"])
def test_env_action_is_the_base_policys_deterministic_action_from_w(base_checkpoints, sampler):
    ckpt = base_checkpoints[sampler]
    piece = connector(ckpt, sampler)
    obs = observations()
    squashed = torch.rand(len(obs), N) * 2 - 1
    out = piece(
        rl_module=None, batch={Columns.ACTIONS: squashed}, episodes=episodes_at(obs), explore=True
    )
    w = (BOUND * squashed).reshape(-1, TA, DA)
    expected = reference_chunk(ckpt, torch.as_tensor(obs), w)
    assert out[Columns.ACTIONS_FOR_ENV].shape == (len(obs), TA, DA)
    assert torch.equal(out[Columns.ACTIONS_FOR_ENV], expected)
    # The episode records the noise (SAC's squashed action), not the env action.
    assert torch.equal(out[Columns.ACTIONS], squashed)
    # Deterministic: the same noise decodes to the same chunk.
    again = piece(
        rl_module=None, batch={Columns.ACTIONS: squashed}, episodes=episodes_at(obs), explore=True
    )
    assert torch.equal(again[Columns.ACTIONS_FOR_ENV], expected)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "flow"])
@pytest.mark.parametrize("value", [0.0, 0.4])
def test_constant_noise_policy_reproduces_the_base_policy(base_checkpoints, sampler, value):
    ckpt = base_checkpoints[sampler]
    obs = observations(4, seed=1)
    squashed = torch.full((len(obs), N), value)
    out = connector(ckpt, sampler)(
        rl_module=None, batch={Columns.ACTIONS: squashed}, episodes=episodes_at(obs), explore=True
    )
    w = torch.full((len(obs), TA, DA), BOUND * value)
    assert torch.equal(out[Columns.ACTIONS_FOR_ENV], reference_chunk(ckpt, torch.as_tensor(obs), w))


def test_ddpm_base_is_decoded_with_ddim_and_flow_keeps_its_sampler(base_checkpoints):
    ddpm = load_decoder(base_checkpoints["ddpm"], DDIM_STEPS).policy_config
    assert (ddpm.sampler, ddpm.ddim_steps) == ("ddim", DDIM_STEPS)
    all_steps = load_decoder(base_checkpoints["ddpm"], None).policy_config
    assert (all_steps.sampler, all_steps.ddim_steps) == ("ddim", all_steps.denoising_steps)
    assert load_decoder(base_checkpoints["ddim"], None).policy_config.ddim_steps == 4
    assert load_decoder(base_checkpoints["flow"], DDIM_STEPS).policy_config.sampler == "flow"


class _SquashedModule:
    """Stands in for SAC's module: only its exploration distribution class is used."""

    def get_exploration_action_dist_cls(self):
        return TorchSquashedGaussian


def test_inference_decodes_tanh_of_the_mean(base_checkpoints):
    ckpt = base_checkpoints["flow"]
    obs = observations(3)
    loc, log_std = torch.randn(3, N) * 2, torch.zeros(3, N)
    batch = {
        Columns.ACTIONS: loc,  # RLlib's deterministic SAC action: the raw (unsquashed) mean
        Columns.ACTION_DIST_INPUTS: torch.cat([loc, log_std], dim=-1),
    }
    out = connector(ckpt, "flow")(
        rl_module=_SquashedModule(), batch=batch, episodes=episodes_at(obs), explore=False
    )
    assert torch.allclose(out[Columns.ACTIONS], torch.tanh(loc))
    w = BOUND * torch.tanh(loc).reshape(-1, TA, DA)
    expected = decode_noise(load_decoder(ckpt, None), torch.as_tensor(obs), w)
    assert torch.equal(out[Columns.ACTIONS_FOR_ENV], expected)


def test_warmup_acts_with_clipped_gaussian_noise_then_with_sac(base_checkpoints):
    piece = connector(base_checkpoints["flow"], "flow", init_rollout_steps=2)
    obs = observations(400)
    sac = torch.full((len(obs), N), 0.25)
    for _ in range(2):
        out = piece(
            rl_module=None,
            batch={Columns.ACTIONS: sac.clone()},
            episodes=episodes_at(obs),
            explore=True,
        )
        a = out[Columns.ACTIONS]
        assert not torch.equal(a, sac) and a.abs().max() <= 1.0
        assert (a.abs() == 1.0).any(), "N(0, I) noise beyond the bound is clipped to it"
        assert 0.8 < float((BOUND * a).std()) < 1.1
    out = piece(
        rl_module=None,
        batch={Columns.ACTIONS: sac.clone()},
        episodes=episodes_at(obs),
        explore=True,
    )
    assert torch.equal(out[Columns.ACTIONS], sac)
    piece.set_state({"exploring_steps": 0})
    piece.set_state({"end_warmup": True})
    out = piece(
        rl_module=None,
        batch={Columns.ACTIONS: sac.clone()},
        episodes=episodes_at(obs),
        explore=True,
    )
    assert torch.equal(out[Columns.ACTIONS], sac), "a resumed run does not repeat the warm-up"


def test_zero_noise_policy_decodes_w_equal_zero(base_checkpoints):
    from rllib_diffusion.algorithms.dsrl.decoder import ZeroNoisePolicy

    obs = torch.as_tensor(observations(4))
    policy = ZeroNoisePolicy(load_decoder(base_checkpoints["ddpm"], DDIM_STEPS))
    out = policy.forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
    expected = reference_chunk(base_checkpoints["ddpm"], obs, torch.zeros(4, TA, DA))
    assert torch.equal(out, expected)


def test_episode_replaced_after_its_end_gets_a_zero_observation(base_checkpoints):
    piece = connector(base_checkpoints["flow"], "flow")
    obs = observations(2)
    episodes = episodes_at(obs) + [SingleAgentEpisode()]  # just created, not reset yet
    squashed = torch.zeros(3, N)
    out = piece(rl_module=None, batch={Columns.ACTIONS: squashed}, episodes=episodes, explore=True)
    expected = reference_chunk(
        base_checkpoints["flow"],
        torch.as_tensor(np.r_[obs, np.zeros((1, DO), np.float32)]),
        torch.zeros(3, TA, DA),
    )
    assert torch.equal(out[Columns.ACTIONS_FOR_ENV], expected)


# --------------------------------------------------------------------- RLlib build
def toy_config(checkpoint: str, **training):
    from rllib_diffusion.algorithms.dsrl import DSRLConfig
    from rllib_diffusion.envs.chunking import register_chunked_env

    policy = DiffusionPolicyConfig.from_dict(load_policy_module(checkpoint)[1].policy_config)
    obs_space, act_space = chunk_spaces(DO, TA, DA)
    return (
        DSRLConfig()
        .environment(
            register_chunked_env(),
            env_config=policy.env_config(),
            observation_space=obs_space,
            action_space=act_space,
        )
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .training(base_checkpoint=checkpoint, **{"init_rollout_steps": 3, "utd": 2, **training})
        .rl_module(model_config={"fcnet_hiddens": [32, 32]})
        .reporting(min_sample_timesteps_per_iteration=30, min_time_s_per_iteration=0)
    )


def stored_rewards_match(episodes, decoder=None) -> None:
    """Each recorded (obs, action) explains its reward exactly: toy reward of the chunk
    ``sum_i 1 - |chunk_i - target|``, the chunk being the action itself (DSRL-NA) or the
    decoded noise ``decode(obs, BOUND * a)`` (DSRL-SAC)."""
    for episode in episodes:
        n = len(episode)
        rows = {
            Columns.OBS: episode.get_observations(slice(0, n)),
            Columns.ACTIONS: episode.get_actions(),
            Columns.REWARDS: episode.get_rewards(),
        }
        stored_rows_match(rows, decoder)


def stored_rows_match(rows: dict, decoder=None) -> None:
    """:func:`stored_rewards_match` for one batch of rows (e.g. a replay sample)."""
    obs = torch.as_tensor(np.asarray(rows[Columns.OBS], np.float32))
    actions = torch.as_tensor(np.asarray(rows[Columns.ACTIONS], np.float32))
    n = len(obs)
    assert actions.shape == (n, N)
    chunk = actions if decoder is None else decode_noise(decoder, obs, BOUND * actions)
    chunk = chunk.reshape(n, TA).clamp(-1, 1)
    predicted = (1 - (chunk - obs[:, :1]).abs()).sum(dim=1)
    np.testing.assert_allclose(predicted, np.asarray(rows[Columns.REWARDS]), atol=1e-5)


def test_sac_module_acts_on_noise_and_episodes_and_replay_hold_the_noise(
    base_checkpoints, ray_session
):
    config = toy_config(base_checkpoints["ddpm"], noise_aliased=False)
    # One update round: rollout_fragment_length (2) vector steps of 2 envs, utd updates.
    assert config.training_intensity == 2 * 256 / (2 * 2 * 1)
    assert config.num_steps_sampled_before_learning_starts == 3 * 2
    algo = config.build_algo()
    try:
        runner = algo.env_runner
        assert runner.module.action_space.shape == (N,)
        assert float(runner.module.action_space.high.max()) == BOUND
        assert runner.env.single_action_space.shape == (TA, DA)
        result = algo.train()
        learner = result["learners"]["default_policy"]
        assert np.isfinite(learner["qf_loss"]) and learner["num_module_steps_trained"] > 0
        # True env steps: each decision executes Ta = 2 toy steps (10-step episodes).
        runners = result["env_runners"]
        assert runners["true_env_steps_sampled"] == TA * runners["num_env_steps_sampled"]
        # Episodes and the replay hold the noise that, decoded, produced each reward.
        decoder = load_decoder(base_checkpoints["ddpm"], config.decoder_ddim_steps)
        sampled = runner.sample(num_timesteps=6, explore=True)
        assert all(np.abs(np.asarray(ep.get_actions())).max() <= 1.0 for ep in sampled)
        stored_rewards_match(sampled, decoder)
        with pytest.raises(AssertionError):
            stored_rewards_match(sampled)  # not the env actions
        stored_rows_match(algo.transitions.sample(16), decoder)
        # The temperature is part of the learner state (RLlib's SAC leaves it out).
        from rllib_diffusion.algorithms.dsrl.dsrl_learner import LOG_ALPHA

        state = algo.learner_group.get_state(components="learner")["learner"]
        assert state[LOG_ALPHA]["default_policy"] != 0.0  # moved from log(initial α = 1)
        state[LOG_ALPHA]["default_policy"] = -1.25
        algo.learner_group.set_state({"learner": state})
        again = algo.learner_group.get_state(components="learner")["learner"]
        assert again[LOG_ALPHA]["default_policy"] == pytest.approx(-1.25)
    finally:
        algo.stop()


def test_every_dsrl_knob_reaches_the_config(base_checkpoints):
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.dsrl.finetune import dsrl_config
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings

    values = {
        "noise_aliased": False, "noise_bound": 2.0, "decoder_ddim_steps": 3,
        "init_rollout_steps": 7, "utd": 3, "noise_critic_grad_steps": 2, "actor_lr": 1e-3,
        "critic_lr": 2e-3,
        "alpha_lr": 3e-3, "tau": 0.01, "gamma": 0.9, "initial_alpha": 0.5,
        "target_entropy": -1.0, "train_batch_size_per_learner": 64,
        "rollout_fragment_length": 5,
    }  # fmt: skip
    model = {"sac_hidden_dims": (16, 8), "sac_activation": "relu", "sac_layer_norm": False}
    assert {k.name for k in registry.get("dsrl").knobs()} == set(values) | set(model)
    settings = FinetuneSettings.of(
        algo="dsrl", checkpoint=base_checkpoints["flow"], **values, **model
    )
    config = dsrl_config(settings)
    for name, value in values.items():
        assert getattr(config, name) == value, name
    rllib_model = config.model_config
    assert rllib_model["fcnet_hiddens"] == [16, 8] and rllib_model["fcnet_activation"] == "relu"
    assert rllib_model["fcnet_use_layernorm"] is False


def test_config_refuses_what_dsrl_derives_or_needs(base_checkpoints):
    from rllib_diffusion.algorithms.dsrl import DSRLConfig

    with pytest.raises(ValueError, match="derives training_intensity from utd"):
        DSRLConfig().training(training_intensity=3.0)
    with pytest.raises(ValueError, match="from init_rollout_steps"):
        DSRLConfig().training(num_steps_sampled_before_learning_starts=10)
    config = toy_config(base_checkpoints["flow"], noise_bound=0.0)
    with pytest.raises(ValueError, match="noise_bound must be > 0"):
        config.validate()
    config = toy_config(base_checkpoints["flow"]).environment(normalize_actions=True)
    with pytest.raises(ValueError, match="normalize_actions and clip_actions"):
        config.validate()


def test_finetune_dsrl_run_checkpoint_and_resume(base_checkpoints, ray_session, tmp_path):
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune
    from rllib_diffusion.checkpoints import read_checkpoint_meta

    def run(env_steps: int, resume: bool) -> dict:
        return finetune(
            FinetuneSettings.of(
                algo="dsrl",
                checkpoint=base_checkpoints["ddim"],
                out_dir=str(tmp_path / "run"),
                env_steps=env_steps,
                # The resumed half samples on a remote EnvRunner (its own decoder).
                num_env_runners=1 if resume else 0,
                num_envs_per_env_runner=2,
                decisions_per_iteration=32,  # 8 rounds of 2 vector steps × 2 envs
                eval_interval=2,
                eval_episodes=2,
                checkpoint_interval=1,
                init_rollout_steps=3,
                utd=2,
                noise_bound=1.2,
                sac_hidden_dims=(32, 32),
                resume=resume,
            )
        )

    first = run(128, resume=False)
    lines = first["progress"]
    assert lines[0]["iteration"] == 0 and "eval_return_mean" in lines[0]  # the base policy
    assert first["start_return_zero_noise"] == lines[0]["eval_return_zero_noise"]
    assert [x["env_steps"] for x in lines[1:]] == [64, 128]
    assert "eval_return_mean" in lines[2] and "qf_loss" in lines[2]
    meta = read_checkpoint_meta(first["checkpoint"])
    assert meta.algorithm == "DSRL" and meta.env_steps == 128
    assert meta.pretrained_checkpoint == str(Path(base_checkpoints["ddim"]).resolve())
    assert meta.hyperparameters == {
        "noise_aliased": True,
        "noise_bound": 1.2,
        "decoder_ddim_steps": 5,
    }
    assert first["final_evaluation"]["num_episodes"] == 2
    assert first["start_evaluation"]["episode_return_mean"] == lines[0]["eval_return_mean"]

    second = run(192, resume=True)
    assert second["resumed"]["from_iteration"] == 2
    # The replay came back with the checkpoint (a fresh one would hold one iteration's).
    held = [x["replay_transitions"] for x in second["progress"][1:]]
    assert held == [32, 64, 96], held
    assert [x["env_steps"] for x in second["progress"][1:]] == [64, 128, 192]
    assert read_checkpoint_meta(second["checkpoint"]).env_steps == 192

    # `rllib-diffusion evaluate` acts with the noise policy through the base policy.
    from rllib_diffusion.evaluation import evaluate_checkpoint

    evaluated = evaluate_checkpoint(second["checkpoint"], episodes=2, seed=30_000)
    assert evaluated["algorithm"] == "DSRL"
    assert evaluated["episode_return_mean"] == second["final_evaluation"]["episode_return_mean"]


# ------------------------------------------------------------------------- learning
def wide_bc_policy(
    steps: int = 600, offsets: tuple[float, float] = (-0.1, 0.8), seed: int = 0
) -> DiffusionPolicyModule:
    """Diffusion BC (DDPM, K = 10, Ta = 1) of toy-task data acting at ``target + U(offsets)``:
    a deliberately weak policy whose noise → action map still reaches the target near one
    end of its noise range, while its middle (``w = 0``) acts ≈ 0.35 off. Trained here
    with the BC loss (the module's ``forward_train``), without the pretraining pipeline,
    to keep the test short."""
    from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET

    cfg = DiffusionPolicyConfig(
        obs_dim=DO, action_dim=1, horizon=1, act_steps=1, denoising_steps=10,
        hidden_dims=(64, 64), env_id=ENV_ID,
    )  # fmt: skip
    module = toy_policy(cfg, seed)
    rng = np.random.default_rng(seed)
    target = rng.uniform(-0.8, 0.8, (20_000, 1))
    obs = np.c_[target, rng.integers(0, 10, (20_000, 1)) / 10].astype(np.float32)
    actions = np.clip(target + rng.uniform(*offsets, target.shape), -1, 1)
    obs_t, act_t = torch.as_tensor(obs), torch.as_tensor(actions, dtype=torch.float32)
    optim = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(obs), 256))
        out = module.forward_train({Columns.OBS: obs_t[idx], Columns.ACTIONS: act_t[idx, None]})
        loss = torch.nn.functional.mse_loss(out[PREDICTION], out[TARGET])
        optim.zero_grad()
        loss.backward()
        optim.step()
    module.ema_net.load_state_dict(module.net.state_dict())
    return module


@pytest.mark.parametrize(
    "noise_aliased",
    [
        pytest.param(True, marks=[pytest.mark.learning, pytest.mark.slow], id="dsrl-na"),
        pytest.param(False, marks=[pytest.mark.learning, pytest.mark.slow], id="dsrl-sac"),
    ],
)
def test_dsrl_improves_a_weak_bc_policy(noise_aliased, ray_session, tmp_path):
    """DSRL-NA and DSRL-SAC lift a weak BC policy whose middle noise (w = 0) is no better.

    The official knobs except, for a short run on a bandit-like task: networks 64 × 64,
    γ 0.5, initial temperature 0.05, learning rates 2e-3, UTD 8 per 4 vector steps of 4
    envs, batch 128. Measured (2-core machine loaded by other jobs; both variants 260 s,
    58 s of CPU): 6.98 (w = 0: 6.88) → 8.51 (NA, noise within ±1) and → 9.85 (SAC, ±1.5)
    in 800 env steps; with the official UTD and temperature and 400 env steps neither
    variant moved (7.0 → 7.1)."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    base = save_base_checkpoint(tmp_path / "bc", wide_bc_policy())
    summary = finetune(
        FinetuneSettings.of(
            algo="dsrl",
            checkpoint=base,
            out_dir=str(tmp_path / "dsrl"),
            env_steps=800,
            num_env_runners=0,
            num_envs_per_env_runner=4,
            decisions_per_iteration=200,
            eval_interval=0,
            eval_episodes=20,
            checkpoint_interval=0,
            init_rollout_steps=25,
            utd=8,
            rollout_fragment_length=4,
            gamma=0.5,
            initial_alpha=0.05,
            actor_lr=2e-3,
            critic_lr=2e-3,
            train_batch_size_per_learner=128,
            sac_hidden_dims=(64, 64),
            noise_aliased=noise_aliased,
        )
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    zero = summary["start_return_zero_noise"]  # what an untrained deterministic actor plays
    after = summary["final_evaluation"]["episode_return_mean"]
    print(f"DSRL toy: base policy {before:.2f} (w = 0: {zero:.2f}) -> {after:.2f}")
    assert max(before, zero) < 7.5, "the base policy should be weak, also at w = 0"
    assert after > max(before, zero) + 1.0, (
        f"DSRL did not improve: {before:.2f}/{zero:.2f} -> {after:.2f}"
    )


# --------------------------------------------------------------------------- DSRL-NA
def test_noise_aliased_is_the_default_with_its_official_bound():
    from rllib_diffusion.algorithms.dsrl import DSRLConfig

    config = DSRLConfig()
    assert config.noise_aliased and config.resolved_noise_bound == 1.0
    assert DSRLConfig().training(noise_aliased=False).resolved_noise_bound == 1.5
    assert DSRLConfig().training(noise_bound=2.5).resolved_noise_bound == 2.5


def na_module(checkpoint: str):
    """DSRL-NA's learner module for ``checkpoint``, decoder loaded (no Ray)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    config = toy_config(checkpoint, noise_bound=BOUND, decoder_ddim_steps=None)
    obs_space, _ = chunk_spaces(DO, TA, DA)
    spec = config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (obs_space, None)})
    module = spec.build()
    module.make_target_networks()  # what the learner does (TargetNetworkAPI)
    module.decoder.load_state_dict(load_decoder(checkpoint, config.decoder_ddim_steps).state_dict())
    return module, config


def test_noise_critic_distils_the_env_critic_on_decoded_gaussian_noise(base_checkpoints):
    module, config = na_module(base_checkpoints["ddim"])
    obs = torch.as_tensor(observations(6))
    torch.manual_seed(3)
    preds_out, targets_out = module.distillation_pairs(obs)
    torch.manual_seed(3)
    w = torch.randn(6, N)  # unclipped N(0, I), as the official update_noise_critic
    chunk = reference_chunk(base_checkpoints["ddim"], obs, w.reshape(6, TA, DA))
    env_batch = {Columns.OBS: obs, Columns.ACTIONS: chunk.reshape(6, N)}
    noise_batch = {Columns.OBS: obs, Columns.ACTIONS: w / BOUND}
    with torch.no_grad():
        targets = [
            module._qf_forward_train_helper(env_batch, module.qf_encoder, module.qf),
            module._qf_forward_train_helper(env_batch, module.qf_twin_encoder, module.qf_twin),
        ]
        preds = [
            module._qf_forward_train_helper(noise_batch, module.noise_qf_encoder, module.noise_qf),
            module._qf_forward_train_helper(
                noise_batch, module.noise_qf_twin_encoder, module.noise_qf_twin
            ),
        ]
    assert torch.allclose(targets_out, torch.stack(targets), atol=1e-6)
    assert torch.allclose(preds_out, torch.stack(preds), atol=1e-6)
    assert preds_out.requires_grad and not targets_out.requires_grad


def test_noise_aliased_actor_term_trains_only_the_actor(base_checkpoints):
    module, _ = na_module(base_checkpoints["flow"])
    obs = torch.as_tensor(observations(8))
    batch = {
        Columns.OBS: obs,
        Columns.NEXT_OBS: obs,
        Columns.ACTIONS: torch.rand(8, N) * 2 - 1,
    }
    out = module.forward_train(batch)
    out["q_curr"].sum().backward()
    assert all(p.grad is None for p in module.noise_critic_parameters())
    assert all(p.grad is None for p in module.qf.parameters())
    assert any(p.grad is not None for p in module.pi.parameters())
    assert not out["q_target_next"].requires_grad


def test_noise_aliased_run_stores_env_actions_and_trains_the_noise_critic(
    base_checkpoints, ray_session
):
    ckpt = base_checkpoints["ddpm"]
    algo = toy_config(ckpt).build_algo()
    try:
        component = "learner/rl_module/default_policy"

        def module_weights() -> dict:
            state = algo.learner_group.get_state(components=component)
            return state["learner"]["rl_module"]["default_policy"]

        initial = module_weights()
        result = algo.train()
        learner = result["learners"]["default_policy"]
        assert np.isfinite(learner["noise_qf_loss"]) and learner["num_module_steps_trained"] > 0
        # The learner's decoder is the base policy's, frozen through training.
        base, _ = load_policy_module(ckpt)
        weights = module_weights()
        for key, value in base.ema_net.state_dict().items():
            assert np.array_equal(np.asarray(weights[f"decoder.ema_net.{key}"]), value.numpy())
        noise_critic = [k for k in weights if k.startswith("noise_qf")]
        assert noise_critic and any(
            not np.array_equal(weights[k], initial[k]) for k in noise_critic
        ), "the noise critic was not trained"
        # EnvRunners hold neither the noise critic nor the decoder.
        assert not hasattr(algo.env_runner.module, "noise_qf")
        assert not hasattr(algo.env_runner.module, "decoder")
        # Episodes and the replay hold the decoded env actions (the critics' inputs).
        stored_rewards_match(algo.env_runner.sample(num_timesteps=6, explore=True))
        stored_rows_match(algo.transitions.sample(16))
    finally:
        algo.stop()


# ------------------------------------------------------- official critics and losses
def test_dsrl_losses_match_hand_computation():
    from rllib_diffusion.algorithms.dsrl.dsrl_learner import (
        actor_loss,
        critic_loss,
        distillation_loss,
        soft_td_target,
        temperature_loss,
    )

    alpha = torch.tensor([0.5])
    y = soft_td_target(
        torch.tensor([1.0, 2.0]),
        torch.tensor([False, True]),
        torch.tensor([10.0, 20.0]),
        torch.tensor([-1.0, 3.0]),
        alpha,
        0.9,
    )
    # 1 + 0.9 (10 − 0.5 · (−1)) = 10.45; the terminated row keeps its reward only.
    assert torch.allclose(y, torch.tensor([10.45, 2.0]))
    # 0.5 · mean(10², 1²) = 25.25 (RLlib's Huber(δ=1) would give mean(9.5, 0.5) = 5).
    assert critic_loss(torch.tensor([20.45, 1.0]), y).item() == pytest.approx(25.25)
    logp = torch.tensor([-2.0, 4.0], requires_grad=True)
    # mean(0.5 · [−2, 4] − [3, 5]) = mean(−4, −3) = −3.5
    assert actor_loss(logp, torch.tensor([3.0, 5.0]), alpha).item() == pytest.approx(-3.5)
    log_alpha = torch.log(torch.tensor([0.5])).requires_grad_()
    # −mean(log 0.5 · ([−2, 4] + 0)) = −log 0.5
    loss = temperature_loss(log_alpha, logp, 0.0)
    assert loss.item() == pytest.approx(-np.log(0.5))
    loss.backward()
    assert logp.grad is None and log_alpha.grad.item() == pytest.approx(-1.0)
    preds = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [3.0, 6.0]], requires_grad=True)
    # 0.5 · (mean(1, 4) + mean(0, 4)) = 2.25
    distill = distillation_loss(preds, targets)
    assert distill.item() == pytest.approx(2.25)
    distill.backward()
    assert targets.grad is None and preds.grad is not None


def test_noise_critic_distils_on_the_official_share_of_sac_steps():
    from rllib_diffusion.algorithms.dsrl import DSRLConfig
    from rllib_diffusion.algorithms.dsrl.dsrl_learner import distils_at

    config = DSRLConfig()
    assert (config.utd, config.noise_critic_grad_steps) == (20, 10)
    steps = [distils_at(k, config.utd, config.noise_critic_grad_steps) for k in range(40)]
    assert sum(steps[:20]) == sum(steps[20:]) == 10
    assert steps[:4] == [False, True, False, True]
    assert [distils_at(k, 5, 1) for k in range(5)] == [False] * 4 + [True]
    assert all(distils_at(k, 4, 9) for k in range(8))


def test_critics_are_the_official_mlp_on_obs_and_action():
    """SB3's critic (official DSRL): Linear → LayerNorm → tanh on concat(obs, action),
    three times, then a linear output; not RLlib's multi-stream encoder."""
    import gymnasium as gym
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rllib_diffusion.algorithms.dsrl import DSRLConfig
    from rllib_diffusion.algorithms.dsrl.dsrl_rl_module import ConcatQEncoder, DSRLTorchRLModule

    obs_dim, n = 11, 12
    model_config = DSRLConfig().training(noise_aliased=False).model_config
    module = RLModuleSpec(
        module_class=DSRLTorchRLModule,
        observation_space=gym.spaces.Box(-1, 1, (obs_dim,)),
        action_space=gym.spaces.Box(-1, 1, (n,)),
        model_config=model_config,
    ).build()
    for encoder, head in ((module.qf_encoder, module.qf), (module.qf_twin_encoder, module.qf_twin)):
        assert isinstance(encoder, ConcatQEncoder)
        layers = [
            m for m in encoder.modules() if isinstance(m, torch.nn.Linear | torch.nn.LayerNorm)
        ]
        kinds = [(type(m).__name__, tuple(m.weight.shape)) for m in layers]
        assert kinds == [
            ("Linear", (128, obs_dim + n)),
            ("LayerNorm", (128,)),
            ("Linear", (128, 128)),
            ("LayerNorm", (128,)),
            ("Linear", (128, 128)),
            ("LayerNorm", (128,)),
        ]
        assert sum(isinstance(m, torch.nn.Tanh) for m in encoder.modules()) == 3
        head_layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        assert [tuple(m.weight.shape) for m in head_layers] == [(1, 128)]
    # Q recomputed by hand from the layers: tanh(LN(W x + b)) three times, then W x + b.
    s, a = torch.rand(5, obs_dim) * 2 - 1, torch.rand(5, n) * 2 - 1
    x = torch.cat([s, a], dim=-1)
    linear, norms = layers[0::2], layers[1::2]
    for lin, norm in zip(linear, norms, strict=True):
        x = torch.tanh(norm(lin(x)))
    expected = head_layers[0](x).squeeze(-1)
    batch = {Columns.OBS: s, Columns.ACTIONS: a}
    got = module._qf_forward_train_helper(batch, module.qf_twin_encoder, module.qf_twin)
    assert torch.allclose(got, expected, atol=1e-6)


# ------------------------------------------------------------------------- replay
def test_transition_replay_holds_each_step_with_its_next_observation():
    from rllib_diffusion.algorithms.dsrl.replay import TransitionReplay

    obs = np.arange(8, dtype=np.float32).reshape(4, 2)  # s0..s3
    actions = np.array([[0.1], [0.2], [0.3]], np.float32)
    replay = TransitionReplay(capacity=100, seed=0)
    assert replay.add([stepped_episode(obs, actions, [1.0, 2.0, 3.0], terminated=True)]) == 3
    assert replay.add([stepped_episode(obs[:2] + 10, actions[:1], [4.0], terminated=False)]) == 1
    assert len(replay) == 4
    rows = {k: v[:4] for k, v in replay.data.items()}
    np.testing.assert_array_equal(rows[Columns.OBS], np.concatenate([obs[:3], obs[:1] + 10]))
    np.testing.assert_array_equal(rows[Columns.NEXT_OBS], np.concatenate([obs[1:], obs[1:2] + 10]))
    np.testing.assert_array_equal(rows[Columns.REWARDS], [1, 2, 3, 4])
    # Terminal only at the end of the terminated episode; the cut one bootstraps.
    np.testing.assert_array_equal(rows[Columns.TERMINATEDS], [False, False, True, False])
    batch = replay.sample(1000)
    assert batch[Columns.OBS].shape == (1000, 2) and batch[Columns.ACTIONS].shape == (1000, 1)
    # Uniform over the 4 transitions, and each row stays one transition.
    counts = np.bincount(batch[Columns.REWARDS].astype(int), minlength=5)[1:]
    assert counts.min() > 200
    np.testing.assert_array_equal(batch[Columns.REWARDS] == 3, batch[Columns.TERMINATEDS])


def test_transition_replay_is_a_ring_of_its_capacity():
    from rllib_diffusion.algorithms.dsrl.replay import TransitionReplay

    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    actions = np.zeros((5, 1), np.float32)
    replay = TransitionReplay(capacity=3, seed=0)
    replay.add([stepped_episode(obs, actions, [1.0, 2.0, 3.0, 4.0, 5.0], terminated=False)])
    assert len(replay) == 3
    assert set(replay.sample(200)[Columns.REWARDS].tolist()) == {3.0, 4.0, 5.0}
    replay.add([stepped_episode(obs[:2], actions[:1], [6.0], terminated=False)])
    assert set(replay.sample(200)[Columns.REWARDS].tolist()) == {4.0, 5.0, 6.0}


def test_transition_replay_state_restores_the_same_future_samples():
    """A replay restored from its state holds the same transitions, write slot and RNG:
    its next samples and writes equal the original's."""
    from rllib_diffusion.algorithms.dsrl.replay import TransitionReplay

    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    actions = np.zeros((5, 1), np.float32)
    replay = TransitionReplay(capacity=4, seed=3)
    replay.add([stepped_episode(obs, actions, [1.0, 2.0, 3.0, 4.0, 5.0], terminated=False)])
    replay.sample(7)
    restored = TransitionReplay(capacity=4, seed=99)
    restored.set_state(replay.get_state())
    assert (len(restored), restored.next) == (len(replay), replay.next) == (4, 0)
    for r in (replay, restored):
        r.add([stepped_episode(obs[:2], actions[:1], [6.0], terminated=True)])
    a, b = replay.sample(50), restored.sample(50)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert set(a[Columns.REWARDS].tolist()) == {3.0, 4.0, 5.0, 6.0}
    with pytest.raises(ValueError, match="capacity"):
        TransitionReplay(capacity=5).set_state(replay.get_state())


@pytest.mark.slow
def test_two_cpu_learners_train_dsrl_with_identical_weights(base_checkpoints, ray_session):
    """``--num-learners 2 --num-env-runners 0`` (DDP on CPU, 2 CPUs): DSRL's flat-replay
    batches go through ``LearnerGroup.update`` to both learners, which end each SAC and
    distillation step with the same weights, and the step changes the noise actor."""
    import time

    from rllib_diffusion.algorithms.dsrl.finetune import dsrl_config
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, weight_sums

    s = FinetuneSettings.of(
        algo="dsrl",
        checkpoint=base_checkpoints["ddim"],
        num_env_runners=0,
        num_envs_per_env_runner=2,
        num_learners=2,
        decisions_per_iteration=32,
        init_rollout_steps=3,
        utd=2,
        noise_bound=1.2,
        sac_hidden_dims=(32, 32),
        eval_interval=0,
    )
    config = dsrl_config(s)
    deadline = time.monotonic() + 60  # actors of earlier tests are gone
    while ray_session.available_resources().get("CPU", 0.0) < 2.0:
        assert time.monotonic() < deadline, ray_session.available_resources()
        time.sleep(0.5)
    algo = config.build_algo()
    try:
        before = [r.get() for r in algo.learner_group.foreach_learner(weight_sums)]
        for _ in range(2):  # the first iteration ends the warm-up
            algo.train()
        after = [r.get() for r in algo.learner_group.foreach_learner(weight_sums)]
    finally:
        algo.stop()
    assert len(after) == 2 and before[0] == before[1]
    assert after[0] == after[1], {
        k: (after[0][k], after[1][k]) for k in after[0] if after[0][k] != after[1][k]
    }
    changed = [k for k in after[0] if after[0][k] != before[0][k]]
    assert any("pi" in k for k in changed), changed
