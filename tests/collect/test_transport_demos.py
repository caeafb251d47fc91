"""Scripted Transport demos: the two-arm phase machine's helpers on synthetic scenes, and
(slow) a scripted episode that succeeds and replays bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("robosuite", reason="needs robosuite (scripts/setup.sh installs it)")
pytest.importorskip("h5py")

from rllib_diffusion.collect import robot_demos as rd  # noqa: E402

#: The two Pandas' base orientations in TwoArmTransport ("opposed": ±90° about z).
ARM0_BASE = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
ARM1_BASE = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # a hand pointing down (x, y, z, w)


def scene(**overrides) -> rd._TransportScene:
    """A synthetic Transport scene: the values of seed 0's start, roughly."""
    values = {
        "eef": (np.array([0.0, -0.37, 1.0]), np.array([0.0, 0.36, 1.0])),
        "eef_quat": (DOWN, DOWN),
        "finger_yaw": (0.0, np.pi),
        "lid_handle": np.array([0.2, -0.455, 0.976]),
        "payload": np.array([0.2, -0.455, 0.826]),
        "handle_axis": np.array([-0.48, 0.88, 0.0]) / np.hypot(0.48, 0.88),
        "trash": np.array([-0.2, 0.45, 0.83]),
        "trash_yaw": 0.3,
        "target_bin": np.array([-0.2, 0.45, 0.806]),
        "trash_bin": np.array([0.2, 0.45, 0.806]),
    }
    values.update(overrides)
    return rd._TransportScene(**values)


def policy(noise: float = 0.0) -> rd.ScriptedTransport:
    """A controller as ``reset`` leaves it, without an env."""
    p = rd.ScriptedTransport(noise=noise)
    for arm in p._arms:
        arm.quat0, arm.quat_target = DOWN.copy(), DOWN.copy()
    p._base_rot = (ARM0_BASE, ARM1_BASE)
    return p


def test_transport_is_a_scripted_task():
    assert "transport" in rd.SCRIPTED_TASKS
    assert isinstance(rd.make_scripted_policy("transport"), rd.ScriptedTransport)
    assert rd.make_scripted_policy("transport", noise=0.1).noise == 0.1
    with pytest.raises(ValueError, match="no scripted controller for 'stack'.*transport"):
        rd._check_demo_request("stack", "stack", None, overwrite=False)


@pytest.mark.parametrize(("axis", "towards", "expected_y"), [(1, 1.0, 0.05), (1, -1.0, -0.05)])
def test_handle_point_is_on_the_requested_side(axis, towards, expected_y):
    for sign in (1.0, -1.0):  # whichever way the handle's axis points
        a = sign * np.array([0.0, 1.0, 0.0])
        point = rd._handle_point(np.zeros(3), a, 0.05, towards)
        np.testing.assert_allclose(point, [0.0, expected_y, 0.0], atol=1e-12)


@pytest.mark.parametrize("goal", [0.0, 0.4, -1.2, np.pi / 2, 2.8])
def test_turn_fingers_takes_the_short_way_to_the_goal_line(goal):
    target = rd._turn_fingers(DOWN, 0.1, goal)
    turned = rd._quat_error(target, DOWN)
    assert np.allclose(turned[:2], 0.0, atol=1e-5)  # about z only
    assert abs(turned[2]) <= np.pi / 2 + 1e-5  # fingers are symmetric: never more than 90°
    yaw = 0.1 + turned[2]
    assert abs(rd._wrap(yaw - goal, np.pi)) < 1e-5  # robosuite's float32 quaternions
    assert np.isclose(np.linalg.norm(target), 1.0, atol=1e-6)


def test_actions_are_in_each_arms_base_frame():
    p = policy()
    s = scene()
    up_y = np.array([0.0, 0.01, 0.0])  # 1 cm towards +y (world) for both hands
    a0 = p._action(0, s.eef[0] + up_y, -1.0, s)
    a1 = p._action(1, s.eef[1] + up_y, 1.0, s)
    # Arm 0 faces +y: world +y is its base +x; arm 1 faces -y: world +y is its base -x.
    assert a0[0] > 0.2 and abs(a0[1]) < 1e-9 and a1[0] < -0.2 and abs(a1[1]) < 1e-9
    assert np.isclose(a0[0], -a1[0]) and a0[6] == -1.0 and a1[6] == 1.0
    np.testing.assert_allclose(a0[3:6], 0.0, atol=1e-9)  # at the target orientation


