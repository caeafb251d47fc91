"""Scripted Franka Kitchen demonstrations (gymnasium-robotics ``FrankaKitchen-v1``).

The kitchen's actions are 9-D joint velocities in [-1, 1] (2 rad/s per unit; the env turns
them into a position target ``q_obs + 2 · a · dt`` with dt = 0.08 s for the arm's position
servos). :class:`EndEffectorController` turns an end-effector goal into such actions:
damped least squares on the MuJoCo Jacobian of the ``end_effector`` site (position and the
hand's start orientation), plus the gravity sag of the servos (``qfrc_bias / kp``) so that
a held pose stays put. :class:`ScriptedKitchen` chains way-points per subtask:

* **light switch**: in front of and right of the switch's lever → push it left.
* **slide cabinet**: in front of and left of the door's handle → push it right.
* **microwave**: hook the fingers behind the door's handle → pull it open along its arc.
* **kettle**: open fingers low in front of it, a little left of its centre → push it back
  along the stove towards its goal on the top left burner (the env's ``kettle`` goal; the
  task is done once the kettle's 7-D pose is within 0.3 of it).

Next to the microwave or the kettle, :data:`HOME` (a joint-space move back to the start
posture) comes between two subtasks, so that every order works (:func:`chain_plans`).
Four subtasks (or three with the kettle) need more than the env's 280 steps:
:func:`default_max_steps` (400), recorded with the tasks in the dataset's env kwargs
(``--max-episode-steps``).

Each episode draws way-point offsets (``--jitter``), a speed (``--speed``) and Gaussian
action noise (``--noise``); with ``--random-order`` the subtask order too (several modes).
Episodes run in ``make_env("FrankaKitchen-v1", tasks_to_complete=<the tasks>)``, which ends
an episode when all of them are completed (the env's ``info["episode_task_completions"]``
lists them); only those episodes are kept, each ending at its completion step. They are
written as a Minari dataset whose metadata holds the env kwargs (so every command makes the
same env: :func:`rllib_diffusion.data.minari_io.load_minari`) and the provenance.

Run ``python -m rllib_diffusion.collect.kitchen_demos --tasks microwave "light switch"
--episodes 50 --dataset-id local/kitchen/scripted-v0`` (D4RL's four: ``--tasks microwave
kettle light_switch slide_cabinet``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rllib_diffusion.collect.successes import collect_successes, success_summary
from rllib_diffusion.data.episodes import Episode

ENV_ID = "FrankaKitchen-v1"
#: The kettle's task name (gymnasium-robotics'; also its goal's key there).
KETTLE = "kettle"
#: Subtasks with a script here (gymnasium-robotics' task names), in D4RL's order.
SCRIPTED_TASKS = ("microwave", KETTLE, "light switch", "slide cabinet")
#: ``--tasks``' default: the three scripted before the kettle (commands documented without
#: ``--tasks``, e.g. in ``tune_configs/dppo_kitchen.py``, collect these).
DEFAULT_TASKS = ("microwave", "light switch", "slide cabinet")
#: The kitchen's subtasks without one.
UNSCRIPTED_TASKS = ("bottom burner", "top burner", "hinge cabinet")
#: The env kwarg that selects the tasks (also the dataset metadata's ``env_kwargs`` key).
TASKS_KWARG = "tasks_to_complete"
#: The episode step limit's kwarg (``gym.make``'s; also recorded in ``env_kwargs``).
STEPS_KWARG = "max_episode_steps"
#: The env's registered step limit (D4RL's), the default for up to three subtasks ...
ENV_MAX_STEPS = 280
#: ... but for three or four with the kettle (scripted, seeds 0-19, random orders: up to 363
#: steps for the four; 285 for microwave, kettle and slide cabinet).
LONG_MAX_STEPS = 400
PROVENANCE_KEY = "collection"
_EE_SITE = "end_effector"
_KETTLE_JOINT = "kettle"  # the kettle's free joint in the MuJoCo model
_ARM = 7  # arm joints; actions 7 and 8 are the two fingers (+1 opens, -1 closes)
#: Proportional gain (1/s) of the joint-space move back to the start posture.
HOME_GAIN = 8.0
#: Cap (rad/s) on each joint's speed in that move.
HOME_MAX_SPEED = 2.0
#: The move ends when every arm joint is within this (rad) of the start posture ...
HOME_TOL = 0.3
#: ... or after this many steps.
HOME_MAX_STEPS = 30
#: Speed-cap factor of the way-point after :data:`HOME` (a free move to the next task).
TRANSIT_SPEEDUP = 1.5
#: The kettle's push: the end-effector site is this far (m) behind the kettle's centre when
#: the open finger tips touch its front (its body is a 24.4 cm box; tips 4.5 cm ahead) ...
KETTLE_REACH = 0.17
#: ... it aims to leave the kettle this far (m) short of its goal (the hand lags behind its
#: target while pushing: the kettle stops ~18 cm short, well inside the env's 0.3) ...
KETTLE_SHORT = 0.12
#: ... at this height (m) above the kettle's base: lower, the fingers caught on the stove.
KETTLE_PUSH_HEIGHT = 0.07
#: ... and this far (m) left of its centre: pushed at or right of it, it turned anticlockwise
#: and on some seeds (1 to 7 of 20) stalled outside the env's threshold.
KETTLE_PUSH_LEFT = 0.03
#: Steps of the microwave's back-off from the handle (the hand is clear after ~10; it
#: then lingers to turn, which wasted up to 10 of the 280 steps in front of the next task).
BACK_OFF_STEPS = 10


@dataclass
class EndEffectorController:
    """End-effector position (and fixed orientation) control in the kitchen's action units.

    Attributes:
        model, data: the env's MuJoCo model and data (``env.unwrapped.model/.data``).
        gain: proportional gain (1/s) on the position and orientation errors.
        max_speed: cap on the commanded end-effector speed (m/s).
        damping: damped-least-squares damping of the Jacobian pseudo-inverse.
    """

    model: Any
    data: Any
    gain: float = 6.0
    max_speed: float = 0.5
    damping: float = 0.05
    _site: int = field(init=False)
    _dt: float = field(init=False)
    _kp: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._site = self.model.site(_EE_SITE).id
        self._dt = float(self.model.opt.timestep) * 40  # FrankaRobot's frame_skip
        self._kp = np.asarray(self.model.actuator_gainprm[:_ARM, 0], dtype=np.float64)

    def position(self) -> np.ndarray:
        """(3,) world position of the end-effector site."""
        return self.data.site_xpos[self._site].copy()

    def orientation(self) -> np.ndarray:
        """(4,) world quaternion (w, x, y, z) of the end-effector site."""
        import mujoco

        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._site])
        return quat

    def turn_to(self, quat: np.ndarray) -> float:
        """Angle (rad) between the site's orientation and ``quat`` (w, x, y, z)."""
        return float(2.0 * np.arccos(min(1.0, abs(float(np.dot(quat, self.orientation()))))))

    def _joint_velocities(self, jac: np.ndarray, twist: np.ndarray) -> np.ndarray:
        """Damped least squares for (7,) joint velocities giving ``twist`` (6,); joints
        at a limit that the solution would push further are frozen and it is re-solved
        (the kitchen's start pose has the shoulder at its limit)."""
        q = self.data.qpos[:_ARM]
        low, high = self.model.jnt_range[:_ARM].T
        free = np.ones(_ARM, dtype=bool)
        qdot = np.zeros(_ARM)
        for _ in range(3):
            j = jac[:, free]
            qdot = np.zeros(_ARM)
            qdot[free] = j.T @ np.linalg.solve(j @ j.T + self.damping**2 * np.eye(6), twist)
            stuck = ((q < low + 0.03) & (qdot < 0)) | ((q > high - 0.03) & (qdot > 0))
            if not stuck.any():
                break
            free &= ~stuck
        return qdot

    def _servo_action(self, qdot: np.ndarray, grip: float) -> np.ndarray:
        """(9,) action for arm joint velocities ``qdot`` (7,) and ``grip``."""
        # The servo target is q + 2·a·dt; it stops short by the gravity torque / kp.
        lead = qdot * self._dt + self.data.qfrc_bias[:_ARM] / self._kp
        arm = lead / (2.0 * self._dt)
        return np.clip(np.concatenate([arm, [grip, grip]]), -1.0, 1.0)

    def joint_action(self, q_target: np.ndarray, grip: float) -> np.ndarray:
        """(9,) action moving the arm's joints straight towards ``q_target`` (7,) at
        :data:`HOME_GAIN`, each joint's speed capped at :data:`HOME_MAX_SPEED`."""
        error = np.asarray(q_target) - self.data.qpos[:_ARM]
        qdot = HOME_GAIN * error
        peak = float(np.abs(qdot).max())
        if peak > HOME_MAX_SPEED:
            qdot *= HOME_MAX_SPEED / peak  # the same direction in joint space
        return self._servo_action(qdot, grip)

    def joint_error(self, q_target: np.ndarray) -> float:
        """Largest |q - q_target| (rad) over the arm's joints."""
        return float(np.abs(np.asarray(q_target) - self.data.qpos[:_ARM]).max())

    def action(self, target: np.ndarray, quat: np.ndarray, grip: float) -> np.ndarray:
        """(9,) action in [-1, 1] moving the site towards ``target`` with orientation
        ``quat`` (w, x, y, z); ``grip`` +1 opens the fingers, -1 closes them."""
        import mujoco

        m, d = self.model, self.data
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mujoco.mj_jacSite(m, d, jacp, jacr, self._site)
        jac = np.vstack([jacp[:, :_ARM], jacr[:, :_ARM]])
        velocity = self.gain * (np.asarray(target) - d.site_xpos[self._site])
        speed = float(np.linalg.norm(velocity))
        if speed > self.max_speed:
            velocity *= self.max_speed / speed
        local = np.zeros(3)
        mujoco.mju_subQuat(local, np.asarray(quat, dtype=np.float64), self.orientation())
        # mju_subQuat answers in the site's frame; the Jacobian is in the world frame.
        spin = self.gain * (d.site_xmat[self._site].reshape(3, 3) @ local)
        qdot = self._joint_velocities(jac, np.concatenate([velocity, spin]))
        return self._servo_action(qdot, grip)


