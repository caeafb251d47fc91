"""A 2-D multimodal "avoid" task after D3IL's obstacle-avoidance env, in pure numpy.

``rllib_diffusion/Avoid-v0``: a point agent (a disc of radius 0.01) starts below a field of
six round obstacles in three rows and must cross the finish line above them. The layout is
D3IL's (``ALRhub/d3il``, ``gym_avoiding_env``; units are metres on its table):

* row 1 (y = -0.10): one obstacle at x = 0.50, radius 0.03;
* row 2 (y = +0.08): x = 0.425 and 0.575, radius 0.025;
* row 3 (y = +0.26): x = 0.35, 0.50 and 0.65, radius 0.025;
* finish line y = 0.35 (D3IL's ``goal_ypos``).

The agent starts at (0.5, -0.28) plus a uniform jitter of ``start_noise`` per coordinate
(D3IL starts at x = 0.525 with no jitter). The gaps between obstacles make a tree of routes:
left or right of row 1, one of three gaps of row 2, one of four gaps of row 3.

* Observation: the position (x, y), float32 (D3IL's observation too).
* Action: a velocity in [-1, 1]^2; one step moves the agent by ``action * max_step``
  (0.02 by default), clipped to the workspace x in [0.2, 0.8], y in [-0.35, 0.45].
* Collision: the swept segment of a step comes within ``radius + agent_radius`` of an
  obstacle. The agent stops at its last free position, the episode **terminates** without
  success, and the reward is ``-collision_penalty`` (0 by default).
* Success: y >= 0.35 (without a collision on the way): terminates with reward 1.
* Truncation after ``max_episode_steps`` (100) steps.
* Optional shaping (off by default): ``shaping * (y' - y) / 0.63`` is added per step, i.e.
  at most ``shaping`` over a whole successful episode.

``info`` at every step: ``success`` (bool), ``collision`` (bool), ``position`` (x, y),
``route`` (tuple of three gap indices, counted from small x, ``-1`` for rows not crossed yet)
and ``route_name`` (e.g. ``"0-1-1"``). The gap of a row is read where the agent first
crosses the row's y (interpolated within the step), as D3IL's ``check_mode`` does. Row 1 has
gaps 0-1, row 2 gaps 0-2, row 3 gaps 0-3: 24 codes (D3IL normalises its mode entropy by
log 24); the scripted demonstrator of :mod:`rllib_diffusion.collect.avoid_demos` uses the
8 routes that move one gap sideways per row.

``reward="d3il"`` (with ``rewarded_gap``) is the reward of the DPPO reference's avoid
runs instead, per step and without early termination (:meth:`AvoidEnv._d3il_reward`);
``rllib_diffusion/AvoidM5-v0`` is that variant with D3IL's mode 5 (row-3 gap 0) rewarded,
the env of the reference's ``avoid_m1/m2/m3`` fine-tuning configs.

``render_mode="rgb_array"`` draws the scene and the path so far with numpy (no matplotlib).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "rllib_diffusion/Avoid-v0"

#: Obstacles as (x, y, radius), D3IL's layout.
OBSTACLES = np.array(
    [
        [0.500, -0.10, 0.030],
        [0.425, 0.08, 0.025],
        [0.575, 0.08, 0.025],
        [0.350, 0.26, 0.025],
        [0.500, 0.26, 0.025],
        [0.650, 0.26, 0.025],
    ]
)
#: y of each obstacle row and the x of its obstacles (gap i lies left of obstacle i).
ROWS: tuple[tuple[float, tuple[float, ...]], ...] = (
    (-0.10, (0.500,)),
    (0.08, (0.425, 0.575)),
    (0.26, (0.350, 0.500, 0.650)),
)
GOAL_Y = 0.35
START = (0.5, -0.28)
AGENT_RADIUS = 0.01
X_BOUNDS = (0.2, 0.8)
Y_BOUNDS = (-0.35, 0.45)
#: Reward kinds of :class:`AvoidEnv` (``reward=``).
REWARDS = ("success", "d3il")
#: ``reward="d3il"``: the per-step penalty and the height above which a step earns 1.
D3IL_PENALTY = 0.1
D3IL_FINISH_Y = 0.4
#: The variant with the reference runs' reward (D3IL mode 5 = our row-3 gap 0).
M5_ENV_ID = "rllib_diffusion/AvoidM5-v0"
#: Number of distinct route codes (2 * 3 * 4), D3IL's normaliser of the mode entropy.
NUM_ROUTE_CODES = 24
_PROGRESS = GOAL_Y - START[1]


def gap_index(x: float, row: int) -> int:
    """Which gap of obstacle row ``row`` (0, 1, 2) the abscissa ``x`` lies in (from small x)."""
    return int(np.searchsorted(np.asarray(ROWS[row][1]), x))


def route_name(route: tuple[int, ...] | list[int]) -> str:
    """``(0, 1, 1)`` -> ``"0-1-1"``; rows not crossed show as ``x``."""
    return "-".join("x" if g < 0 else str(int(g)) for g in route)


def _segment_distance(p: np.ndarray, q: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of each point of ``centres`` (N, 2) to the segment p -> q."""
    d = q - p
    dd = float(d @ d)
    if dd == 0.0:
        return np.linalg.norm(centres - p, axis=1)
    t = np.clip((centres - p) @ d / dd, 0.0, 1.0)
    return np.linalg.norm(p + t[:, None] * d - centres, axis=1)


