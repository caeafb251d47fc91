"""Micro-benchmark: sampling 256 transitions from RLlib's EpisodeReplayBuffer vs from
``rllib_diffusion.algorithms.replay.TransitionReplay`` (the reason the online phase
keeps its own numpy buffer). 200 Hopper-sized episodes (310 steps, 11-dim obs, 3-dim
actions). Prints milliseconds per sample.

    OMP_NUM_THREADS=1 python benchmarks/replay_buffer_sampling.py
"""

from __future__ import annotations

import time

import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from rllib_diffusion.algorithms.online import episode_transitions
from rllib_diffusion.algorithms.replay import TransitionReplay


def main(num_episodes: int = 200, length: int = 310, batch: int = 256, reps: int = 20) -> None:
    rng = np.random.default_rng(0)
    episodes = [
        SingleAgentEpisode(
            observations=list(rng.normal(size=(length + 1, 11)).astype(np.float32)),
            actions=list(rng.normal(size=(length, 3)).astype(np.float32)),
            rewards=list(rng.normal(size=length)),
            terminated=True,
            len_lookback_buffer=0,
        )
        for _ in range(num_episodes)
    ]
    erb = EpisodeReplayBuffer(capacity=1_000_000)
    erb.add(episodes)
    erb.sample(num_items=batch, n_step=1)
    t = time.perf_counter()
    for _ in range(reps):
        erb.sample(num_items=batch, n_step=1)
    erb_ms = 1000 * (time.perf_counter() - t) / reps

    ours = TransitionReplay(1_000_000)
    ours.add_columns(episode_transitions(episodes))
    t = time.perf_counter()
    for _ in range(reps * 10):
        ours.sample(batch)
    ours_ms = 1000 * (time.perf_counter() - t) / (reps * 10)
    print(f"EpisodeReplayBuffer.sample({batch}): {erb_ms:.2f} ms")
    print(f"TransitionReplay.sample({batch}): {ours_ms:.3f} ms")


if __name__ == "__main__":
    main()
