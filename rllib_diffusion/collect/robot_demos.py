"""Scripted demonstrations for robomimic's Lift, Can, Square and Transport, written as
robomimic HDF5.

Scripted OSC delta-position controllers act in
:class:`~rllib_diffusion.envs.robosuite_tasks.RobosuiteTaskEnv`:
:class:`ScriptedPickPlace` (Lift: above object → descend → grasp → lift; Can: then carry
over the target bin → lower → release → retreat), :class:`ScriptedSquare` (turn to the
nut's handle, grasp, square the nut to the peg, carry, lower it on, release) and
:class:`ScriptedTransport` (two arms: arm 0 takes the lid off the start bin and picks the
hammer while arm 1 moves the trash cube to the trash bin; arm 0 hands the hammer over
between the tables and arm 1 puts it in the target bin). Each draws an approach mode
(two per task), a speed gain and small action noise per episode, so the data has the
variety (and the modes) a diffusion policy should capture.

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
``experiments/robot_demos.py`` with the same flags); ``--task`` is ``lift``, ``can``,
``square`` or ``transport``.
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
SCRIPTED_TASKS = ("lift", "can", "square", "transport")

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


def _finger_yaw(sim: Any, gripper: str) -> float:
    """Yaw (world) of the line from the right to the left finger of ``gripper``."""
    left = sim.data.body_xpos[sim.model.body_name2id(f"{gripper}_right_leftfinger")]
    right = sim.data.body_xpos[sim.model.body_name2id(f"{gripper}_right_rightfinger")]
    d = np.asarray(left) - np.asarray(right)
    return float(np.arctan2(d[1], d[0]))


def _turn_fingers(eef_quat: np.ndarray, finger_yaw: float, goal_yaw: float) -> np.ndarray:
    """The hand orientation with the fingers along ``goal_yaw`` (either way round)."""
    return _rotated_z(eef_quat, _wrap(goal_yaw - finger_yaw, np.pi))


def _handle_point(
    payload: np.ndarray, axis: np.ndarray, offset: float, towards_y: float
) -> np.ndarray:
    """The point ``offset`` along the hammer's handle from its centre, on the side whose
    world y is towards the sign of ``towards_y``."""
    sign = 1.0 if axis[1] * towards_y >= 0 else -1.0
    return payload + sign * offset * axis


class _TransportScene(NamedTuple):
    """What :class:`ScriptedTransport` reads each step (world frame)."""

    eef: tuple[np.ndarray, np.ndarray]
    eef_quat: tuple[np.ndarray, np.ndarray]
    finger_yaw: tuple[float, float]
    lid_handle: np.ndarray
    payload: np.ndarray
    handle_axis: np.ndarray
    trash: np.ndarray
    trash_yaw: float
    target_bin: np.ndarray
    trash_bin: np.ndarray

    @classmethod
    def of(cls, env: RobosuiteTaskEnv) -> _TransportScene:
        """The scene of ``env``'s current state."""
        obs, sim = env.raw_observation(), env.robosuite_env.sim
        handle = sim.model.geom_name2id("payload_handle")
        axis = np.array(sim.data.geom_xmat[handle]).reshape(3, 3)[:, 2]
        return cls(
            eef=(np.asarray(obs["robot0_eef_pos"]), np.asarray(obs["robot1_eef_pos"])),
            eef_quat=(np.asarray(obs["robot0_eef_quat"]), np.asarray(obs["robot1_eef_quat"])),
            finger_yaw=(_finger_yaw(sim, "gripper0"), _finger_yaw(sim, "gripper1")),
            lid_handle=np.asarray(obs["lid_handle_pos"]),
            payload=np.array(sim.data.geom_xpos[handle]),
            handle_axis=axis,
            trash=np.asarray(obs["trash_pos"]),
            trash_yaw=_yaw(np.asarray(obs["trash_quat"])),
            target_bin=np.asarray(obs["target_bin_pos"]),
            trash_bin=np.asarray(obs["trash_bin_pos"]),
        )