def test_arm0_holds_the_hammer_until_arm1_has_closed_on_it():
    p = policy()
    p._arms[0].go("present")
    p._arms[1].go("take_grasp")
    s = scene()
    closed_steps = []
    for step in range(1, 30):
        for arm in p._arms:
            arm.t += 1
        _, grip0 = p._arm0_target(s)
        _, grip1 = p._arm1_target(s)
        assert grip1 == 1.0  # arm 1 keeps closing while arm 0 lets go
        if grip0 == 1.0:
            closed_steps.append(step)
        if p._arms[0].phase == "retreat":
            break
    # Arm 0 let go only after arm 1 had closed for 12 steps, then retreated; arm 1 lifts
    # the hammer only once arm 0's open hand has risen clear of it.
    assert closed_steps == list(range(1, 13))
    assert p._arms[0].phase == "retreat"
    rises = []
    for _ in range(40):
        for arm in p._arms:
            arm.t += 1
        target0, _ = p._arm0_target(s)
        rises.append(target0[2] - s.eef[0][2])
        p._arm1_target(s)
        if p._arms[1].phase == "take_lift":
            break
    assert p._arms[1].phase == "take_lift" and p._arms[0].t == 31
    assert min(rises[:20]) > 0.1  # arm 0 goes straight up first


def test_arm1_waits_for_the_presented_hammer():
    p = policy()
    p._arms[0].go("hammer_lift")
    p._arms[1].go("wait")
    s = scene()
    for _ in range(50):
        p._arms[1].t += 1
        p._arm1_target(s)
    assert p._arms[1].phase == "wait"
    p._arms[0].go("present")
    p._arms[0].t = 21
    p._arm1_target(s)  # presenting, but arm 0's hand is still on its way
    assert p._arms[1].phase == "wait"
    at_handover = scene(eef=(rd._HANDOVER + 0.005, s.eef[1]))
    p._arm1_target(at_handover)
    assert p._arms[1].phase == "take_above"


def test_carry_moves_the_hammer_not_the_hand_over_the_bin():
    p = policy()
    p._arms[1].go("carry")
    hand = np.array([0.0, 0.1, 1.12])
    hammer = hand + np.array([0.0, -0.06, 0.0])  # the hand holds the handle 6 cm off centre
    s = scene(eef=(np.array([0.0, -0.3, 1.0]), hand), payload=hammer)
    target, grip = p._arm1_target(s)
    expected = hand[:2] + s.target_bin[:2] - hammer[:2]
    np.testing.assert_allclose(target[:2], expected)
    assert grip == 1.0 and target[2] > 1.0


@pytest.mark.slow
def test_scripted_transport_episode_succeeds_and_replays_bit_for_bit(tmp_path):
    import h5py

    from rllib_diffusion.envs.robosuite_tasks import RobosuiteTaskEnv

    out = tmp_path / "transport.hdf5"
    summary = rd.collect_demos("transport", 1, out, progress=False, max_attempts=3)
    assert summary["demos"] == 1
    env = RobosuiteTaskEnv("TwoArmTransport")
    try:
        with h5py.File(out) as f:
            g = f["data/demo_0"]
            actions, states = np.asarray(g["actions"]), np.asarray(g["states"])
            assert actions.shape[1] == 14 and g["obs/object"].shape[1] == 41
            assert g["dones"][-1] == 1 and g["rewards"][-1] == 1.0
            env.reset_to({"states": states[0], "model": g.attrs["model_file"]})
        replayed = [env.flat_state()]
        for action in actions[:-1]:
            env.step(action)
            replayed.append(env.flat_state())
        np.testing.assert_array_equal(np.asarray(replayed), states)  # bit for bit
        assert rd.replay_demo(env, out, "demo_0")
    finally:
        env.close()