@dataclass(frozen=True)
class Waypoint:
    """One phase of a script: move the end-effector to ``target`` (world, m) with the
    hand turned ``yaw`` rad about the vertical from its start orientation.

    ``relative``: the target is an offset from where the site was when the phase began.
    The phase ends when the site is within ``tol`` of the target (and the hand within
    0.1 rad of its orientation), when the env reports
    subtask ``task`` completed (if set), or after ``max_steps``. ``speed`` scales the
    episode's end-effector speed cap. ``home``: instead, move the arm's joints back to the
    episode's start posture (a straight line in joint space; ``target``, ``yaw`` and
    ``tol`` unused: the phase ends within :data:`HOME_TOL` of it).
    """

    target: tuple[float, float, float]
    grip: float = 1.0
    tol: float = 0.015
    max_steps: int = 40
    yaw: float = 0.0
    task: str | None = None
    speed: float = 1.0
    relative: bool = False
    home: bool = False


#: Back to the start posture, from which every script works. (The Cartesian controller
#: only steers the hand: after the light switch or the slide cabinet the arm reached the
#: microwave in another posture, with the shoulder, the wrist and its flexion at their
#: limits, and stalled ~15 cm above the handle; after the microwave it reached the other
#: two slowly, in a posture whose push at the light switch's lever sometimes missed.)
HOME = Waypoint((0.0, 0.0, 0.0), max_steps=HOME_MAX_STEPS, home=True)
#: :data:`HOME` comes between two subtasks when either is one of these (the light switch
#: and the slide cabinet follow each other without it; after the kettle's low push the
#: light switch's push missed in every one of 5 seeds without it).
HOME_NEXT_TO = frozenset({"microwave", KETTLE})