@dataclass
class _ArmState:
    """One arm's phase, steps spent in it, start and target hand orientation."""

    phase: str
    t: int = 0
    quat0: np.ndarray | None = None
    quat_target: np.ndarray | None = None
    hold: np.ndarray | None = None
    retries: int = 0

    def go(self, phase: str) -> None:
        self.phase, self.t = phase, 0


# Arm 0's hand when it presents the hammer: low (the hands are then about level with the
# shoulders, where the arms reach furthest), the handle's centre between the tables. The
# hands grip 13 cm apart along the handle (closer, arm 1's hand lands on arm 0's; further
# out, arm 1's elbow straightens and its controller stalls).
_HANDOVER = np.array([0.0, -0.065, 1.0])
_GRIP_OFFSET = 0.065  # each hand grips the handle this far from its centre
_HOVER_Z = 1.04  # a hand this high clears the bins' walls (their tops are at z 0.95)
_CARRY_Z = 1.25  # arm 1 carries the (perhaps hanging) hammer over the bin walls this high
_LID_LIFT = 0.05  # the lid is lifted this much before it is carried off


@dataclass
class ScriptedTransport:
    """Phase machine for Transport (TwoArmTransport): one phase sequence per arm.

    Arm 0 (start-bin side): ``lid_above`` → ``lid_descend`` → ``lid_grasp`` →
    ``lid_lift`` (5 cm, just clear of the walls) → ``lid_move`` (to the free end of its
    table) → ``lid_release`` → ``hammer_above`` (fingers turned across the handle) →
    ``hammer_descend`` → ``hammer_grasp`` (the handle 6.5 cm from its centre, on arm 0's
    side) → ``hammer_lift`` (straight up) → ``hammer_turn`` (back to the start
    orientation: the handle along y) → ``present`` (hand-over point between the tables) →
    ``let_go`` (once arm 1 has closed on the handle) → ``retreat`` (up, then back).

    Arm 1 (target-bin side), meanwhile: ``trash_turn`` (fingers square to the cube) →
    ``trash_side`` (a waypoint) → ``trash_above`` → ``trash_descend`` → ``trash_grasp`` →
    ``trash_lift`` (a missed cube is retried, at most twice) → ``trash_carry`` (over the
    trash bin) → ``trash_release`` → ``wait`` (near the hand-over point) → ``take_above``
    (the handle's other half) → ``take_descend`` → ``take_grasp`` (held until arm 0's open
    hand has risen clear) → ``take_lift`` → ``carry`` (the hammer's, not the hand's, centre
    over the target bin) → ``lower`` → ``release`` → ``retreat``. Success (hammer on the
    target bin's floor, cube on the trash bin's) usually comes during ``lower``.

    ``act(env)`` returns a (14,) action: each arm's OSC delta (position, rotation,
    gripper), expressed in that arm's base frame as the controller expects.

    Variety: a speed gain and small action noise per episode, and two approach modes: arm
    1 reaches the trash through a waypoint to its left or its right, and arm 0 puts the lid
    down near or far along its table.
    """

    task: str = "transport"
    noise: float = 0.03
    _rng: np.random.Generator = field(default_factory=np.random.default_rng)
    _gain: float = 1.0
    _side: float = 1.0
    _lid_x: float = -0.15
    _arms: tuple[_ArmState, _ArmState] = field(
        default_factory=lambda: (_ArmState("lid_above"), _ArmState("trash_turn"))
    )
    _base_rot: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.eye(3), np.eye(3)))

    def reset(self, env: RobosuiteTaskEnv, rng: np.random.Generator) -> None:
        self._rng = rng
        self._side = float(rng.choice([-1.0, 1.0]))
        self._lid_x = float(rng.choice([-0.12, -0.2]))
        self._gain = float(rng.uniform(0.75, 1.0))
        obs = env.raw_observation()
        self._arms = (_ArmState("lid_above"), _ArmState("trash_turn"))
        for i, arm in enumerate(self._arms):
            arm.quat0 = np.array(obs[f"robot{i}_eef_quat"])
            arm.quat_target = arm.quat0.copy()
        self._base_rot = tuple(np.array(r.base_ori).reshape(3, 3) for r in env.robosuite_env.robots)

    @property
    def phases(self) -> tuple[str, str]:
        return self._arms[0].phase, self._arms[1].phase

    def act(self, env: RobosuiteTaskEnv) -> np.ndarray:
        scene = _TransportScene.of(env)
        for arm in self._arms:
            arm.t += 1
        targets = (self._arm0_target(scene), self._arm1_target(scene))
        return np.concatenate([self._action(i, *targets[i], scene) for i in range(2)])

    # -- arm 0: lid, hammer, hand-over ------------------------------------------------
    def _arm0_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm, eef = self._arms[0], s.eef[0]
        if arm.phase.startswith("lid"):
            return self._lid_target(s)
        if arm.phase.startswith("hammer"):
            return self._pick_hammer_target(s)
        if arm.phase == "present":
            target = _HANDOVER.copy()
            if self._arms[1].phase == "take_grasp" and self._arms[1].t >= 12:
                arm.go("let_go")
            return target, 1.0
        if arm.phase == "let_go":
            if arm.t >= 10:
                arm.hold = eef.copy()
                arm.go("retreat")
            return eef.copy(), -1.0
        # retreat: straight up first (the fingers would catch the hammer's head), then back
        if arm.t <= 20:
            return arm.hold + np.array([0.0, 0.0, 0.12]), -1.0
        return np.array([eef[0], -0.35, 1.12]), -1.0

    def _lid_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm, eef, t = self._arms[0], s.eef[0], self._arms[0].t
        handle = s.lid_handle
        if arm.phase == "lid_above":
            target, gripper = handle + np.array([0.0, 0.0, 0.08]), -1.0
            if _reached(target, eef, 0.01) or t > 60:
                arm.go("lid_descend")
        elif arm.phase == "lid_descend":
            target, gripper = handle + np.array([0.0, 0.0, -0.005]), -1.0
            if _reached(target, eef, 0.006) or t > 50:
                arm.hold = target
                arm.go("lid_grasp")
        elif arm.phase == "lid_grasp":
            target, gripper = arm.hold, 1.0
            if t >= 12:
                arm.go("lid_lift")
        elif arm.phase == "lid_lift":  # just clear of the walls: the arm is cramped here
            target, gripper = arm.hold + np.array([0.0, 0.0, _LID_LIFT]), 1.0
            if _reached(target, eef, 0.01) or t > 40:
                arm.go("lid_move")
        elif arm.phase == "lid_move":
            target, gripper = np.array([self._lid_x, arm.hold[1], arm.hold[2] + _LID_LIFT]), 1.0
            if _reached(target, eef, 0.02) or t > 80:
                arm.go("lid_release")
        else:  # lid_release
            target, gripper = eef.copy(), -1.0
            if t >= 10:
                axis = s.handle_axis
                arm.quat_target = _turn_fingers(
                    s.eef_quat[0], s.finger_yaw[0], float(np.arctan2(axis[1], axis[0])) + np.pi / 2
                )
                arm.go("hammer_above")
        return target, gripper

    def _pick_hammer_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm, eef, t = self._arms[0], s.eef[0], self._arms[0].t
        grip = _handle_point(s.payload, s.handle_axis, _GRIP_OFFSET, -1.0)
        turned = np.linalg.norm(_quat_error(arm.quat_target, s.eef_quat[0])) < 0.05
        if arm.phase == "hammer_above":
            target, gripper = np.array([grip[0], grip[1], _HOVER_Z]), -1.0  # over the walls
            if (_reached(target, eef, 0.005) and turned) or t > 100:
                arm.go("hammer_descend")
        elif arm.phase == "hammer_descend":
            target, gripper = grip + np.array([0.0, 0.0, -0.003]), -1.0
            if _reached(target, eef, 0.004) or t > 60:
                arm.hold = target
                arm.go("hammer_grasp")
        elif arm.phase == "hammer_grasp":
            target, gripper = arm.hold, 1.0
            if t >= 15:
                arm.go("hammer_lift")
        elif arm.phase == "hammer_lift":  # straight up, not turning, clear of the walls
            target, gripper = np.array([arm.hold[0], arm.hold[1], _HOVER_Z]), 1.0
            if eef[2] > _HOVER_Z - 0.01 or t > 60:
                arm.quat_target = arm.quat0.copy()
                arm.go("hammer_turn")
        else:  # hammer_turn: back to the start orientation, the handle along y
            target, gripper = np.array([arm.hold[0], arm.hold[1], _HOVER_Z]), 1.0
            if np.linalg.norm(_quat_error(arm.quat_target, s.eef_quat[0])) < 0.05 or t > 40:
                arm.go("present")
        return target, gripper

    # -- arm 1: trash, take the hammer, place it ---------------------------------------
    def _arm1_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm = self._arms[1]
        if arm.phase.startswith("trash"):
            return self._trash_target(s)
        return self._take_target(s)

    def _trash_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm, eef, t = self._arms[1], s.eef[1], self._arms[1].t
        trash, gripper = s.trash, -1.0
        if arm.phase == "trash_turn":  # fingers square to the cube, via a side waypoint
            arm.quat_target = _rotated_z(
                s.eef_quat[1], _wrap(s.trash_yaw - s.finger_yaw[1], np.pi / 2)
            )
            arm.go("trash_side")
            target = eef.copy()
        elif arm.phase == "trash_side":
            target = trash + np.array([0.08 * self._side, 0.0, 0.14])
            if _reached(target, eef, 0.02) or t > 60:
                arm.go("trash_above")
        elif arm.phase == "trash_above":
            target = trash + np.array([0.0, 0.0, 0.08])
            if _reached(target, eef, 0.01) or t > 60:
                arm.go("trash_descend")
        elif arm.phase == "trash_descend":
            target = trash + np.array([0.0, 0.0, -0.005])
            if _reached(target, eef, 0.006) or t > 50:
                arm.hold = target
                arm.go("trash_grasp")
        elif arm.phase == "trash_grasp":
            target, gripper = arm.hold, 1.0
            if t >= 12:
                arm.go("trash_lift")
        elif arm.phase == "trash_lift":
            target, gripper = np.array([arm.hold[0], arm.hold[1], 1.08]), 1.0
            if t > 25 and trash[2] < arm.hold[2] + 0.03 and arm.retries < 2:  # missed: again
                arm.retries += 1
                arm.go("trash_turn")
            elif eef[2] > 1.05 or t > 60:
                arm.go("trash_carry")
        elif arm.phase == "trash_carry":
            target, gripper = np.array([*s.trash_bin[:2], 1.05]), 1.0
            if _reached(target[:2], eef[:2], 0.015) or t > 100:
                arm.go("trash_release")
        else:  # trash_release
            target = eef.copy()
            if t >= 10:
                arm.quat_target = arm.quat0.copy()
                arm.go("wait")
        return target, gripper

    def _take_target(self, s: _TransportScene) -> tuple[np.ndarray, float]:
        arm, eef, t = self._arms[1], s.eef[1], self._arms[1].t
        grip = _handle_point(s.payload, s.handle_axis, _GRIP_OFFSET, 1.0)
        arm0 = self._arms[0]
        presented = arm0.phase == "present" and (
            (_reached(_HANDOVER, s.eef[0], 0.015) and arm0.t > 10) or arm0.t > 80
        )
        if arm.phase == "wait":
            target, gripper = np.array([_HANDOVER[0], 0.2, 1.2]), -1.0
            if presented:
                arm.go("take_above")
        elif arm.phase == "take_above":
            target, gripper = grip + np.array([0.0, 0.0, 0.08]), -1.0
            if _reached(target, eef, 0.01) or t > 60:
                arm.go("take_descend")
        elif arm.phase == "take_descend":
            target, gripper = grip + np.array([0.0, 0.0, -0.005]), -1.0
            if _reached(target, eef, 0.006) or t > 50:
                arm.go("take_grasp")
        elif arm.phase == "take_grasp":
            target, gripper = eef.copy(), 1.0
            # Until arm 0's open hand has risen clear (lifted with it, it catches the head).
            if (arm0.phase == "retreat" and arm0.t > 30) or t > 90:
                arm.hold = eef.copy()
                arm.go("take_lift")
        elif arm.phase == "take_lift":  # the hammer may swing down: up before carrying it
            target, gripper = np.array([arm.hold[0], arm.hold[1], _CARRY_Z]), 1.0
            if eef[2] > _CARRY_Z - 0.03 or t > 40:
                arm.go("carry")
        elif arm.phase == "carry":  # the hammer's centre over the bin's
            goal = eef + (s.target_bin - s.payload)
            target, gripper = np.array([goal[0], goal[1], _CARRY_Z]), 1.0
            if _reached(s.target_bin[:2], s.payload[:2], 0.01) or t > 120:
                arm.go("lower")
        elif arm.phase == "lower":
            goal = eef + (s.target_bin - s.payload)
            target, gripper = np.array([goal[0], goal[1], eef[2] - 0.03]), 1.0
            if s.payload[2] < s.target_bin[2] + 0.06 or t > 60:
                arm.go("release")
        elif arm.phase == "release":
            target, gripper = eef.copy(), -1.0
            if t >= 10:
                arm.go("retreat")
        else:
            target, gripper = eef + np.array([0.0, 0.0, 0.05]), -1.0
        return target, gripper

    def _action(self, i: int, target: np.ndarray, gripper: float, s: _TransportScene) -> np.ndarray:
        """Arm ``i``'s OSC delta action (its base frame) towards ``target``, with noise."""
        arm, world_to_base = self._arms[i], self._base_rot[i].T
        pos = world_to_base @ ((target - s.eef[i]) / _POS_SCALE * self._gain * 1.7)
        rot = world_to_base @ (_quat_error(arm.quat_target, s.eef_quat[i]) / _ROT_SCALE)
        action = np.concatenate([np.clip(pos, -1, 1), np.clip(rot, -1, 1), [gripper]])
        if self.noise > 0:
            action[:6] += self._rng.normal(0.0, self.noise, 6)
        return np.clip(action, -1.0, 1.0)


