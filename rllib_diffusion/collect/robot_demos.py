"""Scripted demonstrations for robomimic's Lift, Can and Square, written as robomimic HDF5.

Scripted OSC delta-position controllers act in
:class:`~rllib_diffusion.envs.robosuite_tasks.RobosuiteTaskEnv`:
:class:`ScriptedPickPlace` (Lift: above object → descend → grasp → lift; Can: then carry
over the target bin → lower → release → retreat) and :class:`ScriptedSquare` (turn to the
nut's handle, grasp, square the nut to the peg, carry, lower it on, release). Each draws
an approach mode (two per task), a speed gain and small action noise per episode, so the
data has the variety (and the modes) a diffusion policy should capture.

Only successful episodes are kept, each ending at its first successful step (as robomimic's
demos do). The file layout is robomimic's (``data/demo_<i>/{obs,next_obs}/<key>``,
``actions``, ``rewards``, ``dones``, ``states``; ``model_file`` and ``num_samples`` per
demo; ``env_args`` and ``total`` on ``data``), readable by
:func:`rllib_diffusion.data.robomimic_io.load_robomimic_hdf5` and by robomimic itself.
Each demo is recorded in the model rebuilt from its stored ``model_file``, so replaying
its actions from ``states[0]`` (:func:`replay_demo`) reproduces it bit for bit. The file
is written to a temporary name and renamed when complete.

With ``--dataset-id`` the same demos are also written as a Minari dataset (read back
from the HDF5 file by the project's robomimic loader, so both copies hold the same
low-dim observations in DPPO's key order), with the HDF5 path and the collection summary
in its metadata.

Run ``python -m rllib_diffusion.collect.robot_demos --task lift --episodes 50 --out
runs/robot/lift_scripted_50.hdf5 [--dataset-id local/robomimic/lift-scripted-v0]`` (or
``experiments/robot_demos.py`` with the same flags).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rllib_diffusion.collect.successes import collect_successes, success_summary
from rllib_diffusion.envs.robosuite_tasks import RobosuiteTaskEnv, task_for

#: Tasks with a scripted controller here.
SCRIPTED_TASKS = ("lift", "can", "square")

_POS_SCALE = 0.05  # OSC output_max: one action unit is 5 cm of goal offset per step
_ROT_SCALE = 0.5  # and 0.5 rad


def _quat_error(target_xyzw: np.ndarray, current_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of the rotation taking ``current`` to ``target`` (world frame)."""
    from robosuite.utils import transform_utils as T

    q = T.quat_multiply(target_xyzw, T.quat_inverse(current_xyzw))
    if q[3] < 0:  # shortest way round
        q = -q
    return T.quat2axisangle(q)