def chain_plans(order: Sequence[str], plans: Sequence[list[Waypoint]]) -> list[Waypoint]:
    """The way-points of ``plans`` (one per subtask of ``order``) in a row, with
    :data:`HOME` between two subtasks next to one of :data:`HOME_NEXT_TO`; the way-point
    after it moves :data:`TRANSIT_SPEEDUP` times faster (the 280 steps are tight)."""
    chained = list(plans[0])
    for prev, task, plan in zip(order, order[1:], plans[1:]):
        if {prev, task} & HOME_NEXT_TO:
            first = replace(plan[0], speed=plan[0].speed * TRANSIT_SPEEDUP)
            plan = [HOME, first, *plan[1:]]
        chained += plan
    return chained


def _site(data: Any, name: str) -> np.ndarray:
    return data.site(name).xpos.copy()


def _turn_about(point: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    """``point`` (3,) turned by ``angle`` rad about the vertical through ``pivot``."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.asarray(point, dtype=np.float64).copy()
    out[:2] = pivot[:2] + np.array([[c, -s], [s, c]]) @ (out[:2] - pivot[:2])
    return out


def _light_switch_plan(data: Any, jitter: np.ndarray) -> list[Waypoint]:
    """Closed fingers in front of the lever, on its right → push it left → back off."""
    # The lever is a 2 cm stick that the finger tips overlap by ~2 cm: offsets in height
    # and depth stay small (the end-effector site is ~4.5 cm behind the tips).
    x, y, z = _site(data, "light_site") + jitter * np.array([1.0, 0.3, 0.2])
    return [
        Waypoint((x + 0.07, y - 0.11, z), grip=-1.0, tol=0.03),
        Waypoint((x + 0.07, y - 0.04, z), grip=-1.0, tol=0.01, max_steps=20),  # settle
        # Twice the speed cap: the servo's push grows with the commanded speed.
        Waypoint((x - 0.10, y - 0.04, z), grip=-1.0, task="light switch", speed=2.0),
        Waypoint((x - 0.05, y - 0.16, z), grip=-1.0, tol=0.03),
    ]


def _slide_cabinet_plan(data: Any, jitter: np.ndarray) -> list[Waypoint]:
    """Beside the door's handle (on its left, in front) → push the door right → back off."""
    handle = _site(data, "slide_site") + jitter
    x, y, z = handle
    return [
        Waypoint((x - 0.07, y - 0.12, z), tol=0.03),
        Waypoint((x - 0.07, y - 0.03, z)),
        Waypoint((x + 0.18, y - 0.03, z), task="slide cabinet", max_steps=50),
        Waypoint((x + 0.10, y - 0.15, z), tol=0.03),
    ]


def _microwave_plan(data: Any, jitter: np.ndarray) -> list[Waypoint]:
    """Around the door's handle bar → close the fingers → pull along the door's arc."""
    handle = _site(data, "microhandle_site") + jitter * np.array([0.3, 0.3, 1.0])
    hinge = data.joint("microwave").xanchor.copy()
    # The handle's frame: its y axis points from the bar into the door (the approach).
    approach = data.site("microhandle_site").xmat.reshape(3, 3)[:, 1].copy()
    yaw0 = float(np.arctan2(-approach[0], approach[1]))
    # 2 cm past the bar's axis: the bar sits deep between the fingers and cannot slip.
    grasp = handle + 0.02 * approach
    plan = [
        Waypoint(tuple(grasp - 0.12 * approach), yaw=yaw0, tol=0.02),
        Waypoint(tuple(grasp), yaw=yaw0, tol=0.02, max_steps=20),
        Waypoint(tuple(grasp), grip=-1.0, yaw=yaw0, tol=0.0, max_steps=5),
    ]
    pull = [
        Waypoint(
            tuple(_turn_about(grasp, hinge, angle)),
            grip=-1.0, yaw=yaw0 + angle, tol=0.015, max_steps=15, task="microwave",
        )
        for angle in np.linspace(-0.1, -0.8, 8)
    ]  # fmt: skip
    # Let go where the door opened far enough, and back away the way the hand came in.
    back = _turn_about(-0.12 * approach, np.zeros(3), -0.5)
    return [
        *plan,
        *pull,
        Waypoint((0.0, 0.0, 0.0), yaw=yaw0 - 0.5, tol=0.0, max_steps=3, relative=True),
        Waypoint(tuple(back), yaw=yaw0 - 0.5, tol=0.03, max_steps=BACK_OFF_STEPS, relative=True),
    ]


def _kettle_plan(data: Any, jitter: np.ndarray) -> list[Waypoint]:
    """Open fingers low in front of the kettle → push it back along the stove towards its
    goal (gymnasium-robotics' top left burner) → back off and up."""
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS

    goal = OBS_ELEMENT_GOALS[KETTLE][:3]
    kettle = data.joint(_KETTLE_JOINT).qpos[:3] + jitter * np.array([1.0, 0.3, 0.3])
    x, y, z = kettle + np.array([-KETTLE_PUSH_LEFT, 0.0, KETTLE_PUSH_HEIGHT])
    end = (x + goal[0] - kettle[0], goal[1] - KETTLE_SHORT - KETTLE_REACH, z)
    return [
        Waypoint((x, y - 0.30, z + 0.05), tol=0.03),
        Waypoint((x, y - 0.22, z), max_steps=25),
        # Faster: the push holds the hand back.
        Waypoint(end, max_steps=60, speed=1.5),
        Waypoint((end[0], end[1] - 0.12, z + 0.1), tol=0.03),
    ]


#: Script of each subtask: (MuJoCo data, per-episode offset (3,)) → way-points.
PLANS: dict[str, Callable[[Any, np.ndarray], list[Waypoint]]] = {
    "light switch": _light_switch_plan,
    "slide cabinet": _slide_cabinet_plan,
    "microwave": _microwave_plan,
    KETTLE: _kettle_plan,
}


def _turned(quat: np.ndarray, yaw: float) -> np.ndarray:
    """``quat`` (w, x, y, z) turned by ``yaw`` rad about the world's vertical."""
    import mujoco

    turn = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, turn, quat)
    return out