def _reached(target: np.ndarray, current: np.ndarray, tol: float) -> bool:
    return bool(np.linalg.norm(np.asarray(target) - np.asarray(current)) < tol)


def make_scripted_policy(task: str, noise: float | None = None) -> Any:
    """The scripted controller for ``task`` (``lift``, ``can``, ``square`` or ``transport``)."""
    if task == "transport":
        return ScriptedTransport() if noise is None else ScriptedTransport(noise=noise)
    if task == "square":
        return ScriptedSquare() if noise is None else ScriptedSquare(noise=noise)
    return ScriptedPickPlace(task) if noise is None else ScriptedPickPlace(task, noise=noise)


def run_episode(env: RobosuiteTaskEnv, policy: Any, seed: int, max_steps: int) -> dict[str, Any]:
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
            f"no scripted controller for {task!r}; scripted tasks: {list(SCRIPTED_TASKS)}."
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
        description=(
            "Scripted robomimic-format demonstrations for Lift, Can, Square, Transport (robosuite)."
        ),
    )
    parser.add_argument("--task", choices=SCRIPTED_TASKS, required=True)
    parser.add_argument("--episodes", type=int, default=50, help="successful demos to keep")
    parser.add_argument("--out", required=True, help="output .hdf5 (written atomically)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode")
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help="std of action noise (0.05; square and transport 0.03)",
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
