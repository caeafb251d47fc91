"""Learning tests: DPPO raises the return of a deliberately weak pretrained policy, for
every denoiser × sampler (MLP, UNet) × (DDPM, DDIM-5; K′ = its default: 10 DDPM steps of
K = 10, all 5 DDIM steps). Measured in one session on a loaded 2-core machine (load
15–20): MLP-DDPM 199 s including the shared MLP pretraining, MLP-DDIM 52 s after it,
UNet-DDPM 910 s including the UNet pretraining, UNet-DDIM 271 s after it. MLP-DDIM alone
(the default suite's one, pretraining included), later and less loaded: 39 s.

Toy task (``rllib_diffusion/ReachTarget-v0``): reward ``1 - |a - target|`` per step for 10
steps. The pretraining data acts at ``target + 0.5`` (return ≈ 5 of a possible 10), so
diffusion BC learns a biased policy; DPPO must move it towards the target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune
from rllib_diffusion.data import Episode, EpisodeDataset
from rllib_diffusion.envs.toy import ENV_ID, ReachTargetEnv
from tests.algorithms.batches import pretrain_biased


def biased_dataset(num_episodes: int = 200, bias: float = 0.5, seed: int = 0) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    env = ReachTargetEnv()
    episodes = []
    for i in range(num_episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards = [obs], [], []
        for _ in range(env.horizon):
            a = np.clip(obs[:1] + bias + rng.normal(0, 0.05, 1), -1, 1).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            observations.append(obs)
            actions.append(a)
            rewards.append(r)
        T = len(actions)
        episodes.append(
            Episode(
                observations=np.stack(observations),
                actions=np.stack(actions),
                rewards=np.asarray(rewards, np.float32),
                terminations=np.zeros(T, bool),
                truncations=np.r_[np.zeros(T - 1, bool), True],
            )
        )
    return EpisodeDataset(episodes=episodes, env_id=ENV_ID, name="reach-biased")


#: Toy-task learning rates: 10× the defaults (1e-4 MLP, 1e-5 UNet) for a short run, keeping
#: their ratio (the UNet moves the policy much further per Adam step).
ACTOR_LR = {"mlp": 1e-3, "unet": 1e-4}


@pytest.fixture(scope="module")
def weak_policies(ray_session, tmp_path_factory):
    """Diffusion BC (K = 10, DDPM) on the biased data, per network, built on first use."""
    root = tmp_path_factory.mktemp("dppo_learning")
    cache: dict[str, dict] = {}

    def get(network: str) -> dict:
        if network not in cache:
            steps = 1500 if network == "mlp" else 1000
            cache[network] = pretrain_biased(
                root, f"bc_{network}", denoising_steps=10, network=network, gradient_steps=steps
            )
        return cache[network]

    return get


def _combo(network: str, sampler: str, slow: bool):
    marks = [pytest.mark.learning] + ([pytest.mark.slow] if slow else [])
    return pytest.param(network, sampler, marks=marks, id=f"{network}-{sampler}")


@pytest.mark.parametrize(
    "network,sampler",
    [
        # Default suite: the cheapest combination (DDIM: 5 network calls per action).
        _combo("mlp", "ddpm", slow=True),
        _combo("mlp", "ddim", slow=False),
        _combo("unet", "ddpm", slow=True),
        _combo("unet", "ddim", slow=True),
    ],
)
def test_dppo_improves_weak_pretrained_policy(network, sampler, weak_policies, tmp_path):
    bc = weak_policies(network)
    summary = finetune(
        FinetuneSettings.of(
            checkpoint=bc["checkpoint"],
            out_dir=str(tmp_path / "dppo"),
            env_steps=8000,
            num_envs_per_env_runner=10,
            decisions_per_iteration=500,
            pair_minibatch_size=1000,
            use_ddim=sampler == "ddim",
            ddim_steps=5 if sampler == "ddim" else None,
            actor_lr=ACTOR_LR[network],
            clip=0.1,
            clip_base=0.1,
            eval_interval=0,
            eval_episodes=20,
            checkpoint_interval=0,
        )
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    after = summary["final_evaluation"]["episode_return_mean"]
    lines = summary["progress"][1:]
    print(
        json.dumps(
            {
                "combo": f"{network}-{sampler}",
                "k_ft": summary["model_config"]["ft_denoising_steps"],
                "bc": bc["evaluation"]["episode_return_mean"],
                "before": before,
                "after": after,
                "approx_kl": [x.get("approx_kl") for x in lines],
            }
        )
    )
    assert summary["model_config"]["ft_denoising_steps"] == (5 if sampler == "ddim" else 10)
    assert all(x["ratio_first_minibatch_max_dev"] < 1e-4 for x in lines)
    assert all(x["actor_update_norm"] > 0 for x in lines)
    assert before < 7.0, "the pretrained policy should be weak (biased data)"
    assert after > before + 1.0, f"DPPO did not improve the policy: {before:.2f} -> {after:.2f}"