@dataclass
class ScriptedKitchen:
    """Way-point script over ``tasks`` (in order, or shuffled per episode).

    Call :meth:`reset` after each ``env.reset``, then :meth:`act` with the latest info.

    Attributes:
        tasks: subtasks to script, names from :data:`SCRIPTED_TASKS`.
        noise: std of the Gaussian noise added to the arm's actions.
        jitter: std (m) of each subtask's per-episode way-point offset.
        speed: (low, high) of the per-episode end-effector speed cap (m/s).
        random_order: draw the subtask order per episode.
    """

    tasks: Sequence[str]
    noise: float = 0.05
    jitter: float = 0.01
    speed: tuple[float, float] = (0.35, 0.5)
    random_order: bool = False
    #: this episode's subtask order (set by :meth:`reset`).
    order: list[str] = field(init=False, default_factory=list)
    _plan: list[Waypoint] = field(init=False, default_factory=list)
    _phase: int = field(init=False, default=0)
    _t_phase: int = field(init=False, default=0)
    _quat0: np.ndarray | None = field(init=False, default=None)
    _speed: float = field(init=False, default=0.5)
    _target: np.ndarray = field(init=False, default_factory=lambda: np.zeros(3))
    _q_home: np.ndarray = field(init=False, default_factory=lambda: np.zeros(_ARM))
    _ctrl: EndEffectorController | None = field(init=False, default=None)
    _rng: np.random.Generator = field(init=False, default_factory=np.random.default_rng)

    def reset(self, env: Any, rng: np.random.Generator) -> None:
        """Draw this episode's order, offsets and speed; plan from the env's start state."""
        sim = env.unwrapped
        self._rng = rng
        self._ctrl = EndEffectorController(sim.model, sim.data)
        self._speed = float(rng.uniform(*self.speed))
        self._quat0 = self._ctrl.orientation()
        order = list(self.tasks)
        if self.random_order:
            order = [order[i] for i in rng.permutation(len(order))]
        self.order = order
        self._q_home = sim.data.qpos[:_ARM].copy()
        plans = [PLANS[task](sim.data, rng.normal(0.0, self.jitter, 3)) for task in order]
        self._plan = chain_plans(order, plans)
        self._phase, self._t_phase = 0, 0

    def act(self, info: dict[str, Any]) -> np.ndarray:
        """(9,) action for the current phase; ``info`` is the env's latest info dict."""
        assert self._ctrl is not None and self._quat0 is not None, "call reset() first"
        self._advance(info.get("episode_task_completions", ()))
        wp = self._plan[min(self._phase, len(self._plan) - 1)]
        self._t_phase += 1
        self._ctrl.max_speed = self._speed * wp.speed
        if wp.home:
            action = self._ctrl.joint_action(self._q_home, wp.grip)
        else:
            action = self._ctrl.action(self._target, _turned(self._quat0, wp.yaw), wp.grip)
        action[:_ARM] += self._rng.normal(0.0, self.noise, _ARM)
        return np.clip(action, -1.0, 1.0)

    def _advance(self, completed: Sequence[str]) -> None:
        """Move on while the current way-point is reached, its task done or time up."""
        assert self._ctrl is not None
        while self._phase < len(self._plan):
            wp = self._plan[self._phase]
            if self._t_phase == 0:  # the phase begins: fix its target
                base = self._ctrl.position() if wp.relative else np.zeros(3)
                self._target = base + np.asarray(wp.target)
            near = self._reached(wp)
            if not (near or wp.task in completed or self._t_phase >= wp.max_steps):
                return
            self._phase, self._t_phase = self._phase + 1, 0

    def _reached(self, wp: Waypoint) -> bool:
        """Whether the arm is at way-point ``wp`` (its target and orientation, or the start
        posture for a ``home`` phase)."""
        assert self._ctrl is not None and self._quat0 is not None
        if wp.home:
            return self._ctrl.joint_error(self._q_home) < HOME_TOL
        turn = self._ctrl.turn_to(_turned(self._quat0, wp.yaw))
        return bool(np.linalg.norm(self._target - self._ctrl.position()) < wp.tol and turn < 0.1)


