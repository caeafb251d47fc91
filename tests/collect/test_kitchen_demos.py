"""Scripted Franka Kitchen demonstrations: the controller completes each scripted subtask
(as the env reports it), only successful episodes are kept, the Minari dataset round-trips
with the env's tasks, and those tasks reach the policy's env."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics", reason="needs pip install 'rllib-diffusion[robotics]'")

from rllib_diffusion.collect import kitchen_demos as kd  # noqa: E402
from rllib_diffusion.data import load_dataset  # noqa: E402
from rllib_diffusion.data.episodes import Episode  # noqa: E402
from rllib_diffusion.data.errors import DatasetError  # noqa: E402
from rllib_diffusion.data.minari_io import read_extra_metadata  # noqa: E402
from rllib_diffusion.envs.tasks import make_env  # noqa: E402

DATASET_ID = "test/kitchen/scripted-v0"
#: The env's flat observation: achieved + desired goal of each task, then the 59-D state.
TASK_DIMS = {"microwave": 1, "kettle": 7, "light switch": 2, "slide cabinet": 1}
#: D4RL's four subtasks, in its order.
D4RL_ORDER = ["microwave", "kettle", "light switch", "slide cabinet"]


def _obs_dim(tasks: list[str]) -> int:
    return 2 * sum(TASK_DIMS[t] for t in tasks) + 59


def _scripted_episode(tasks: list[str], seed: int = 0):
    """``(episode, success, script)`` of one scripted episode of ``tasks`` (env closed)."""
    env = kd.make_kitchen_env(tasks)
    script = kd.ScriptedKitchen(tasks)
    try:
        episode, success = kd.run_episode(env, script, seed=seed)
    finally:
        env.close()
    return episode, success, script


@pytest.mark.parametrize("task", kd.SCRIPTED_TASKS)
def test_the_script_completes_each_subtask(task):
    """Two seeds per subtask; success is the env's own report (its completed tasks)."""
    env = kd.make_kitchen_env([task])
    script = kd.ScriptedKitchen([task])
    try:
        for seed in (0, 1):
            obs, info = env.reset(seed=seed)
            script.reset(env, np.random.default_rng(seed))
            for _ in range(280):
                obs, reward, terminated, truncated, info = env.step(script.act(info))
                if terminated or truncated:
                    break
            assert terminated and info["episode_task_completions"] == [task], (task, seed)
            assert info["success"]  # KitchenSuccessInfo: all of the env's tasks done
    finally:
        env.close()


def test_the_kettle_is_pushed_upright_towards_its_goal():
    """The env's completion check (the kettle's 7-D pose within 0.3 of its goal) is met
    by moving it back towards the top left burner, not by tipping or turning it."""
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS

    env = kd.make_kitchen_env(["kettle"])
    try:
        env.reset(seed=3)
        start = env.unwrapped.data.joint("kettle").qpos.copy()
        episode, success = kd.run_episode(env, kd.ScriptedKitchen(["kettle"]), seed=3)
        end = env.unwrapped.data.joint("kettle").qpos.copy()
    finally:
        env.close()
    goal = OBS_ELEMENT_GOALS["kettle"]
    assert success and episode.episode_return == 1.0 and episode.length < 80
    assert np.linalg.norm(end - goal) < 0.3 < np.linalg.norm(start - goal)
    assert end[1] - start[1] > 0.1  # moved back along the stove
    assert abs(end[2] - start[2]) < 0.02 and end[3] > 0.97  # still on it, upright


def test_two_subtasks_in_sequence_end_at_the_completion_step():
    tasks = ["microwave", "slide cabinet"]
    episode, success, _ = _scripted_episode(tasks)
    assert success and episode.episode_return == 2.0
    assert episode.terminations[-1] and not episode.terminations[:-1].any()
    assert not episode.truncations.any() and episode.length < 280


@pytest.mark.parametrize(
    "tasks",
    [
        ["light switch", "slide cabinet", "microwave"],
        ["slide cabinet", "microwave", "light switch"],
    ],
)
def test_orders_that_do_not_begin_with_the_microwave_succeed(tasks):
    """The arm goes back to its start posture (``kd.HOME``) next to the microwave; without
    it the hand stalled ~15 cm above the handle and the 280 steps ran out."""
    episode, success, script = _scripted_episode(tasks)
    assert script.order == tasks
    assert success and episode.episode_return == 3.0 and episode.length < 280


