"""robomimic's manipulation tasks (Lift, Can, Square, Transport) as gymnasium envs.

The tasks run on robosuite 1.5 (``pip install 'rllib-diffusion[robot]'``; see
``docs/robot_tasks.md``), configured as robomimic's low-dim datasets and DPPO's robomimic
configs are: Panda arm(s), OSC_POSE delta controller at 20 Hz, no cameras, object state.

* **Observation**: the flat float32 concatenation of DPPO's low-dim keys, in DPPO's order
  (``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``, [``robot1_*`` for
  Transport], ``object``), i.e. :data:`rllib_diffusion.data.robomimic_io.DEFAULT_LOW_DIM_KEYS`
  restricted to the task's robots; robomimic's ``object`` is robosuite's ``object-state``.
  Lift 19, Can 23, Square 23, Transport 59 dims.
* **Action**: OSC_POSE deltas in [-1, 1] per arm (3 position, 3 rotation, 1 gripper).
* **Reward**: sparse, 1.0 on a step where the task is solved, else 0.0;
  ``info["success"]`` says the same as a bool. By default the episode *terminates* at the
  first success (return = success, as robomimic's demos end there); pass
  ``terminate_on_success=False`` to keep stepping as DPPO's robomimic envs do.
* **Episode length**: DPPO's ``max_episode_steps`` (Lift 300, Can 300, Square 400,
  Transport 800), applied by gymnasium's ``TimeLimit`` (``max_episode_steps=`` overrides).
* **Video**: ``render_mode="rgb_array"`` (with ``width``/``height``, ``camera``) renders
  offscreen (``MUJOCO_GL=egl`` or ``osmesa``), which ``rllib-diffusion evaluate --video``
  uses.
* **Seeding**: ``reset(seed=s)`` reseeds robosuite's generator, so object placements are
  reproducible; :meth:`RobosuiteTaskEnv.get_state` / :meth:`reset_to` save and restore
  the exact simulator state (robomimic's ``states`` / ``model_file``), for demo replay.

Action normalisation is the package's usual one: policies trained on a dataset act in
[-1, 1] and :class:`~rllib_diffusion.envs.chunking.ActionChunkWrapper` maps their actions
back with the dataset's min-max statistics.

Only this module imports robosuite, and only when an env is made: registering the ids
(:func:`register`, done when ``rllib_diffusion.envs`` is imported) costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

#: gymnasium namespace of the robomimic task ids (``robomimic/Lift-v0``, ...).
NAMESPACE = "robomimic"
ROBOSUITE_VERSION = "1.5.2"
_INSTALL_HINT = (
    "The robomimic tasks need robosuite 1.5.2: `pip install 'rllib-diffusion[robot]'` and then "
    "`pip install --no-deps robosuite==1.5.2` (see docs/robot_tasks.md for why --no-deps)."
)


@dataclass(frozen=True)
class RobotTask:
    """One robomimic task: its gymnasium id, robosuite env and DPPO's settings."""

    env_id: str
    robosuite_env: str
    robots: tuple[str, ...]
    max_episode_steps: int
    obs_dim: int

    @property
    def action_dim(self) -> int:
        return 7 * len(self.robots)

    @property
    def obs_keys(self) -> tuple[str, ...]:
        return obs_keys_for(len(self.robots))


ROBOT_TASKS: dict[str, RobotTask] = {
    t.env_id: t
    for t in (
        RobotTask(f"{NAMESPACE}/Lift-v0", "Lift", ("Panda",), 300, 19),
        RobotTask(f"{NAMESPACE}/Can-v0", "PickPlaceCan", ("Panda",), 300, 23),
        RobotTask(f"{NAMESPACE}/Square-v0", "NutAssemblySquare", ("Panda",), 400, 23),
        RobotTask(f"{NAMESPACE}/Transport-v0", "TwoArmTransport", ("Panda", "Panda"), 800, 59),
    )
}

#: Short names used by the demo collector's ``--task`` and in docs.
TASK_ALIASES = {
    "lift": f"{NAMESPACE}/Lift-v0",
    "can": f"{NAMESPACE}/Can-v0",
    "square": f"{NAMESPACE}/Square-v0",
    "transport": f"{NAMESPACE}/Transport-v0",
}


def obs_keys_for(num_robots: int) -> tuple[str, ...]:
    """DPPO's low-dim observation keys for a task with ``num_robots`` arms, in order."""
    keys = []
    for r in range(num_robots):
        keys += [f"robot{r}_eef_pos", f"robot{r}_eef_quat", f"robot{r}_gripper_qpos"]
    return (*keys, "object")