def run_episode(env: Any, script: ScriptedKitchen, seed: int) -> tuple[Episode, bool]:
    """One scripted episode from ``env.reset(seed=seed)``; returns it and whether every
    task of the env was completed (the env then terminates the episode)."""
    obs, info = env.reset(seed=seed)
    script.reset(env, np.random.default_rng(seed))
    observations, actions, rewards = [obs], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = script.act(info)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
    n = len(actions)
    episode = Episode(
        observations=np.asarray(observations),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards),
        terminations=np.eye(n, dtype=bool)[-1] & terminated,
        truncations=np.eye(n, dtype=bool)[-1] & truncated & (not terminated),
    )
    return episode, bool(terminated)


def _attempt(env: Any, script: ScriptedKitchen, seed: int) -> tuple[Episode, bool, int]:
    """One scripted episode as :func:`collect_successes` runs it: episode, success, steps."""
    episode, success = run_episode(env, script, seed)
    return episode, success, episode.length


def task_names(names: Sequence[str]) -> list[str]:
    """``names`` as the env's task names (``light_switch`` / ``light-switch`` →
    ``light switch``), in order; unknown or repeated names are a ``ValueError`` line."""
    tasks = [" ".join(n.replace("_", " ").replace("-", " ").split()).lower() for n in names]
    unknown = [n for n, t in zip(names, tasks, strict=True) if t not in SCRIPTED_TASKS]
    if unknown:
        raise ValueError(
            f"no kitchen script for {unknown}; scripted tasks: {list(SCRIPTED_TASKS)} "
            f"({', '.join(UNSCRIPTED_TASKS)} have none: use D4RL's data)."
        )
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"--tasks needs one or more distinct tasks, got {list(names)}.")
    return tasks


