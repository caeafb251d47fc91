"""The 2-D multimodal Avoid task: env rules, routes, scripted demos, dataset, mode metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rllib_diffusion.avoid_modes import path_stats, rollout_module, route_stats
from rllib_diffusion.collect.avoid_demos import (
    DEMO_ROUTES,
    AvoidDemonstrator,
    demo_episodes,
    run_demo_episode,
    write_avoid_dataset,
)
from rllib_diffusion.envs.avoid import (
    ENV_ID,
    GOAL_Y,
    M5_ENV_ID,
    AvoidEnv,
    draw_scene,
    gap_index,
)
from rllib_diffusion.envs.tasks import make_env


def _run(env: AvoidEnv, policy, seed: int = 0):
    obs, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, r, terminated, truncated, info = env.step(policy(obs))
        total += r
        steps += 1
    return total, steps, terminated, truncated, info


def _go_around(x_target: float):
    """Move sideways to ``x_target`` first, then straight up."""

    def policy(obs):
        dx = x_target - obs[0]
        return np.array([np.clip(dx / 0.02, -1, 1), 0.0 if abs(dx) > 0.005 else 1.0])

    return policy


def test_make_env_makes_it_and_it_is_deterministic_given_a_seed():
    env = make_env(ENV_ID)
    assert env.observation_space.shape == (2,) and env.action_space.shape == (2,)
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    env.close()


@pytest.mark.filterwarnings("ignore::UserWarning")  # the checker's advice
def test_passes_gymnasium_s_env_checker_and_chunked_env_is_recreated_from_its_spec():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    from rllib_diffusion.envs.chunking import make_chunked_env

    check_env(gym.make(ENV_ID, render_mode="rgb_array").unwrapped, skip_render_check=False)
    env = make_chunked_env({"env_id": ENV_ID, "horizon": 4})
    check_env(env)
    again = gym.make(env.spec)
    np.testing.assert_array_equal(again.reset(seed=1)[0], env.reset(seed=1)[0])


def test_collision_ends_the_episode_without_success():
    env = AvoidEnv(start_noise=0.0)
    total, steps, terminated, truncated, info = _run(env, lambda o: np.array([0.0, 1.0]))
    assert terminated and not truncated
    assert info["collision"] and not info["success"]
    assert total == 0.0
    # Stopped before the row-1 obstacle (0.5, -0.10, r 0.03) + agent radius 0.01.
    assert info["position"][1] < -0.10 - 0.04 + 1e-9
    assert steps < 10
    assert info["route"] == (-1, -1, -1)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2))


def test_a_fast_step_cannot_jump_over_an_obstacle():
    env = AvoidEnv(start_noise=0.0, max_step=0.5)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.array([0.0, 1.0]))  # -0.28 -> 0.22 through row 1
    assert terminated and info["collision"]


def test_reaching_the_goal_is_success_with_reward_one():
    env = AvoidEnv(start_noise=0.0)
    total, _, terminated, truncated, info = _run(env, _go_around(0.25))
    assert terminated and not truncated and info["success"] and not info["collision"]
    assert total == 1.0
    assert info["position"][1] >= GOAL_Y
    assert info["route"] == (0, 0, 0) and info["route_name"] == "0-0-0"


def test_standing_still_is_truncated_at_the_episode_limit():
    env = AvoidEnv(max_episode_steps=7)
    total, steps, terminated, truncated, info = _run(env, lambda o: np.zeros(2))
    assert (steps, terminated, truncated, info["success"], total) == (7, False, True, False, 0.0)


def test_route_codes_differ_for_left_and_right_passes():
    left = _run(AvoidEnv(start_noise=0.0), _go_around(0.25))[-1]
    right = _run(AvoidEnv(start_noise=0.0), _go_around(0.75))[-1]
    assert left["success"] and right["success"]
    assert left["route"] == (0, 0, 0) and right["route"] == (1, 2, 3)
    assert [gap_index(x, 2) for x in (0.3, 0.4, 0.6, 0.7)] == [0, 1, 2, 3]


def test_shaping_is_off_by_default_and_adds_progress_when_on():
    shaped = _run(AvoidEnv(start_noise=0.0, shaping=1.0), _go_around(0.25))[0]
    assert 1.9 < shaped < 2.1  # 1 for success + about 1 for the progress to the line


def test_render_draws_obstacles_and_the_path():
    env = AvoidEnv(render_mode="rgb_array", width=64, height=64)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert ((img == (220, 40, 40)).all(-1)).sum() > 5  # obstacles
    assert (
        (draw_scene([np.array([[0.25, 0.0], [0.25, 0.3]])], 64, 64) == (40, 80, 220)).all(-1)
    ).any()


def test_the_demonstrator_takes_each_route_it_is_told():
    env = AvoidEnv()
    for k, route in enumerate(DEMO_ROUTES):
        ep = run_demo_episode(env, AvoidDemonstrator(), seed=k, route=route)
        assert ep["success"] and ep["route"] == route


def test_scripted_demos_succeed_and_use_all_routes_about_equally():
    routes = {"-".join(map(str, r)) for r in DEMO_ROUTES}
    assert len(routes) == 8
    for balanced in (True, False):
        eps, _ = demo_episodes(160, seed=0, balanced=balanced, keep_failures=True)
        stats = route_stats(eps)
        assert stats["success_rate"] >= 0.95
        assert set(stats["route_counts"]) == routes
        assert max(stats["route_frequencies"].values()) < 0.2  # 1/8 expected each
        assert stats["route_entropy"] > 0.95 * np.log(8)
        if balanced:  # the 8 routes in turn: 160 / 8 each
            assert set(stats["route_counts"].values()) == {20}


def test_dataset_round_trips_through_the_reader(tmp_path: Path, monkeypatch):
    from rllib_diffusion.data import load_minari
    from rllib_diffusion.data.minari_io import read_extra_metadata

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    summary = write_avoid_dataset("test/avoid/demos-v0", 12, seed=5, progress=False)
    ds = load_minari("test/avoid/demos-v0")
    assert ds.env_id == ENV_ID and len(ds.episodes) == 12
    assert (ds.ref_min_score, ds.ref_max_score) == (0.0, 1.0)
    assert ds.num_transitions == summary["transitions"]
    again, _ = demo_episodes(12, seed=5)
    for ep, raw in zip(ds.episodes, again, strict=True):
        assert ep.observations.shape == (len(raw["actions"]) + 1, 2)
        np.testing.assert_allclose(ep.actions, raw["actions"], atol=1e-6)
        np.testing.assert_allclose(ep.observations, raw["observations"], atol=1e-6)
        assert ep.terminations[-1] and ep.rewards[-1] == 1.0 and ep.rewards[:-1].sum() == 0
    meta = read_extra_metadata("test/avoid/demos-v0", "avoid_routes")
    assert meta["route_counts"] == summary["route_counts"] and meta["successes"] == 12
    json.dumps(summary)


def test_route_stats_counts_routes_on_hand_built_rollouts():
    eps = [
        {"success": True, "route": (0, 0, 0)},
        {"success": True, "route": (0, 0, 0)},
        {"success": True, "route": (1, 2, 3)},
        {"success": True, "route": (0, 1, 1)},
        {"success": False, "route": (0, -1, -1)},  # crashed into row 2: not a route
    ]
    s = route_stats(eps)
    assert s["episodes"] == 5 and s["successes"] == 4 and s["success_rate"] == 0.8
    assert s["num_routes"] == 3
    assert s["route_counts"] == {"0-0-0": 2, "0-1-1": 1, "1-2-3": 1}
    assert list(s["route_counts"]) == ["0-0-0", "0-1-1", "1-2-3"]
    assert s["route_frequencies"]["0-0-0"] == 0.5
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    assert s["route_entropy"] == pytest.approx(expected)
    assert s["route_entropy_normalized"] == pytest.approx(expected / np.log(24))
    assert s["failure_routes"] == {"0-x-x": 1}
    single = route_stats([{"success": True, "route": (1, 1, 1)}] * 3)
    assert (single["num_routes"], single["route_entropy"]) == (1, 0.0)
    assert route_stats([])["success_rate"] == 0.0


def test_path_stats_measure_wall_hugging_and_row_crossings_by_hand():
    """Rows at y = -0.10, 0.08, 0.26; x bounds 0.2/0.8, edge margin 0.02."""
    wall = np.array([[0.5, -0.28], [0.21, -0.1], [0.2, 0.1], [0.2, 0.3], [0.3, 0.45]])
    gap = np.array([[0.5, -0.28], [0.3, -0.05], [0.35, 0.1], [0.27, 0.3], [0.3, 0.45]])
    eps = [
        {"success": True, "path": wall},
        {"success": True, "path": gap},
        {"success": False, "path": np.full((5, 2), 0.2)},  # failures are not counted
    ]
    s = path_stats(eps)
    assert s["edge_step_fraction"] == pytest.approx(3 / 10)  # wall rows 1-3 (x <= 0.22)
    assert s["row_crossing_x"] == pytest.approx([(0.21 + 0.3) / 2, (0.2 + 0.35) / 2, 0.235])
    short = path_stats([{"success": True, "path": np.array([[0.5, -0.28], [0.79, 0.0]])}])
    assert short["edge_step_fraction"] == pytest.approx(0.5)  # x >= 0.78 is the right wall
    assert short["row_crossing_x"] == [0.79, None, None]
    assert path_stats(eps[2:]) == {"edge_step_fraction": None, "row_crossing_x": [None] * 3}


class _ScriptedModule(torch.nn.Module):
    """Writes actions itself (like the diffusion modules): left to x < 0.27, then up."""

    def __init__(self, horizon: int) -> None:
        super().__init__()
        self.horizon = horizon
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward_inference(self, batch):
        left = (batch["obs"][:, 0] > 0.27).float()
        a = torch.stack([-left, 1 - left], dim=-1)
        return {"actions": a[:, None, :].repeat(1, self.horizon, 1)}


def test_rollout_module_reports_routes_success_and_paths():
    env_config = {"env_id": ENV_ID, "horizon": 2, "act_steps": 2}
    eps = rollout_module(_ScriptedModule(2), env_config, num_episodes=3, seed=1)
    assert [e["success"] for e in eps] == [True] * 3
    assert {e["route_name"] for e in eps} == {"0-0-0"}
    for e in eps:
        assert e["path"].shape == (e["length"] + 1, 2) and e["path"][-1, 1] >= GOAL_Y
    s = route_stats(eps)
    assert (s["success_rate"], s["num_routes"]) == (1.0, 1)


def _rewards(env: AvoidEnv, policy, seed: int = 0):
    """Per-step rewards and infos of one episode, and whether it terminated."""
    env.reset(seed=seed)
    rewards, infos = [], []
    terminated = truncated = False
    while not (terminated or truncated):
        _, r, terminated, truncated, info = env.step(policy(env.position))
        rewards.append(r)
        infos.append(info)
    return np.array(rewards), infos, terminated


def test_d3il_reward_pays_per_step_for_the_rewarded_gap_and_the_finish():
    """The reference runs' reward (``AvoidM5-v0``): +1 per step once row 3 (y 0.26) was
    crossed in gap 0, +1 per step above y = 0.4; 100 steps, never terminated."""
    env = make_env(M5_ENV_ID, start_noise=0.0).unwrapped
    rewards, infos, terminated = _rewards(env, _go_around(0.3))
    ys = np.array([i["position"][1] for i in infos])
    expected = (ys >= 0.26).astype(float) + (ys > 0.4)
    assert not terminated and len(rewards) == 100
    np.testing.assert_array_equal(rewards, expected)
    assert rewards.max() == 2.0 and infos[-1]["route"] == (0, 0, 0)
    first = int(np.argmax(rewards == 2.0))  # success from the first step earning 2 on
    assert [i["success"] for i in infos] == [t >= first for t in range(100)]
    # The same kind of path through row 3's gap 3 (x 0.7) earns only the finish.
    rewards, infos, _ = _rewards(env, _go_around(0.7))
    ys = np.array([i["position"][1] for i in infos])
    np.testing.assert_array_equal(rewards, (ys > 0.4).astype(float))
    assert rewards.max() == 1.0 and infos[-1]["route"] == (1, 2, 3) and not infos[-1]["success"]


def test_d3il_reward_penalises_the_workspace_edge_and_every_step_after_a_collision():
    env = make_env(M5_ENV_ID, start_noise=0.0).unwrapped
    rewards, infos, _ = _rewards(env, _go_around(0.2))  # along the left edge: never paid
    at_edge = np.array([i["position"][0] <= 0.2 for i in infos])
    np.testing.assert_array_equal(rewards, np.where(at_edge, -0.1, 0.0))
    assert at_edge.sum() > 50 and not infos[-1]["success"]
    rewards, infos, terminated = _rewards(env, lambda p: np.array([0.0, 1.0]))  # row 1
    hit = [i["collision"] for i in infos].index(True)
    assert not terminated and len(rewards) == 100
    np.testing.assert_array_equal(rewards, [0.0] * hit + [-0.1] * (100 - hit))


def test_avoid_reward_kinds_are_checked():
    assert make_env(ENV_ID).unwrapped.reward_kind == "success"
    with pytest.raises(ValueError, match="reward in"):
        AvoidEnv(reward="dense")
    with pytest.raises(ValueError, match="rewarded_gap"):
        AvoidEnv(reward="d3il", rewarded_gap=4)


def test_demos_can_be_restricted_to_the_routes_of_some_row3_gaps():
    from rllib_diffusion.collect.avoid_demos import routes_through

    m1 = routes_through((0, 1))  # the reference's avoid_m1 data (d56)
    assert m1 == tuple(r for r in DEMO_ROUTES if r[2] in (0, 1)) and len(m1) == 4
    episodes, _ = demo_episodes(8, routes=m1)
    assert sorted(tuple(e["route"]) for e in episodes) == sorted(m1 * 2)
    with pytest.raises(ValueError, match="no demonstrated route"):
        routes_through((3, 3)[:0])