@pytest.mark.parametrize(
    ("order", "homes"),
    [
        (["light switch", "slide cabinet"], 0),
        (["microwave", "light switch"], 1),
        (["slide cabinet", "microwave"], 1),
        (["light switch", "slide cabinet", "microwave"], 1),
        (["slide cabinet", "microwave", "light switch"], 2),
        (["kettle", "light switch"], 1),
        (["slide cabinet", "kettle"], 1),
        (D4RL_ORDER, 2),
        (["light switch", "microwave", "slide cabinet", "kettle"], 3),
    ],
)
def test_the_start_posture_comes_next_to_the_microwave(order, homes):
    """``HOME`` between two subtasks when one is the microwave or the kettle, and the
    way-point after it moves faster."""
    plans = [[kd.Waypoint((0.0, 0.0, float(i)), speed=1.0)] for i in range(len(order))]
    chained = kd.chain_plans(order, plans)
    assert sum(wp.home for wp in chained) == homes
    assert len(chained) == len(order) + homes
    after = [chained[i + 1] for i, wp in enumerate(chained) if wp.home]
    assert all(wp.speed == kd.TRANSIT_SPEEDUP for wp in after)


def test_only_successful_episodes_are_kept(monkeypatch):
    def alternate(env, script, seed):
        success = seed % 2 == 1
        n = 3 + seed
        ep = Episode(np.zeros((n + 1, 63)), np.zeros((n, 9)), np.zeros(n), np.eye(n)[-1] > 0,
                     np.zeros(n, dtype=bool))  # fmt: skip
        return ep, success

    monkeypatch.setattr(kd, "run_episode", alternate)
    kept, summary = kd.collect_kitchen_demos(["light switch"], 3, seed=0, progress=False)
    assert [e.length for e in kept] == [4, 6, 8]  # seeds 1, 3, 5
    assert summary["attempts"] == 6 and summary["demos"] == 3
    assert summary["success_rate"] == 0.5 and summary["mean_demo_length"] == 6.0
    kept, summary = kd.collect_kitchen_demos(["light switch"], 5, max_attempts=4, progress=False)
    assert len(kept) == 2 and summary["attempts"] == 4


def test_the_dataset_round_trips_with_its_tasks(isolated_dirs):
    from rllib_diffusion.algorithms.offline_run import dataset_env_kwargs, load_validated_dataset

    tasks = ["light switch"]
    episodes, summary = kd.collect_kitchen_demos(tasks, 2, max_steps=150, progress=False)
    assert summary["demos"] == 2 and summary[kd.STEPS_KWARG] == 150
    kd.write_kitchen_dataset(episodes, DATASET_ID, {"tasks": tasks, "seed": 0, **summary})
    data = load_dataset(DATASET_ID)
    kwargs = {kd.TASKS_KWARG: tasks, kd.STEPS_KWARG: 150}
    assert data.env_id == kd.ENV_ID and data.env_kwargs == kwargs
    assert (data.ref_min_score, data.ref_max_score) == (0.0, 1.0)
    assert (data.obs_dim, data.action_dim) == (_obs_dim(tasks), 9)
    for ep, written in zip(data.episodes, episodes, strict=True):
        assert ep.observations.shape == (ep.length + 1, _obs_dim(tasks))
        np.testing.assert_allclose(ep.actions, written.actions, rtol=1e-6)
        assert ep.terminations[-1] and ep.episode_return == 1.0
    assert read_extra_metadata(DATASET_ID, kd.PROVENANCE_KEY)["demos"] == 2
    # Every command validates against (and acts in) the env with the dataset's tasks.
    validated, env_id = load_validated_dataset(DATASET_ID)
    assert dataset_env_kwargs(validated, env_id) == kwargs
    assert dataset_env_kwargs(validated, "Hopper-v5") == {}
    # ... with the step limit the demos had (gym.make's TimeLimit).
    env = make_env(env_id, **dataset_env_kwargs(validated, env_id))
    try:
        assert env.spec.max_episode_steps == 150
    finally:
        env.close()


def test_four_subtasks_get_a_longer_step_limit_that_is_written_down(isolated_dirs):
    """Three or four subtasks with the kettle get 400 steps (the scripted 4-task chains took
    up to 363), the others keep the env's 280, and a written dataset records the limit."""
    assert kd.default_max_steps(kd.DEFAULT_TASKS) == kd.ENV_MAX_STEPS == 280
    assert kd.default_max_steps(["kettle", "microwave"]) == 280
    assert kd.default_max_steps(["kettle", "microwave", "light switch"]) == 400
    assert kd.default_max_steps(D4RL_ORDER) == kd.LONG_MAX_STEPS == 400
    for tasks, steps in ((["kettle"], 280), (D4RL_ORDER, 400)):
        env = kd.make_kitchen_env(tasks)
        try:
            assert env.spec.max_episode_steps == steps
        finally:
            env.close()
    episode = Episode(np.zeros((3, _obs_dim(D4RL_ORDER))), np.zeros((2, 9)), np.zeros(2),
                      np.array([False, True]), np.zeros(2, dtype=bool))  # fmt: skip
    kd.write_kitchen_dataset([episode], DATASET_ID, {"tasks": D4RL_ORDER})
    assert load_dataset(DATASET_ID).env_kwargs[kd.STEPS_KWARG] == 400


