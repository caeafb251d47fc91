"""An unknown env id is one ConfigError with suggestions, wherever envs are made."""

from __future__ import annotations

import pytest

from rllib_diffusion.envs.chunking import make_chunked_env
from rllib_diffusion.envs.tasks import check_env_id, make_env
from rllib_diffusion.errors import USER_ERRORS
from rllib_diffusion.modules.model_config import ConfigError


def test_unknown_id_names_it_and_suggests_close_ids() -> None:
    with pytest.raises(ConfigError) as err:
        check_env_id("Hoper-v5")
    msg = str(err.value)
    assert msg.startswith("unknown env id 'Hoper-v5'; registered ids include Hopper-v5")
    assert "did you mean 'Hopper-v5'" in msg and "\n" not in msg
    assert isinstance(err.value, USER_ERRORS)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Hopper", "rllib_diffusion/ReachTarget-v0"])
def test_known_and_versionless_ids_pass(env_id: str) -> None:
    assert check_env_id(env_id) == env_id


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_env("Hopper-v1"),  # a deprecated version is not registered either
        lambda: make_chunked_env({"env_id": "HalfCheeta-v5", "horizon": 4}),
    ],
    ids=["make_env", "make_chunked_env"],
)
def test_env_makers_raise_the_config_error(make) -> None:
    with pytest.raises(ConfigError, match=r"unknown env id .*did you mean 'H"):
        make()