@dataclass
class ScriptedPickPlace:
    """Phase machine for Lift (pick and lift) and Can (pick, carry, place).

    ``act(env)`` reads the env's latest raw observation (and, for Can, the target bin
    compartment) and returns a (7,) action in [-1, 1]; call ``reset(env, rng)`` after
    each ``env.reset``.
    """

    task: str
    noise: float = 0.05
    phase: str = "side"
    _t_phase: int = 0
    _rng: np.random.Generator = field(default_factory=np.random.default_rng)
    _side: float = 1.0
    _gain: float = 1.0
    _quat0: np.ndarray | None = None
    _grasp_z: float = 0.0

    def reset(self, env: RobosuiteTaskEnv, rng: np.random.Generator) -> None:
        self._rng = rng
        self._side = float(rng.choice([-1.0, 1.0]))
        self._gain = float(rng.uniform(0.7, 1.0))
        self._quat0 = np.array(env.raw_observation()["robot0_eef_quat"])
        self.phase, self._t_phase = "side", 0

    def _object_pos(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(obs["cube_pos"] if self.task == "lift" else obs["Can_pos"])

    def _next(self, phase: str) -> None:
        self.phase, self._t_phase = phase, 0

    def act(self, env: RobosuiteTaskEnv) -> np.ndarray:
        obs = env.raw_observation()
        eef = np.asarray(obs["robot0_eef_pos"])
        obj = self._object_pos(obs)
        gripper = -1.0  # open
        self._t_phase += 1
        t = self._t_phase
        if self.phase == "side":  # a waypoint beside the object: the approach mode
            target = obj + np.array([0.0, 0.06 * self._side, 0.12])
            if np.linalg.norm(target - eef) < 0.02 or t > 60:
                self._next("above")
        elif self.phase == "above":
            target = obj + np.array([0.0, 0.0, 0.08])
            if np.linalg.norm(target - eef) < 0.01 or t > 60:
                self._next("descend")
        elif self.phase == "descend":
            target = obj + np.array([0.0, 0.0, -0.005 if self.task == "lift" else 0.0])
            if np.linalg.norm(target - eef) < 0.008 or t > 50:
                self._next("grasp")
        elif self.phase == "grasp":
            target, gripper = eef.copy(), 1.0
            if t >= 12:
                self._grasp_z = float(eef[2])
                self._next("lift")
        elif self.phase == "lift":
            gripper = 1.0
            height = 0.12 if self.task == "lift" else 0.22
            target = np.array([eef[0], eef[1], self._grasp_z + height])
            if self.task == "can" and (eef[2] > self._grasp_z + height - 0.02 or t > 60):
                self._next("carry")
        elif self.phase == "carry":
            gripper = 1.0
            goal = np.asarray(env.robosuite_env.target_bin_placements[env.robosuite_env.object_id])
            target = np.array([goal[0], goal[1], self._grasp_z + 0.22])
            if np.linalg.norm(target[:2] - eef[:2]) < 0.01 or t > 100:
                self._next("lower")
        elif self.phase == "lower":
            gripper = 1.0
            goal = np.asarray(env.robosuite_env.target_bin_placements[env.robosuite_env.object_id])
            target = np.array([goal[0], goal[1], goal[2] + 0.10])
            if abs(target[2] - eef[2]) < 0.01 or t > 40:
                self._next("release")
        elif self.phase == "release":
            target = eef.copy()
            if t >= 8:
                self._next("retreat")
        else:  # retreat
            target = eef + np.array([0.0, 0.0, 0.05])
        pos = np.clip((target - eef) / _POS_SCALE * self._gain * 2.0, -1.0, 1.0)
        rot = np.clip(
            _quat_error(self._quat0, np.asarray(obs["robot0_eef_quat"])) / _ROT_SCALE, -1, 1
        )
        action = np.concatenate([pos, rot, [gripper]])
        if self.noise > 0:
            action[:6] += self._rng.normal(0.0, self.noise, 6)
        return np.clip(action, -1.0, 1.0)


def _yaw(quat_xyzw: np.ndarray) -> float:
    from robosuite.utils import transform_utils as T

    return float(T.mat2euler(T.quat2mat(quat_xyzw))[2])


def _rotated_z(quat_xyzw: np.ndarray, angle: float) -> np.ndarray:
    """``quat`` turned by ``angle`` about the world z axis."""
    from robosuite.utils import transform_utils as T

    return T.quat_multiply(T.axisangle2quat(np.array([0.0, 0.0, angle])), quat_xyzw)


def _wrap(angle: float, period: float) -> float:
    return (angle + period / 2) % period - period / 2


@dataclass
class ScriptedSquare:
    """Phase machine for Square (NutAssemblySquare): turn the hand to the nut's handle,
    grasp it, lift while turning the nut square to the peg (the quarter turn closest to
    the hand's start yaw), carry it over the peg with closed-loop xy correction, lower it
    on, release, retreat. A grasp that did not lift the nut is retried.

    Variety: the hover height and speed gain are random per episode, with small action
    noise; the approach to the handle comes from the side or from above (two modes).
    """

    task: str = "square"
    noise: float = 0.03
    phase: str = "side"
    _t_phase: int = 0
    _rng: np.random.Generator = field(default_factory=np.random.default_rng)
    _side: bool = True
    _gain: float = 1.0
    _quat0: np.ndarray | None = None
    _quat_target: np.ndarray | None = None
    _retries: int = 0

    def reset(self, env: RobosuiteTaskEnv, rng: np.random.Generator) -> None:
        self._rng = rng
        self._side = bool(rng.integers(2))
        self._gain = float(rng.uniform(0.75, 1.0))
        self._quat0 = np.array(env.raw_observation()["robot0_eef_quat"])
        self._quat_target, self._retries = None, 0
        self.phase, self._t_phase = ("side" if self._side else "above"), 0

    def _next(self, phase: str) -> None:
        self.phase, self._t_phase = phase, 0

    def act(self, env: RobosuiteTaskEnv) -> np.ndarray:
        scene = _SquareScene.of(env)
        self._t_phase += 1
        if self._quat_target is None:  # fingers across the handle (which lies along nut x)
            eef_quat, nut_yaw = scene.eef_quat, scene.nut_yaw
            self._quat_target = _rotated_z(eef_quat, _wrap(nut_yaw - _yaw(eef_quat), np.pi))
        target, gripper = self._phase_target(scene)
        return self._action(target, gripper, scene.eef, scene.eef_quat)

    def _phase_target(self, scene: _SquareScene) -> tuple[np.ndarray, float]:
        """The hand's target position and gripper command of this step; may change phase."""
        eef, eef_quat, nut, nut_yaw, handle, peg, table_z = scene
        gripper = -1.0
        t = self._t_phase
        turned = np.linalg.norm(_quat_error(self._quat_target, eef_quat)) < 0.05
        if self.phase == "side":  # beside and above the handle, the first mode
            target = handle + np.array([0.0, -0.08, 0.12])
            if np.linalg.norm(target - eef) < 0.02 or t > 60:
                self._next("above")
        elif self.phase == "above":
            target = handle + np.array([0.0, 0.0, 0.08])
            if (np.linalg.norm(target - eef) < 0.01 and turned) or t > 80:
                self._next("descend")
        elif self.phase == "descend":
            target = handle + np.array([0.0, 0.0, -0.005])
            if np.linalg.norm(target - eef) < 0.006 or t > 50:
                self._next("grasp")
        elif self.phase == "grasp":
            target, gripper = eef.copy(), 1.0
            if t >= 15:
                # Square the nut to the peg: the quarter turn nearest the start yaw.
                base = _wrap(-nut_yaw, np.pi / 2)
                rel = _wrap(_yaw(eef_quat) - _yaw(self._quat0), 2 * np.pi)
                turn = min((base + k * np.pi / 2 for k in range(-2, 3)), key=lambda a: abs(rel + a))
                self._quat_target = _rotated_z(eef_quat, turn)
                self._next("lift")
        elif self.phase == "lift":
            gripper = 1.0
            target = np.array([eef[0], eef[1], table_z + 0.25])
            if t > 30 and nut[2] < table_z + 0.03 and self._retries < 2:  # missed: again
                self._retries += 1
                self._quat_target = _rotated_z(eef_quat, _wrap(nut_yaw - _yaw(eef_quat), np.pi))
                self._next("above")
            elif (eef[2] > table_z + 0.23 and abs(_wrap(nut_yaw, np.pi / 2)) < 0.03) or t > 80:
                self._next("carry")
        elif self.phase == "carry":
            gripper = 1.0
            target = np.array([*(eef[:2] + 2.0 * (peg[:2] - nut[:2])), table_z + 0.25])
            if np.linalg.norm(peg[:2] - nut[:2]) < 0.004 or t > 100:
                self._next("lower")
        elif self.phase == "lower":
            gripper = 1.0
            target = np.array([*(eef[:2] + 2.0 * (peg[:2] - nut[:2])), eef[2] - 0.03])
            if nut[2] < table_z + 0.045 or t > 60:
                self._next("release")
        elif self.phase == "release":
            target = eef.copy()
            if t >= 8:
                self._next("retreat")
        else:
            target = eef + np.array([0.0, 0.0, 0.05])
        return target, gripper

    def _action(
        self, target: np.ndarray, gripper: float, eef: np.ndarray, eef_quat: np.ndarray
    ) -> np.ndarray:
        """The OSC delta action towards ``target`` and the target orientation, with noise."""
        pos = np.clip((target - eef) / _POS_SCALE * self._gain * 1.7, -1.0, 1.0)
        rot = np.clip(_quat_error(self._quat_target, eef_quat) / _ROT_SCALE, -1, 1)
        action = np.concatenate([pos, rot, [gripper]])
        if self.noise > 0:
            action[:6] += self._rng.normal(0.0, self.noise, 6)
        return np.clip(action, -1.0, 1.0)


class _SquareScene(NamedTuple):
    """What :class:`ScriptedSquare` reads each step: hand, nut, handle, peg and table."""

    eef: np.ndarray
    eef_quat: np.ndarray
    nut: np.ndarray
    nut_yaw: float
    handle: np.ndarray
    peg: np.ndarray
    table_z: float

    @classmethod
    def of(cls, env: RobosuiteTaskEnv) -> _SquareScene:
        """The scene of ``env``'s current state."""
        obs, sim = env.raw_observation(), env.robosuite_env.sim
        rs = env.robosuite_env
        return cls(
            eef=np.asarray(obs["robot0_eef_pos"]),
            eef_quat=np.asarray(obs["robot0_eef_quat"]),
            nut=np.asarray(obs["SquareNut_pos"]),
            nut_yaw=_yaw(np.asarray(obs["SquareNut_quat"])),
            handle=np.array(sim.data.site_xpos[rs.object_site_ids[0]]),
            peg=np.array(sim.data.body_xpos[rs.peg1_body_id]),
            table_z=float(rs.table_offset[2]),
        )


def make_scripted_policy(task: str, noise: float | None = None) -> Any:
    """The scripted controller for ``task`` (``lift``, ``can`` or ``square``)."""
    if task == "square":
        return ScriptedSquare() if noise is None else ScriptedSquare(noise=noise)
    return ScriptedPickPlace(task) if noise is None else ScriptedPickPlace(task, noise=noise)


def run_episode(
    env: RobosuiteTaskEnv, policy: ScriptedPickPlace, seed: int, max_steps: int
) -> dict[str, Any]:
    """One scripted episode from ``reset(seed)``: arrays in robomimic's layout."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    # Record in the model rebuilt from the stored MJCF, as a replay will run: the XML
    # round trip rounds the randomised sizes and poses (~1e-7), which contact-rich tasks
    # (Square) amplify until replays of the recorded actions miss.
    start = env.get_state()
    env.reset_to(start)
    policy.reset(env, rng)
    keys = env.obs_keys
    raw_obs: list[dict[str, np.ndarray]] = [dict(env.raw_observation())]
    states, actions, rewards = [start["states"]], [], []
    success = False
    for _ in range(max_steps):
        action = policy.act(env)
        obs, reward, terminated, _, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        raw_obs.append(dict(env.raw_observation()))
        if terminated or info["success"]:
            success = bool(info["success"])
            break
        states.append(env.flat_state())
    t = len(actions)
    dones = np.zeros(t, dtype=np.int64)
    if success:
        dones[-1] = 1
    stacked = {k: np.stack([np.ravel(o[k]) for o in raw_obs]) for k in keys}
    return {
        "obs": {k: v[:-1] for k, v in stacked.items()},
        "next_obs": {k: v[1:] for k, v in stacked.items()},
        "actions": np.asarray(actions, dtype=np.float64),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "dones": dones,
        "states": np.asarray(states[:t]),
        "model_file": start["model"],
        "success": success,
        "seed": seed,
    }


def write_robomimic_hdf5(
    path: str | os.PathLike[str], demos: list[dict[str, Any]], env_args: dict
) -> Path:
    """Write ``demos`` (as :func:`run_episode` returns them) to ``path`` atomically."""
    import h5py

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, demo in enumerate(demos):
            g = data.create_group(f"demo_{i}")
            for group in ("obs", "next_obs"):
                for key, arr in demo[group].items():
                    g.create_dataset(f"{group}/{key}", data=arr)
            for key in ("actions", "rewards", "dones", "states"):
                g.create_dataset(key, data=demo[key])
            g.attrs["model_file"] = demo["model_file"]
            g.attrs["num_samples"] = len(demo["actions"])
            g.attrs["seed"] = demo["seed"]
            total += len(demo["actions"])
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
    os.replace(tmp, path)
    return path


def collect_demos(
    task: str,
    episodes: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    noise: float | None = None,
    max_attempts: int | None = None,
    progress: bool = True,
    dataset_id: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Collect ``episodes`` successful scripted demos of ``task`` into ``out`` (and, with
    ``dataset_id``, into that Minari dataset too; ``overwrite`` replaces an existing one).

    Episode ``j`` (successful or not) resets with ``seed + j``; failures are counted and
    dropped. Gives up after ``max_attempts`` episodes (default ``2 * episodes + 10``).
    Returns a summary: demos kept, attempts, success rate, env steps, steps/s, seconds.
    """
    name = task.lower()
    _check_demo_request(task, name, dataset_id, overwrite=overwrite)
    info = task_for(name)
    max_attempts = max_attempts or 2 * episodes + 10
    env = RobosuiteTaskEnv(info.robosuite_env)
    policy = make_scripted_policy(name, noise)
    start = time.perf_counter()
    try:
        demos, lengths, attempts, steps = collect_successes(
            lambda s: _attempt(env, policy, s, info.max_episode_steps),
            episodes,
            seed=seed,
            max_attempts=max_attempts,
            start=start,
            describe=(lambda a: f"[robot_demos] {name}: episode {a}:") if progress else None,
        )
        env_args = env.env_args()
    finally:
        env.close()
    seconds = time.perf_counter() - start
    summary = {
        "task": name,
        "env_id": info.env_id,
        **success_summary(lengths, attempts, steps, seconds),
    }
    if not demos:
        raise RuntimeError(f"no successful {name} demo in {attempts} attempts; nothing written.")
    summary["out"] = str(write_robomimic_hdf5(out, demos, env_args))
    if dataset_id is not None:
        summary["minari"] = write_minari_copy(summary, dataset_id, overwrite=overwrite)
    if len(demos) < episodes:
        print(
            f"[robot_demos] warning: only {len(demos)}/{episodes} demos after {attempts} attempts",
            file=sys.stderr,
        )
    return summary


def _check_demo_request(task: str, name: str, dataset_id: str | None, *, overwrite: bool) -> None:
    """Refuse an existing Minari id (without ``overwrite``) or a task without a script."""
    if dataset_id is not None:
        from rllib_diffusion.data.minari_io import check_output_id

        check_output_id(dataset_id, overwrite=overwrite)
    if name not in SCRIPTED_TASKS:
        raise ValueError(
            f"no scripted controller for {task!r}; scripted tasks: {list(SCRIPTED_TASKS)} "
            "(Transport needs real robomimic demos, see docs/robot_tasks.md)."
        )


def _attempt(
    env: RobosuiteTaskEnv, policy: Any, seed: int, max_steps: int
) -> tuple[dict[str, Any], bool, int]:
    """One scripted episode as :func:`collect_successes` runs it: demo, success, steps."""
    demo = run_episode(env, policy, seed, max_steps)
    return demo, bool(demo["success"]), len(demo["actions"])


def write_minari_copy(summary: dict[str, Any], dataset_id: str, *, overwrite: bool) -> str:
    """Write the demos of ``summary["out"]`` (an HDF5 file :func:`collect_demos` wrote)
    as the Minari dataset ``dataset_id``; returns its directory."""
    from rllib_diffusion.data import write_minari
    from rllib_diffusion.data.robomimic_io import load_robomimic_hdf5

    return write_minari(
        load_robomimic_hdf5(summary["out"]),
        dataset_id,
        algorithm_name=f"scripted-{summary['task']}-demonstrator",
        author="rllib-diffusion robot_demos",
        description=(
            f"{summary['demos']} scripted {summary['task']} demonstrations "
            f"(robomimic low-dim observations, OSC delta actions)."
        ),
        overwrite=overwrite,
        extra_metadata={"robomimic_hdf5": summary["out"], "collection": dict(summary)},
    )


def replay_demo(env: RobosuiteTaskEnv, path: str | os.PathLike[str], demo: str) -> bool:
    """Replay a stored demo's actions open loop from its stored start state; True if it
    reaches success (robomimic's check that a file's demos are reproducible)."""
    import h5py

    with h5py.File(Path(path).expanduser(), "r") as f:
        g = f[f"data/{demo}"]
        actions = np.asarray(g["actions"])
        env.reset_to({"states": np.asarray(g["states"][0]), "model": g.attrs["model_file"]})
    for action in actions:
        _, _, _, _, info = env.step(action)
        if info["success"]:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rllib_diffusion.collect.robot_demos",
        description="Scripted robomimic-format demonstrations for Lift, Can, Square (robosuite).",
    )
    parser.add_argument("--task", choices=SCRIPTED_TASKS, required=True)
    parser.add_argument("--episodes", type=int, default=50, help="successful demos to keep")
    parser.add_argument("--out", required=True, help="output .hdf5 (written atomically)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode")
    parser.add_argument(
        "--noise", type=float, default=None, help="std of action noise (0.05; square 0.03)"
    )
    parser.add_argument("--max-attempts", type=int, default=None)
    parser.add_argument(
        "--dataset-id",
        default=None,
        help="also write the demos as this Minari dataset (e.g. local/robomimic/lift-scripted-v0)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dataset-id")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    summary = collect_demos(
        args.task,
        args.episodes,
        args.out,
        seed=args.seed,
        noise=args.noise,
        max_attempts=args.max_attempts,
        dataset_id=args.dataset_id,
        overwrite=args.overwrite,
    )
    print(json.dumps(summary, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