def default_max_steps(tasks: Sequence[str]) -> int:
    """The step limit for ``tasks`` unless one is given: :data:`LONG_MAX_STEPS` for three or
    more subtasks with the kettle, else :data:`ENV_MAX_STEPS`."""
    return LONG_MAX_STEPS if len(tasks) >= 3 and KETTLE in tasks else ENV_MAX_STEPS


def kitchen_env_kwargs(tasks: Sequence[str], max_steps: int | None = None) -> dict[str, Any]:
    """The env kwargs (also the dataset's ``env_kwargs``): ``tasks`` and the step limit
    (``None``: :func:`default_max_steps`)."""
    return {TASKS_KWARG: list(tasks), STEPS_KWARG: max_steps or default_max_steps(tasks)}


def make_kitchen_env(tasks: Sequence[str], max_steps: int | None = None) -> Any:
    """The kitchen with exactly ``tasks`` to complete (flattened observations), truncated
    after ``max_steps`` (``None``: :func:`default_max_steps`)."""
    from rllib_diffusion.envs.tasks import make_env

    return make_env(ENV_ID, **kitchen_env_kwargs(tasks, max_steps))


def collect_kitchen_demos(
    tasks: Sequence[str],
    episodes: int,
    *,
    seed: int = 0,
    script: ScriptedKitchen | None = None,
    max_attempts: int | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> tuple[list[Episode], dict[str, Any]]:
    """Run the script until ``episodes`` episodes complete every task (at most
    ``max_attempts``, default ``2 * episodes + 10``) within ``max_steps`` steps each
    (``None``: :func:`default_max_steps`); attempt ``j`` resets with ``seed + j``.

    Returns the successful episodes and a summary (its step limit, kept / attempts, success
    rate, mean demo length, env steps and steps/s of all attempts, seconds).
    """
    tasks = task_names(tasks)
    script = script or ScriptedKitchen(tasks)
    max_attempts = max_attempts or 2 * episodes + 10
    max_steps = max_steps or default_max_steps(tasks)
    env = make_kitchen_env(tasks, max_steps)
    start = time.perf_counter()
    try:
        kept, lengths, attempts, steps = collect_successes(
            lambda s: _attempt(env, script, s),
            episodes,
            seed=seed,
            max_attempts=max_attempts,
            start=start,
            describe=(lambda a: f"[kitchen_demos] episode {a} ({' → '.join(script.order)}):")
            if progress
            else None,
        )
    finally:
        env.close()
    seconds = time.perf_counter() - start
    summary = {
        "env_id": ENV_ID,
        "tasks": tasks,
        STEPS_KWARG: max_steps,
        **success_summary(lengths, attempts, steps, seconds),
    }
    return kept, summary


def write_kitchen_dataset(
    episodes: list[Episode],
    dataset_id: str,
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
) -> str:
    """Write scripted kitchen ``episodes`` as Minari dataset ``dataset_id``: the env kwargs
    (``provenance``'s tasks and step limit, :func:`kitchen_env_kwargs`), references 0 and
    the number of tasks, ``provenance`` under :data:`PROVENANCE_KEY`. Returns the dataset
    directory."""
    from rllib_diffusion.data import write_minari

    tasks = list(provenance["tasks"])
    return write_minari(
        episodes,
        dataset_id,
        env_id=ENV_ID,
        env_kwargs=kitchen_env_kwargs(tasks, provenance.get(STEPS_KWARG)),
        ref_min_score=0.0,
        ref_max_score=float(len(tasks)),
        algorithm_name="scripted-kitchen-demonstrator",
        author="rllib-diffusion kitchen_demos",
        description=f"{len(episodes)} scripted Franka Kitchen demonstrations: {', '.join(tasks)}.",
        overwrite=overwrite,
        extra_metadata={PROVENANCE_KEY: provenance},
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        tasks = task_names(args.tasks)
    except ValueError as err:
        parser.error(str(err))
    _check_args(parser, args)
    from rllib_diffusion.data.errors import DatasetError
    from rllib_diffusion.data.minari_io import check_output_id

    os.environ.setdefault("MUJOCO_GL", "egl")
    script = ScriptedKitchen(
        tasks, noise=args.noise, jitter=args.jitter, speed=tuple(args.speed),
        random_order=args.random_order,
    )  # fmt: skip
    try:
        check_output_id(args.dataset_id, overwrite=args.overwrite)  # before any episode
        episodes, summary = collect_kitchen_demos(
            tasks, args.episodes, seed=args.seed, script=script,
            max_attempts=args.max_attempts, max_steps=args.max_episode_steps,
        )  # fmt: skip
        if not episodes:
            raise DatasetError(f"no episode completed {tasks} in {summary['attempts']} attempts.")
        provenance = {
            "script": "rllib_diffusion.collect.kitchen_demos",
            "seed": args.seed, "noise": args.noise, "jitter": args.jitter,
            "speed": list(args.speed), "random_order": args.random_order, **summary,
        }  # fmt: skip
        summary["dataset"] = write_kitchen_dataset(
            episodes, args.dataset_id, provenance, overwrite=args.overwrite
        )
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m rllib_diffusion.collect.kitchen_demos",
        description=f"Scripted {ENV_ID} demonstrations, written as a Minari dataset whose env "
        "(its tasks_to_complete and step limit) every command then uses.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        help=f"subtasks, in order (choices: {', '.join(SCRIPTED_TASKS)}; light_switch also "
        "works); the env ends an episode when all are done",
    )
    parser.add_argument("--episodes", type=int, default=50, help="successful demos to keep")
    parser.add_argument(
        "--dataset-id", default="local/kitchen/scripted-v0", help="Minari id to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode")
    parser.add_argument("--noise", type=float, default=0.05, help="std of the arm's action noise")
    parser.add_argument(
        "--jitter", type=float, default=0.01, help="std (m) of each subtask's way-point offset"
    )
    parser.add_argument(
        "--speed", type=float, nargs=2, default=[0.35, 0.5], metavar=("LOW", "HIGH"),
        help="range of the per-episode end-effector speed cap (m/s)",
    )  # fmt: skip
    parser.add_argument(
        "--random-order", action="store_true", help="draw the subtask order per episode"
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="give up after this many attempts (None: 2·episodes+10)",
    )
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help=f"the env's step limit, recorded in the dataset's env kwargs (None: "
        f"{LONG_MAX_STEPS} for 3 or 4 tasks with the kettle, else {ENV_MAX_STEPS}, the env's)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range values (``parser.error``: one line)."""
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.max_attempts is not None and args.max_attempts < 1:
        parser.error("--max-attempts must be >= 1")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        parser.error("--max-episode-steps must be >= 1")
    if args.noise < 0 or args.jitter < 0:
        parser.error("--noise and --jitter must be >= 0")
    if not 0 < args.speed[0] <= args.speed[1]:
        parser.error("--speed LOW HIGH needs 0 < LOW <= HIGH")


if __name__ == "__main__":
    sys.exit(main())
