"""robomimic tasks on robosuite: envs, scripted demos, HDF5 round trip, success rate."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("robosuite", reason="needs robosuite (scripts/setup.sh installs it)")
pytest.importorskip("h5py")

from rllib_diffusion.data.robomimic_io import DEFAULT_LOW_DIM_KEYS, load_robomimic_hdf5  # noqa: E402
from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS, task_for  # noqa: E402
from rllib_diffusion.envs.tasks import make_env  # noqa: E402

LIFT = "robomimic/Lift-v0"
#: DPPO's robomimic configs: obs_dim, action_dim, max_episode_steps.
DPPO = {
    "robomimic/Lift-v0": (19, 7, 300),
    "robomimic/Can-v0": (23, 7, 300),
    "robomimic/Square-v0": (23, 7, 400),
    "robomimic/Transport-v0": (59, 14, 800),
}


@pytest.fixture(scope="module")
def lift_env():
    env = make_env(LIFT)
    yield env
    env.close()


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    """Two scripted Lift demos written to a robomimic file, and the in-memory episodes."""
    from rllib_diffusion.collect.robot_demos import (
        ScriptedPickPlace,
        run_episode,
        write_robomimic_hdf5,
    )
    from rllib_diffusion.envs.robosuite_tasks import RobosuiteTaskEnv

    env = RobosuiteTaskEnv("Lift")
    policy = ScriptedPickPlace("lift")
    demos = [run_episode(env, policy, seed, 300) for seed in (0, 1)]
    path = write_robomimic_hdf5(
        tmp_path_factory.mktemp("robot") / "lift.hdf5", demos, env.env_args()
    )
    yield path, demos, env
    env.close()


@pytest.mark.parametrize("env_id", ["robomimic/Can-v0", "robomimic/Transport-v0"])
def test_task_table_matches_dppo(env_id):
    task = ROBOT_TASKS[env_id]
    assert (task.obs_dim, task.action_dim, task.max_episode_steps) == DPPO[env_id]
    # Keys in DPPO's (= robomimic_io's default) order, robot1_* only for two arms.
    assert list(task.obs_keys) == [
        k for k in DEFAULT_LOW_DIM_KEYS if len(task.robots) > 1 or not k.startswith("robot1")
    ]
    assert task_for(env_id.split("/")[1].split("-")[0].lower()) is task


def test_lift_observation_is_dppo_keys_in_order(lift_env):
    obs, info = lift_env.reset(seed=0)
    assert lift_env.observation_space.shape == (19,) and lift_env.action_space.shape == (7,)
    assert lift_env.spec.max_episode_steps == 300 and info == {"success": False}
    raw = lift_env.unwrapped.raw_observation()
    # object = robosuite's object-state: cube pos, quat, gripper-to-cube.
    expected = np.concatenate(
        [raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"]]
        + [raw["cube_pos"], raw["cube_quat"], raw["gripper_to_cube_pos"]]
    )
    np.testing.assert_allclose(obs, expected.astype(np.float32))
    assert obs.dtype == np.float32 and lift_env.observation_space.contains(obs)
    # Seeded resets place the cube reproducibly; other seeds elsewhere.
    again, _ = lift_env.reset(seed=0)
    other, _ = lift_env.reset(seed=1)
    np.testing.assert_array_equal(obs, again)
    assert not np.allclose(obs[9:12], other[9:12])


def test_reward_is_sparse_success(lift_env):
    lift_env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, info = lift_env.step(np.zeros(7, np.float32))
        assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)
    # Lift the cube 10 cm by hand: the next step is a success and ends the episode.
    sim = lift_env.unwrapped.robosuite_env.sim
    qpos = np.array(sim.data.get_joint_qpos("cube_joint0"))
    qpos[2] += 0.10
    sim.data.set_joint_qpos("cube_joint0", qpos)
    sim.forward()
    _, reward, terminated, truncated, info = lift_env.step(np.zeros(7, np.float32))
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_dppo_training_env_pays_every_solved_step_and_never_ends_early():
    """DPPO's robomimic reward (reference ``RobomimicLowdimWrapper``: ``done`` always
    False): the fine-tuning envs (``ROBOMIMIC_ENV_KWARGS``) go on after a success and pay
    1 per solved env step, summed over the chunk; our default env would end there."""
    from rllib_diffusion.algorithms.dppo.robomimic import ROBOMIMIC_ENV_KWARGS
    from rllib_diffusion.envs.chunking import make_chunked_env

    env = make_chunked_env(
        {"env_id": LIFT, "horizon": 4, "act_steps": 4, "env_kwargs": ROBOMIMIC_ENV_KWARGS}
    )
    try:
        env.reset(seed=0)
        sim = env.unwrapped.robosuite_env.sim
        qpos = np.array(sim.data.get_joint_qpos("cube_joint0"))
        qpos[2] += 0.10  # lifted by hand: solved until it falls back onto the table
        sim.data.set_joint_qpos("cube_joint0", qpos)
        sim.forward()
        _, reward, terminated, truncated, info = env.step(np.zeros((4, 7), np.float32))
        assert info["success"] and info["env_steps"] == 4
        assert (terminated, truncated) == (False, False)
        assert reward >= 1.0 and reward == int(reward)  # one per solved step of the chunk
        steps = 4
        while not truncated:  # the cube falls back: no more reward, and no early end
            _, reward, terminated, truncated, _ = env.step(np.zeros((4, 7), np.float32))
            assert not terminated and reward == 0.0
            steps += 4
        assert steps == 300
    finally:
        env.close()


def test_episode_length_cap():
    env = make_env(LIFT, max_episode_steps=5)
    try:
        env.reset(seed=0)
        flags = [env.step(np.zeros(7, np.float32))[2:4] for _ in range(5)]
        assert flags == [(False, False)] * 4 + [(False, True)]
    finally:
        env.close()


def test_scripted_lift_demos_succeed_and_round_trip(lift_demos):
    path, demos, _ = lift_demos
    assert all(d["success"] for d in demos)
    assert all(len(d["actions"]) < 300 for d in demos)
    ds = load_robomimic_hdf5(path)
    assert ds.env_id == LIFT and len(ds.episodes) == 2
    for ep, demo in zip(ds.episodes, demos):
        keys = ROBOT_TASKS[LIFT].obs_keys
        obs = np.concatenate([demo["obs"][k] for k in keys], axis=1)
        final = np.concatenate([demo["next_obs"][k][-1] for k in keys])
        np.testing.assert_allclose(ep.observations, np.vstack([obs, final]).astype(np.float32))
        np.testing.assert_allclose(ep.actions, demo["actions"].astype(np.float32))
        np.testing.assert_array_equal(ep.rewards[-1:], [1.0])
        assert ep.rewards[:-1].sum() == 0 and ep.terminations[-1] and not ep.truncations.any()
    import h5py

    with h5py.File(path) as f:
        args = json.loads(f["data"].attrs["env_args"])
        assert args["env_name"] == "Lift" and args["env_kwargs"]["control_freq"] == 20
        g = f["data/demo_0"]
        assert g["states"].shape[0] == g["actions"].shape[0] == g.attrs["num_samples"]
        assert "<mujoco" in g.attrs["model_file"]


def test_replay_from_stored_state_reproduces_the_demo_exactly(lift_demos):
    import h5py

    from rllib_diffusion.collect.robot_demos import replay_demo

    path, _, env = lift_demos
    assert replay_demo(env, path, "demo_1")
    with h5py.File(path) as f:
        g = f["data/demo_0"]
        actions, states = np.asarray(g["actions"]), np.asarray(g["states"])
        env.reset_to({"states": states[0], "model": g.attrs["model_file"]})
    replayed = [env.flat_state()]
    for action in actions[:-1]:
        env.step(action)
        replayed.append(env.flat_state())
    np.testing.assert_array_equal(np.asarray(replayed), states)  # bit for bit


def test_chunked_env_unnormalises_with_demo_statistics(lift_demos):
    from rllib_diffusion.data.normalization import DatasetNormalization
    from rllib_diffusion.envs.chunking import make_chunked_env

    path, _, _ = lift_demos
    norm = DatasetNormalization.fit(load_robomimic_hdf5(path))
    env = make_chunked_env(
        {"env_id": LIFT, "horizon": 4, "act_steps": 2, "normalization": norm.to_dict()}
    )
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (19,) and np.all(np.abs(obs) <= 1.05)
        # -1 / +1 in policy space are the dataset's per-dimension action min / max.
        np.testing.assert_allclose(env.unnormalize_action(-np.ones(7)), norm.action.low, atol=1e-5)
        np.testing.assert_allclose(env.unnormalize_action(np.ones(7)), norm.action.high, atol=1e-5)
        _, _, _, _, info = env.step(np.zeros((4, 7), np.float32))
        assert info["env_steps"] == 2 and info["success"] is False
    finally:
        env.close()


class _ZeroPolicy(torch.nn.Module):
    """Acts with zero chunks (policy space): a stand-in RLModule for evaluate_module."""

    def __init__(self, horizon: int, action_dim: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.shape = (horizon, action_dim)

    def forward_inference(self, batch):
        from ray.rllib.core.columns import Columns

        obs = batch[Columns.OBS]
        return {Columns.ACTIONS: torch.zeros(obs.shape[0], *self.shape)}


class _SucceedsOnOddSeeds(gym.Env):
    """Reports success at its second step on odd reset seeds."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._odd, self._t = bool(seed % 2), 0
        return np.zeros(2, np.float32), {"success": False}

    def step(self, action):
        self._t += 1
        success = self._odd and self._t == 2
        return np.zeros(2, np.float32), float(success), success, self._t >= 5, {"success": success}