def task_for(name: str) -> RobotTask:
    """The task for a gymnasium id, a short name (``lift``) or a robosuite env name."""
    if name in ROBOT_TASKS:
        return ROBOT_TASKS[name]
    if name.lower() in TASK_ALIASES:
        return ROBOT_TASKS[TASK_ALIASES[name.lower()]]
    for task in ROBOT_TASKS.values():
        if task.robosuite_env == name:
            return task
    raise KeyError(
        f"unknown robomimic task {name!r}; known: {sorted(TASK_ALIASES)} "
        f"({', '.join(ROBOT_TASKS)})."
    )


def env_id_for_robosuite_env(env_name: str | None) -> str | None:
    """Our gymnasium id for a robosuite env name (``"PickPlaceCan"`` → ``robomimic/Can-v0``)."""
    for task in ROBOT_TASKS.values():
        if task.robosuite_env == env_name:
            return task.env_id
    return None


def register() -> None:
    """Register the four ids with gymnasium (idempotent; robosuite is not imported)."""
    for task in ROBOT_TASKS.values():
        if task.env_id not in gym.registry:
            gym.register(
                id=task.env_id,
                entry_point="rllib_diffusion.envs.robosuite_tasks:RobosuiteTaskEnv",
                max_episode_steps=task.max_episode_steps,
                kwargs={"task": task.robosuite_env},
            )