class AvoidEnv(gym.Env):
    """See the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        *,
        max_step: float = 0.02,
        max_episode_steps: int = 100,
        start_noise: float = 0.02,
        shaping: float = 0.0,
        collision_penalty: float = 0.0,
        reward: str = "success",
        rewarded_gap: int | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
    ) -> None:
        if max_step <= 0 or max_episode_steps < 1 or start_noise < 0:
            raise ValueError(
                "AvoidEnv needs max_step > 0, max_episode_steps >= 1 and start_noise >= 0; "
                f"got {max_step}, {max_episode_steps}, {start_noise}."
            )
        if reward not in REWARDS or (rewarded_gap is not None and not 0 <= rewarded_gap <= 3):
            raise ValueError(
                f"AvoidEnv needs reward in {REWARDS} and rewarded_gap None or a row-3 gap "
                f"0..3; got {reward!r}, {rewarded_gap!r}."
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"AvoidEnv renders 'rgb_array' only, got {render_mode!r}.")
        self.max_step, self.max_episode_steps = float(max_step), int(max_episode_steps)
        self.start_noise, self.shaping = float(start_noise), float(shaping)
        self.collision_penalty = float(collision_penalty)
        self.reward_kind, self.rewarded_gap = reward, rewarded_gap
        self.render_mode, self.width, self.height = render_mode, int(width), int(height)
        low = np.array([X_BOUNDS[0], Y_BOUNDS[0]], np.float32)
        high = np.array([X_BOUNDS[1], Y_BOUNDS[1]], np.float32)
        self.observation_space = gym.spaces.Box(low, high, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.array(START, np.float64)
        self._t = 0
        self._route = [-1, -1, -1]
        self._done = False
        self._collided = self._succeeded = False
        self.trajectory: list[np.ndarray] = []

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        jitter = self.np_random.uniform(-self.start_noise, self.start_noise, 2)
        self._pos = np.asarray(START, np.float64) + jitter
        self._t = 0
        self._route = [-1, -1, -1]
        self._done = False
        self._collided = self._succeeded = False
        self.trajectory = [self._pos.copy()]
        return self._obs(), self._info(success=False, collision=False)

    def step(self, action):
        if self._done:
            raise RuntimeError("AvoidEnv.step after the episode ended; call reset() first.")
        a = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
        a = np.nan_to_num(a, nan=0.0)
        old = self._pos.copy()
        new = old + a * self.max_step
        new[0] = np.clip(new[0], *X_BOUNDS)
        new[1] = np.clip(new[1], *Y_BOUNDS)
        self._t += 1
        dist = _segment_distance(old, new, OBSTACLES[:, :2])
        collision = bool(np.any(dist < OBSTACLES[:, 2] + AGENT_RADIUS))
        if collision:
            new = old  # stopped at the last free position
        else:
            self._record_route(old, new)
        if self.reward_kind == "d3il":
            reward, success, terminated = self._d3il_reward(new, collision), self._succeeded, False
        else:
            reward, success = self._success_reward(old, new, collision)
            terminated = collision or success
        self._pos = new
        self.trajectory.append(new.copy())
        truncated = (not terminated) and self._t >= self.max_episode_steps
        self._done = terminated or truncated
        return self._obs(), float(reward), terminated, truncated, self._info(success, collision)

    def _success_reward(
        self, old: np.ndarray, new: np.ndarray, collision: bool
    ) -> tuple[float, bool]:
        """``reward="success"``: 1 on crossing the finish line (which ends the episode),
        ``-collision_penalty`` on a collision (which ends it too), plus the shaping."""
        if collision:
            return -self.collision_penalty, False
        success = bool(new[1] >= GOAL_Y)
        reward = 1.0 if success else 0.0
        if self.shaping:
            reward += self.shaping * (new[1] - old[1]) / _PROGRESS
        return reward, success

    def _d3il_reward(self, new: np.ndarray, collision: bool) -> float:
        """``reward="d3il"``, the reward of the DPPO reference's avoid runs (D3IL fork
        ``ObstacleAvoidanceM5Env``), per step and never ending the episode: -0.1 from a
        collision on (permanently) and at the workspace's x bounds; else +1 once row 3
        was crossed in ``rewarded_gap`` and +1 above y = 0.4. A step earning 2 (1 without
        a rewarded gap) is a success, which ``info["success"]`` keeps from then on."""
        self._collided = self._collided or collision
        if self._collided or new[0] <= X_BOUNDS[0] or new[0] >= X_BOUNDS[1]:
            return -D3IL_PENALTY
        reward = float(self.rewarded_gap is not None and self._route[2] == self.rewarded_gap)
        reward += float(new[1] > D3IL_FINISH_Y)
        self._succeeded = self._succeeded or reward >= 1 + (self.rewarded_gap is not None)
        return reward

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return draw_scene([np.asarray(self.trajectory)], self.width, self.height)

    # -- helpers -------------------------------------------------------------------------
    @property
    def position(self) -> np.ndarray:
        return self._pos.copy()

    @property
    def route(self) -> tuple[int, int, int]:
        return tuple(self._route)  # type: ignore[return-value]

    def _record_route(self, old: np.ndarray, new: np.ndarray) -> None:
        for r, (row_y, _) in enumerate(ROWS):
            if self._route[r] < 0 and old[1] < row_y <= new[1]:
                frac = (row_y - old[1]) / (new[1] - old[1])
                self._route[r] = gap_index(old[0] + frac * (new[0] - old[0]), r)

    def _obs(self) -> np.ndarray:
        return self._pos.astype(np.float32)

    def _info(self, success: bool, collision: bool) -> dict[str, Any]:
        return {
            "success": success,
            "collision": collision,
            "position": self._pos.copy(),
            "route": self.route,
            "route_name": route_name(self._route),
        }


def draw_scene(
    paths: list[np.ndarray],
    width: int = 256,
    height: int = 256,
    colors: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """An (H, W, 3) uint8 picture of the workspace, the obstacles (red), the finish line
    (green) and ``paths`` (each (T, 2) positions, drawn as dots, blue by default)."""
    img = np.full((height, width, 3), 255, np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    wx = X_BOUNDS[0] + (xs + 0.5) / width * (X_BOUNDS[1] - X_BOUNDS[0])
    wy = Y_BOUNDS[1] - (ys + 0.5) / height * (Y_BOUNDS[1] - Y_BOUNDS[0])
    img[np.abs(wy - GOAL_Y) < 0.004] = (60, 180, 60)
    for x, y, r in OBSTACLES:
        img[(wx - x) ** 2 + (wy - y) ** 2 <= r**2] = (220, 40, 40)

    def pix(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = (p[:, 0] - X_BOUNDS[0]) / (X_BOUNDS[1] - X_BOUNDS[0]) * width
        r = (Y_BOUNDS[1] - p[:, 1]) / (Y_BOUNDS[1] - Y_BOUNDS[0]) * height
        return (
            np.clip(r.astype(int), 0, height - 1),
            np.clip(c.astype(int), 0, width - 1),
        )

    for k, path in enumerate(paths):
        path = np.asarray(path, np.float64).reshape(-1, 2)
        if len(path) > 1:  # dense samples along the segments
            t = np.linspace(0, 1, 6)[:-1]
            seg = path[:-1, None, :] + t[None, :, None] * np.diff(path, axis=0)[:, None, :]
            path = np.concatenate([seg.reshape(-1, 2), path[-1:]])
        rr, cc = pix(path)
        img[rr, cc] = colors[k % len(colors)] if colors else (40, 80, 220)
    return img


def register() -> None:
    """Register ``Avoid-v0`` (success reward) and ``AvoidM5-v0`` (the reference runs'
    per-step reward, mode 5 rewarded)."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point="rllib_diffusion.envs.avoid:AvoidEnv")
    if M5_ENV_ID not in gym.registry:
        gym.register(
            M5_ENV_ID,
            entry_point="rllib_diffusion.envs.avoid:AvoidEnv",
            kwargs={"reward": "d3il", "rewarded_gap": 0},
        )
