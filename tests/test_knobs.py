"""Knobs declared once in a config's ``training()`` and derived into flags."""

from __future__ import annotations

import argparse
from typing import Any, Literal

import pytest
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.bc import BCConfig

from rllib_diffusion.knobs import (
    add_knob_args,
    check_knobs,
    declared_knobs,
    flag_name,
    given_knobs,
)
from rllib_diffusion.modules.model_config import ConfigError


class ToyConfig(BCConfig):
    RLLIB_KNOBS = {"gamma": "discount per step."}

    def __init__(self) -> None:
        super().__init__()
        self.step_size = 0.5
        self.target: float | None = 1.0
        self.layers = (4, 4)
        self.mode = "a"
        self.flag_on = True

    def training(
        self,
        *,
        step_size: float | None = NotProvided,
        target: float | None = NotProvided,
        layers: tuple[int, ...] | None = NotProvided,
        mode: Literal["a", "b"] | None = NotProvided,
        flag_on: bool | None = NotProvided,
        **kwargs: Any,
    ) -> ToyConfig:
        """Toy knobs.

        Args:
            step_size: size of a step,
                continued on a second line.
            target / mode: stop early above this (None: never).
            layers: hidden sizes.
            flag_on: a switch.
            **kwargs: RLlib's.

        Returns:
            self.
        """
        super().training(**kwargs)
        for name in ("step_size", "target", "layers", "mode", "flag_on"):
            if locals()[name] is not NotProvided:
                setattr(self, name, locals()[name])
        return self


def test_knobs_come_from_training_signature_docs_and_instance_defaults():
    knobs = {k.name: k for k in declared_knobs(ToyConfig)}
    assert set(knobs) == {"step_size", "target", "layers", "mode", "flag_on", "gamma"}
    assert knobs["step_size"].help == "size of a step, continued on a second line."
    assert knobs["step_size"].default == 0.5 and knobs["step_size"].type is float
    assert not knobs["step_size"].optional and knobs["target"].optional
    assert knobs["layers"].sequence and knobs["layers"].type is int
    assert knobs["mode"].choices == ("a", "b")
    assert knobs["gamma"].help == "discount per step." and knobs["gamma"].default == 0.99
    assert flag_name("lambda_") == "--lambda" and knobs["step_size"].flag == "--step-size"


def test_only_typed_flags_are_given_and_they_reach_the_config():
    knobs = declared_knobs(ToyConfig)
    p = argparse.ArgumentParser()
    add_knob_args(p, knobs)
    args = p.parse_args(["--target", "none", "--layers", "8", "16", "--flag-on", "false"])
    given = given_knobs(args, knobs)
    assert given == {"target": None, "layers": (8, 16), "flag_on": False}
    config = ToyConfig().training(**given)
    assert (config.target, config.layers, config.flag_on, config.step_size) == (
        None,
        (8, 16),
        False,
        0.5,
    )
    assert "on a second line. (default: 0.5)" in " ".join(p.format_help().split())
    with pytest.raises(SystemExit):
        p.parse_args(["--step-size", "none"])  # not optional
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])


def test_an_unused_knob_is_refused_in_one_line_naming_it_and_the_algorithm():
    knobs = declared_knobs(ToyConfig)
    check_knobs("toy", knobs, {"step_size": 1.0})
    with pytest.raises(ConfigError) as err:
        check_knobs("toy", knobs, {"eta": 5.0})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--eta is not a knob of toy")
    assert "--step-size" in msg


def test_settings_flags_take_their_help_from_the_dataclass_and_its_bases():
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings
    from rllib_diffusion.knobs import settings_knobs

    helps = {k.name: k.help for k in settings_knobs(PretrainSettings)}
    assert helps["gradient_steps"].startswith("total gradient steps")  # OfflineRunSettings'
    assert helps["horizon"].startswith("action chunk length")  # PretrainSettings' own
    assert all(helps.values()), [n for n, h in helps.items() if not h]
