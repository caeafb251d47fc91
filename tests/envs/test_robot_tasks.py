"""Robot manipulation (gymnasium-robotics Franka Kitchen): env, dataset, DPPO sweep."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rllib_diffusion.envs.tasks import KITCHEN_TASKS, make_env, task_info

from ..conftest import TINY, collected_dataset, use_data_root

pytest.importorskip("gymnasium_robotics", reason="needs rllib-diffusion[robotics]")

REPO = Path(__file__).resolve().parents[2]
KITCHEN = "FrankaKitchen-v1"


def test_kitchen_env_observations_are_flattened_like_datasets():
    """make_env flattens the Dict observation in the order datasets are flattened in."""
    from rllib_diffusion.data.minari_io import _flatten_obs

    env = make_env(KITCHEN)
    raw = gym.make(KITCHEN, tasks_to_complete=list(KITCHEN_TASKS))
    try:
        assert env.observation_space.shape == (81,) and env.action_space.shape == (9,)
        assert set(env.unwrapped.tasks_to_complete) == set(KITCHEN_TASKS)
        flat, _ = env.reset(seed=3)
        obs, _ = raw.reset(seed=3)
        batched = gym.vector.utils.concatenate(
            raw.observation_space,
            [obs],
            gym.vector.utils.create_empty_array(raw.observation_space, 1),
        )
        np.testing.assert_allclose(_flatten_obs(raw.observation_space, batched, "x")[0], flat)
    finally:
        env.close()
        raw.close()
    info = task_info(KITCHEN)
    assert (info.ref_min_score, info.ref_max_score) == (0.0, 4.0)


def test_unknown_env_is_one_config_error_after_registering_robotics():
    from rllib_diffusion.modules.model_config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown env id 'FrankaKitchen-v9'.*FrankaKitchen-v1"):
        make_env("FrankaKitchen-v9")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_chunked_kitchen_env_passes_the_env_checker_and_is_recreatable():
    from gymnasium.utils.env_checker import check_env

    from rllib_diffusion.envs.chunking import make_chunked_env

    env = make_chunked_env({"env_id": KITCHEN, "horizon": 4, "act_steps": 2})
    try:
        # MuJoCo's "human" render mode needs a display: the render check is left out.
        check_env(env, skip_render_check=True)
        again = gym.make(env.spec)
        assert again.observation_space == env.observation_space
        assert again.action_space == env.action_space
        again.close()
    finally:
        env.close()


@pytest.fixture(scope="module")
def kitchen_data(tmp_path_factory):
    """4 random Franka Kitchen episodes written as a local Minari dataset."""
    with collected_dataset(
        tmp_path_factory, "kitchen", KITCHEN, "test/kitchen/random-v0", num_episodes=4, num_envs=2
    ) as data:
        yield data


def test_kitchen_dataset_round_trips_through_minari(kitchen_data, monkeypatch):
    from rllib_diffusion.algorithms.offline_run import load_validated_dataset

    root, dataset_id = kitchen_data
    use_data_root(monkeypatch, root)
    dataset, env_id = load_validated_dataset(dataset_id)
    assert env_id == KITCHEN and dataset.num_episodes == 4
    assert (dataset.obs_dim, dataset.action_dim) == (81, 9)
    assert all(len(e.actions) == 280 for e in dataset.episodes)  # time limit, no success


@pytest.mark.slow  # ~2-4 min on 2 cores: run with `bash scripts/test.sh -m slow`
def test_dppo_kitchen_sweep_runs_and_exports(kitchen_data, ray_session, tmp_path, monkeypatch):
    """Pretrain a tiny chunked policy on the kitchen data, then one ASHA trial of the
    robot sweep: it trains DPPO in Franka Kitchen and exports an evaluable checkpoint."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
    from rllib_diffusion.cli import main
    from rllib_diffusion.tuning import BEST_CHECKPOINT_DIR, SUMMARY_FILE

    from ..algorithms.test_tuning import TINY_DPPO

    root, dataset_id = kitchen_data
    use_data_root(monkeypatch, root)
    bc = tmp_path / "bc"
    tiny = {**TINY, "eval_episodes": 1}
    pretrain(PretrainSettings(dataset=dataset_id, out_dir=str(bc), horizon=4, act_steps=4, **tiny))
    argv = [
        "tune",
        str(REPO / "tune_configs" / "dppo_kitchen.py"),
        "--checkpoint",
        str(bc / "checkpoint"),
        "--storage-path",
        str(tmp_path),
        "--name",
        "kitchen",
        "--num-samples",
        "1",
        "--max-iterations",
        "1",
        "--verbose",
        "0",
        "--set",
        *TINY_DPPO,
        # One env, more decisions than a 70-decision episode: a training return to report.
        "num_envs_per_env_runner=1",
        "decisions_per_iteration=75",
    ]
    assert main(argv) == 0
    exp = tmp_path / "kitchen"
    summary = json.loads((exp / SUMMARY_FILE).read_text())
    assert summary["num_trials"] == 1 and summary["errored_trials"] == []
    meta = json.loads((exp / BEST_CHECKPOINT_DIR / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "DPPO" and meta["env_id"] == KITCHEN
    assert meta["tune"]["config"]["gamma"] in (0.99, 0.999)
    result = tmp_path / "eval.json"
    evaluate = ["evaluate", "--checkpoint", str(exp / BEST_CHECKPOINT_DIR), "--episodes", "1"]
    assert main([*evaluate, "--json", str(result)]) == 0
    evaluation = json.loads(result.read_text())
    assert evaluation["env_id"] == KITCHEN and len(evaluation["episode_returns"]) == 1