def test_evaluation_reports_success_rate(lift_env):
    from rllib_diffusion.evaluation import evaluate_module

    gym.register("rllib_diffusion_test/Succeeds-v0", entry_point=_SucceedsOnOddSeeds)
    try:
        # act_steps 3: the success at env step 2 is inside the first chunk.
        cfg = {"env_id": "rllib_diffusion_test/Succeeds-v0", "horizon": 3, "act_steps": 3}
        result = evaluate_module(_ZeroPolicy(3, 1), cfg, num_episodes=4, seed=0)
    finally:
        gym.registry.pop("rllib_diffusion_test/Succeeds-v0")
    assert result["episode_successes"] == [False, True, False, True]
    assert result["success_rate"] == 0.5
    assert "episode_return_mean" in result  # existing keys stay

    lift = {"env_id": LIFT, "horizon": 4, "env_kwargs": {"max_episode_steps": 8}}
    result = evaluate_module(_ZeroPolicy(4, 7), lift, num_episodes=2, seed=0)
    assert result["success_rate"] == 0.0 and result["episode_lengths"] == [8, 8]
    assert result["normalized_score"] == 0.0  # 100 · success rate: return = success


def test_toy_env_has_no_success_rate():
    from rllib_diffusion.envs.toy import ENV_ID
    from rllib_diffusion.evaluation import evaluate_module

    env = make_env(ENV_ID)
    shape = env.action_space.shape
    env.close()
    result = evaluate_module(_ZeroPolicy(1, shape[0]), {"env_id": ENV_ID}, num_episodes=1)
    assert "success_rate" not in result