def import_robosuite() -> Any:
    """Import robosuite quietly (its import logs set-up warnings that do not apply here)."""
    logger = logging.getLogger("robosuite_logs")

    def _quiet(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    logger.addFilter(_quiet)
    try:
        import robosuite
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    finally:
        logger.removeFilter(_quiet)
    logger.setLevel(logging.WARNING)  # not its INFO line on every controller load
    return robosuite


def controller_config(num_robots: int) -> dict[str, Any]:
    """robosuite 1.5's BASIC composite controller: OSC_POSE delta per arm, as robomimic's
    ``env_meta`` (kp 150, ±0.05 m / ±0.5 rad per step) describes."""
    robosuite = import_robosuite()
    from robosuite.controllers import load_composite_controller_config

    del num_robots, robosuite  # each Panda of a two-arm task is its own "right" arm
    config = load_composite_controller_config(controller="BASIC")
    # Only the arm part: the others (torso, head, base, legs, left) are not on a Panda.
    config["body_parts"] = {"right": config["body_parts"]["right"]}
    return config


def robosuite_kwargs(task: RobotTask, *, offscreen: bool = False) -> dict[str, Any]:
    """``robosuite.make`` kwargs for ``task`` (recorded as ``env_args`` in demo files)."""
    return {
        "robots": list(task.robots),
        "has_renderer": False,
        "has_offscreen_renderer": offscreen,
        "use_camera_obs": False,
        "use_object_obs": True,
        "reward_shaping": False,
        "control_freq": 20,
        "ignore_done": True,
        "hard_reset": True,
    }


class RobosuiteTaskEnv(gym.Env):
    """A robosuite task with DPPO's low-dim observation, sparse success reward and
    ``info["success"]`` (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "Lift",
        *,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        camera: str = "agentview",
        terminate_on_success: bool = True,
        obs_keys: list[str] | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.task = task_for(task)
        robosuite = import_robosuite()
        self.render_mode = render_mode
        self.width, self.height, self.camera = int(width), int(height), camera
        self.terminate_on_success = bool(terminate_on_success)
        self.obs_keys = tuple(obs_keys) if obs_keys is not None else self.task.obs_keys
        kwargs = robosuite_kwargs(self.task, offscreen=render_mode is not None)
        self.robosuite_kwargs = kwargs
        self._env = robosuite.make(
            self.task.robosuite_env,
            controller_configs=controller_config(len(self.task.robots)),
            **kwargs,
        )
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(
            low.astype(np.float32), high.astype(np.float32), dtype=np.float32
        )
        self._free_gl_context()
        obs = self._flat(self._env.reset())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, obs.shape, dtype=np.float32)
        self._last_obs: dict[str, np.ndarray] | None = None

    # -- gymnasium API ---------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Every placement sampler and robot holds this very Generator: reseed in place.
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._free_gl_context()
        self._env.reset()
        self._refresh_controllers()
        raw = self._env._get_observations(force_update=True)
        return self._flat(raw), {"success": False}

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        raw, _, _, _ = self._env.step(action)
        success = bool(self._env._check_success())
        terminated = success and self.terminate_on_success
        return self._flat(raw), float(success), terminated, False, {"success": success}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        self._current_gl_context()
        frame = self._env.sim.render(camera_name=self.camera, width=self.width, height=self.height)
        return np.ascontiguousarray(frame[::-1])  # MuJoCo's image rows are bottom-up

    def _free_gl_context(self) -> None:
        """Free the offscreen GL context of the current sim now, with it current.

        robosuite makes a new sim and GL context on every hard reset (and in
        ``reset_from_xml_string``) and leaves the old ones to Python's garbage collector,
        whose ``MjrContext.free()`` then runs in whichever context is current: the *new*
        one, whose framebuffer and textures have the same GL names, so they are deleted
        and frames came out black or garbled, depending on when the collector ran.
        """
        if self.render_mode is None or self._env is None:
            return
        sim = getattr(self._env, "sim", None)
        context = getattr(sim, "_render_context_offscreen", None)
        if context is None:
            return
        context.gl_ctx.make_current()
        context.con.free()
        context.gl_ctx.free()  # a second free (the collector's) is a no-op

    def _current_gl_context(self) -> None:
        """Make the offscreen GL context current (render envs only)."""
        if self.render_mode is None or self._env is None:
            return
        context = getattr(self._env.sim, "_render_context_offscreen", None)
        if context is not None:
            context.gl_ctx.make_current()

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            with contextlib.suppress(Exception):
                self._free_gl_context()
                env.close()
            self._env = None

    # -- robomimic conventions -------------------------------------------------------
    @property
    def robosuite_env(self) -> Any:
        """The underlying robosuite env."""
        return self._env

    def raw_observation(self) -> dict[str, np.ndarray]:
        """The latest observation dict under robomimic's key names (``object`` included)."""
        assert self._last_obs is not None, "reset() first"
        return self._last_obs

    def flat_state(self) -> np.ndarray:
        """The flat MuJoCo state (time, qpos, qvel), robomimic's per-step ``states``."""
        return np.asarray(self._env.sim.get_state().flatten())

    def get_state(self) -> dict[str, Any]:
        """``{"states": flat MuJoCo state, "model": MJCF xml}``, as robomimic stores them."""
        return {"states": self.flat_state(), "model": self._env.sim.model.get_xml()}

    def reset_to(self, state: dict[str, Any]) -> np.ndarray:
        """Restore a :meth:`get_state` (``model`` optional): robomimic's ``reset_to``."""
        if state.get("model") is not None:
            self._free_gl_context()
            self._env.reset()
            self._free_gl_context()
            self._env.reset_from_xml_string(state["model"])
            self._env.sim.reset()
        self._env.sim.set_state_from_flattened(np.asarray(state["states"]))
        self._env.sim.forward()
        self._refresh_controllers()
        self._env._obs_cache = {}
        return self._flat(self._env._get_observations(force_update=True))

    def _refresh_controllers(self) -> None:
        """Start the controllers from the current sim state.

        robosuite's controllers cache the arm's pose and mass matrix (refreshed only after
        a control step) and hold the reset's joint angles as their nullspace target. After
        :meth:`reset_to` those would belong to the reset before the restore, and after a
        plain reset the mass matrix is the one before the initial joint noise: refreshing
        after both makes a replay from a stored state act exactly as the recording did.
        """
        for robot in self._env.robots:
            robot.composite_controller.update_state()
            for part, controller in robot.composite_controller.part_controllers.items():
                controller.update(force=True)
                if part in robot.arms:
                    controller.initial_joint = np.array(controller.joint_pos)
                    controller.reset_goal()

    def env_args(self) -> dict[str, Any]:
        """robomimic's ``data.attrs["env_args"]`` for files made in this env."""
        kwargs = dict(self.robosuite_kwargs)
        kwargs["controller_configs"] = controller_config(len(self.task.robots))
        return {
            "env_name": self.task.robosuite_env,
            "env_version": ROBOSUITE_VERSION,
            "type": 1,  # robomimic's EnvType.ROBOSUITE_TYPE
            "env_kwargs": kwargs,
            "gym_env_id": self.task.env_id,
            "max_episode_steps": self.task.max_episode_steps,
        }

    def env_args_json(self) -> str:
        return json.dumps(self.env_args())

    def _flat(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        obs = {k: np.asarray(v) for k, v in raw.items()}
        if "object-state" in obs:
            obs["object"] = obs["object-state"]
        self._last_obs = obs
        return np.concatenate([np.ravel(obs[k]) for k in self.obs_keys]).astype(np.float32)