@pytest.mark.slow
def test_d4rls_four_subtasks_in_its_order_succeed_beyond_280_steps():
    """Microwave, kettle, light switch, slide cabinet in one episode (seed 0: 320 steps)."""
    episode, success, _ = _scripted_episode(D4RL_ORDER)
    assert success and episode.episode_return == 4.0
    assert kd.ENV_MAX_STEPS < episode.length < kd.LONG_MAX_STEPS


def test_policy_env_config_carries_the_tasks():
    from rllib_diffusion.envs.chunking import make_chunked_env
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    tasks = ["microwave", "slide cabinet"]
    kwargs = {kd.TASKS_KWARG: tasks}
    policy = DiffusionPolicyConfig(obs_dim=_obs_dim(tasks), action_dim=9, env_id=kd.ENV_ID,
                                   env_kwargs=kwargs)  # fmt: skip
    config = DiffusionPolicyConfig.from_dict(policy.to_dict()).env_config()
    assert config["env_kwargs"] == kwargs
    env = make_chunked_env(config)
    try:
        assert env.observation_space.shape[-1] == _obs_dim(tasks)
    finally:
        env.close()
    assert "env_kwargs" not in DiffusionPolicyConfig(obs_dim=3, action_dim=1).env_config()


def test_offline_q_and_gaussian_env_configs_carry_the_datasets_tasks():
    """The offline Q-learners' and Gaussian BC's evaluation envs are the dataset's: made
    with its env kwargs (the kitchen's tasks), none where it has none."""
    from types import SimpleNamespace

    from rllib_diffusion.algorithms.gaussian.gaussian_bc import gaussian_env_config
    from rllib_diffusion.algorithms.offline_q.train import offline_env_config
    from rllib_diffusion.algorithms.offline_run import dataset_env_kwargs
    from rllib_diffusion.envs.chunking import make_chunked_env

    tasks = ["microwave"]
    data = SimpleNamespace(env_id=kd.ENV_ID, env_kwargs={kd.TASKS_KWARG: tasks})
    kwargs = dataset_env_kwargs(data, kd.ENV_ID)
    assert dataset_env_kwargs(data, "Hopper-v5") == {}
    for config in (
        offline_env_config(kd.ENV_ID, kwargs),
        gaussian_env_config(kd.ENV_ID, None, kwargs),
    ):
        assert config["env_kwargs"] == {kd.TASKS_KWARG: tasks}
        env = make_chunked_env(config)
        try:
            assert env.observation_space.shape[-1] == _obs_dim(tasks)
        finally:
            env.close()
    assert "env_kwargs" not in offline_env_config("Hopper-v5", {})
    assert "env_kwargs" not in gaussian_env_config("Hopper-v5", None)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--tasks", "hinge_cabinet"], "hinge cabinet"),
        (["--max-episode-steps", "0"], "--max-episode-steps"),
        (["--tasks", "microwave", "microwave"], "distinct"),
        (["--episodes", "0"], "--episodes"),
        (["--speed", "0.5", "0.2"], "--speed"),
        (["--noise", "-1"], "--noise"),
    ],
)
def test_bad_command_lines_fail_in_one_line(argv, names, capsys, isolated_dirs):
    with pytest.raises(SystemExit) as exit_:
        kd.main([*argv, "--dataset-id", DATASET_ID])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and names in errors[0]
    assert not (isolated_dirs / "minari" / DATASET_ID).exists()


def test_the_kettle_is_scripted_the_burners_and_hinge_cabinet_are_refused_in_one_line():
    assert kd.task_names(["Kettle", "light_switch"]) == ["kettle", "light switch"]
    for name in ("top burner", "bottom_burner", "hinge-cabinet"):
        with pytest.raises(ValueError) as err:
            kd.task_names([name])
        message = str(err.value)
        assert "\n" not in message and repr(name) in message
        assert "'kettle'" in message.split("scripted tasks:")[1]  # listed as scripted ...
        assert "kettle" not in message.split("(")[-1]  # ... and not as one without a script
        assert "burner" in message.split("(")[-1] and "hinge cabinet" in message.split("(")[-1]


def test_an_existing_dataset_id_is_refused_before_any_episode(isolated_dirs, monkeypatch, capsys):
    kd.write_kitchen_dataset(*kd.collect_kitchen_demos(["slide cabinet"], 1, progress=False)[:1],
                             DATASET_ID, {"tasks": ["slide cabinet"]})  # fmt: skip

    def no_env(tasks):
        raise AssertionError("an env was built although the output id is taken")

    monkeypatch.setattr(kd, "make_kitchen_env", no_env)
    assert kd.main(["--tasks", "slide_cabinet", "--dataset-id", DATASET_ID]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--overwrite" in errors[0]
    with pytest.raises(DatasetError):
        kd.write_kitchen_dataset([], "test/kitchen/empty-v0", {"tasks": ["microwave"]})
