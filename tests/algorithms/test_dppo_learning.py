"""Learning test: DPPO raises the return of a deliberately weak pretrained policy.

Toy task (``rllib_diffusion/ReachTarget-v0``): reward ``1 - |a - target|`` per step for 10
steps. The pretraining data acts at ``target + 0.5`` (return ≈ 5 of a possible 10), so
diffusion BC learns a biased policy; DPPO must move it towards the target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
from rllib_diffusion.algorithms.dppo.finetune import FinetuneSettings, finetune
from rllib_diffusion.data import Episode, EpisodeDataset, save_npz
from rllib_diffusion.envs.toy import ENV_ID, ReachTargetEnv


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


@pytest.mark.learning
def test_dppo_improves_weak_pretrained_policy(ray_session, isolated_dirs):
    data = save_npz(biased_dataset(), isolated_dirs / "reach.npz")
    bc = pretrain(
        PretrainSettings(
            dataset=data,
            out_dir=str(isolated_dirs / "bc"),
            horizon=1,
            act_steps=1,
            denoising_steps=5,
            hidden_dims=(64, 64),
            gradient_steps=1500,
            steps_per_iteration=500,
            batch_size=128,
            warmup_steps=0,
            eval_episodes=10,
        )
    )
    summary = finetune(
        FinetuneSettings(
            checkpoint=bc["checkpoint"],
            out_dir=str(isolated_dirs / "dppo"),
            env_steps=8000,
            num_envs_per_env_runner=10,
            decisions_per_iteration=500,
            pair_minibatch_size=1000,
            ft_denoising_steps=5,
            actor_lr=1e-3,
            clip=0.1,
            clip_base=0.1,
            eval_interval=0,
            eval_episodes=20,
            checkpoint_interval=0,
        )
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    after = summary["final_evaluation"]["episode_return_mean"]
    print(
        json.dumps(
            {"bc": bc["evaluation"]["episode_return_mean"], "before": before, "after": after}
        )
    )
    assert before < 7.0, "the pretrained policy should be weak (biased data)"
    assert after > before + 1.0, f"DPPO did not improve the policy: {before:.2f} -> {after:.2f}"