def test_offscreen_frames_survive_resets_and_garbage_collection():
    """Each hard reset makes a new GL context; collecting the old one must not wipe it."""
    import gc

    env = make_env(LIFT, render_mode="rgb_array", width=64, height=48)
    try:
        env.reset(seed=0)
        try:
            first = env.render()
        except Exception as err:  # no EGL / OSMesa on this machine
            pytest.skip(f"offscreen rendering unavailable: {err}")
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.mean() > 50
        for _ in range(2):
            env.reset(seed=0)
            gc.collect()
            np.testing.assert_array_equal(env.render(), first)
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lift_passes_the_env_checker(lift_env):
    from gymnasium.utils.env_checker import check_env

    check_env(lift_env.unwrapped, skip_render_check=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_id", list(DPPO))
def test_every_task_constructs_steps_and_passes_the_env_checker(env_id):
    from gymnasium.utils.env_checker import check_env

    env = make_env(env_id)
    try:
        obs_dim, action_dim, length = DPPO[env_id]
        assert env.observation_space.shape == (obs_dim,)
        assert env.action_space.shape == (action_dim,)
        assert env.spec.max_episode_steps == length
        obs, _ = env.reset(seed=0)
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert obs.shape == (obs_dim,) and reward == 0.0 and info["success"] is False
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["can", "square"])
def test_scripted_can_and_square_demos_succeed_and_replay(tmp_path, task):
    from rllib_diffusion.collect.robot_demos import collect_demos, replay_demo
    from rllib_diffusion.envs.robosuite_tasks import RobosuiteTaskEnv

    summary = collect_demos(task, 2, tmp_path / f"{task}.hdf5", progress=False)
    assert summary["demos"] == 2 and summary["success_rate"] > 0.5
    ds = load_robomimic_hdf5(tmp_path / f"{task}.hdf5")
    info = task_for(task)
    assert ds.env_id == info.env_id and ds.episodes[0].observations.shape[1] == 23
    env = RobosuiteTaskEnv(info.robosuite_env)
    try:
        assert all(replay_demo(env, tmp_path / f"{task}.hdf5", f"demo_{i}") for i in (0, 1))
    finally:
        env.close()


@pytest.mark.slow
def test_pretrain_on_scripted_lift_demos_reports_success_rate(
    lift_demos, ray_session, isolated_dirs
):
    """The pipeline end to end: robomimic file → DiffusionBC → evaluation in the env."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain

    from ..conftest import TINY

    path, _, _ = lift_demos
    settings = {**TINY, "horizon": 4, "act_steps": 4}
    out = str(isolated_dirs / "run")
    summary = pretrain(PretrainSettings(dataset=str(path), out_dir=out, **settings))
    assert summary["env_id"] == LIFT
    evaluation = summary["evaluation"]
    assert evaluation["num_episodes"] == 2 and 0.0 <= evaluation["success_rate"] <= 1.0
    assert evaluation["normalized_score"] == 100 * evaluation["success_rate"]
