"""Modules built ``inference_only`` (EnvRunners, evaluation) start in eval mode, so
RLlib's ``forward_inference``/``forward_exploration`` never switch them back to training
mode; learners' modules still train in training mode."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from tests.algorithms.test_dppo import OBS_DIM, make_module
from tests.algorithms.test_mixed_precision import OBS, _bc_config, _dql_config

MID = "default_policy"


def _modes(module: torch.nn.Module) -> set[bool]:
    return {m.training for m in module.modules()}


def _inference_copy(module):
    """The same module class and model config built ``inference_only`` (as on an
    EnvRunner)."""
    return type(module)(
        observation_space=module.observation_space,
        action_space=module.action_space,
        inference_only=True,
        model_config=module.model_config,
    )


def _learner_module(make):
    return make().build_learner().module[MID].unwrapped()


BUILDERS = {
    "diffusion_policy": lambda: _learner_module(_bc_config),
    "diffusion_ql": lambda: _learner_module(_dql_config),
    "dppo": lambda: make_module(),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_inference_only_module_is_in_eval_mode_and_stays_there(name):
    full = BUILDERS[name]()
    assert _modes(full) == {True}  # a learner's module: torch's default, training mode
    module = _inference_copy(full)
    assert _modes(module) == {False}
    obs = torch.randn(3, OBS_DIM if name == "dppo" else OBS)
    calls = []
    for m in module.modules():  # RLlib's eval() walk still runs: modes seen in forwards
        m.register_forward_pre_hook(lambda mod, _args: calls.append(mod.training))
    module.forward_inference({Columns.OBS: obs})
    module.forward_exploration({Columns.OBS: obs})
    assert calls and not any(calls)
    assert _modes(module) == {False}


def test_learner_module_trains_in_training_mode():
    """The learner's module (not inference-only) is in training mode in ``forward_train``,
    also after it acted (RLlib's forwards restore the mode they found)."""
    config = _bc_config()
    learner = config.build_learner()
    module = learner.module[MID].unwrapped()
    module.forward_inference({Columns.OBS: torch.randn(2, OBS)})
    assert _modes(module) == {True}
    seen = []
    module.net.register_forward_pre_hook(lambda mod, _args: seen.append(_modes(module)))
    learner.update(
        batch=_bc_batch(),
        timesteps={"num_env_steps_sampled_lifetime": 0},
    )
    assert seen and all(s == {True} for s in seen)


def _bc_batch():
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from tests.algorithms.test_mixed_precision import _batch

    sample = SampleBatch({k: v.numpy() for k, v in _batch("bc").items()})
    return MultiAgentBatch({MID: sample}, env_steps=len(sample))


def _package_modules() -> list[type]:
    """Every RLModule class of the package that can be built inference-only."""
    import importlib
    import pkgutil

    from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    import rllib_diffusion.algorithms as algorithms

    for info in pkgutil.walk_packages(algorithms.__path__, "rllib_diffusion.algorithms."):
        if info.name.endswith("_rl_module") or info.name.endswith("_module"):
            importlib.import_module(info.name)
    importlib.import_module("rllib_diffusion.algorithms.pretrained_actor_critic")
    found, todo = [], [TorchRLModule]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("rllib_diffusion") and issubclass(cls, InferenceOnlyAPI):
            found.append(cls)
    return found


def test_every_acting_module_class_starts_in_eval_mode_when_inference_only():
    from rllib_diffusion.modules.apis import EvalWhenInferenceOnly

    classes = _package_modules()
    names = {c.__name__ for c in classes}
    assert {"DiffusionPolicyModule", "DPPOModule", "DiffusionQLModule", "FQLModule"} <= names
    missing = sorted(c.__name__ for c in classes if not issubclass(c, EvalWhenInferenceOnly))
    assert not missing, missing
