"""The ``precision`` knob: fp32 by default (no op in bf16), bf16 autocast of the loss
forward when asked (networks in bf16, losses in fp32, close to fp32's), refusals."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms import registry
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin
from rllib_diffusion.knobs import declared_knobs
from rllib_diffusion.utils.precision import autocast
from tests.algorithms.batches import transition_batch

OBS, ACT, MID = 5, 2, "default_policy"


def _bc_config(sampler: str = "ddpm", **training):
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    pol = DiffusionPolicyConfig(obs_dim=OBS, action_dim=ACT, horizon=2, act_steps=2,
                                hidden_dims=(64, 64), denoising_steps=5, sampler=sampler)  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS, 2, ACT)
    return (
        DiffusionBCConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(**training)
        .rl_module(model_config=pol.to_dict())
    )


def _dql_config(**training):
    from rllib_diffusion.algorithms.diffusion_ql import OfflineSettings
    from rllib_diffusion.algorithms.diffusion_ql.train import build_offline_config

    settings = OfflineSettings(
        dataset="unused", algo="diffusion_ql", hidden_dims=(64, 64), num_candidates=4
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    return config.training(**training)


def _batch(kind: str, n: int = 64) -> dict[str, torch.Tensor]:
    batch = transition_batch(n, OBS, ACT, seed=1)
    if kind == "bc":
        g = torch.Generator().manual_seed(2)
        return {
            Columns.OBS: batch[Columns.OBS],
            Columns.ACTIONS: torch.rand(n, 2 * ACT, generator=g),
        }
    return batch


class _Recorder:
    """Dtypes of every ``nn.Linear`` output and of every loss the learner backpropagates."""

    def __init__(self, learner) -> None:
        self.linear: set[torch.dtype] = set()
        self.losses: list[torch.Tensor] = []
        module = learner.module[MID].unwrapped()
        for m in module.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(lambda _m, _i, out: self.linear.add(out.dtype))
        self._backward = torch.Tensor.backward

    def __enter__(self):
        recorder, backward = self, self._backward

        def record(loss, *args, **kwargs):
            recorder.losses.append(loss.detach())
            return backward(loss, *args, **kwargs)

        torch.Tensor.backward = record
        return self

    def __exit__(self, *exc) -> None:
        torch.Tensor.backward = self._backward


def _update(config, kind: str):
    """One seeded learner update of a fresh learner: ``(results, recorder)``."""
    torch.manual_seed(0)
    learner = config.build_learner()
    sample = SampleBatch({k: v.numpy() for k, v in _batch(kind).items()})
    with _Recorder(learner) as rec:
        torch.manual_seed(1)
        results = learner.update(
            batch=MultiAgentBatch({MID: sample}, env_steps=len(sample)),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0},
        )
    return results, rec, learner


CASES = {
    "bc": (lambda **kw: _bc_config(**kw), [M.BC_LOSS]),
    "flow_bc": (lambda **kw: _bc_config("flow", **kw), [M.BC_LOSS]),
    "diffusion_ql": (_dql_config, [M.BC_LOSS, M.CRITIC_LOSS]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_is_fp32_and_nothing_runs_in_bf16(case):
    make, _ = CASES[case]
    config = make()
    assert config.precision == "fp32"
    _, rec, _ = _update(config, "bc" if "bc" in case else "q")
    assert rec.linear == {torch.float32}
    assert rec.losses and all(loss.dtype == torch.float32 for loss in rec.losses)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_runs_the_networks_in_bf16_and_the_losses_in_fp32(case):
    make, keys = CASES[case]
    kind = "bc" if "bc" in case else "q"
    fp32, _, _ = _update(make(), kind)
    bf16, rec, learner = _update(make(precision="bf16"), kind)
    assert torch.bfloat16 in rec.linear  # autocast reached the networks ...
    assert all(loss.dtype == torch.float32 for loss in rec.losses)  # ... not the losses
    for key in keys:  # same weights, same noise: only the rounding differs
        a, b = float(fp32[MID][key]), float(bf16[MID][key])
        assert b != a and abs(b - a) <= 0.03 * abs(a), (key, a, b)
    module = learner.module[MID].unwrapped()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())


def test_acting_stays_fp32_after_a_bf16_learner_is_built():
    """The knob is the loss forward's: sampling actions uses no autocast."""
    _, rec, learner = _update(_bc_config(precision="bf16"), "bc")
    rec.linear.clear()
    learner.module[MID].unwrapped().forward_inference({Columns.OBS: torch.randn(3, OBS)})
    assert rec.linear == {torch.float32}


@pytest.mark.parametrize("make", [_bc_config, _dql_config])
def test_bad_precision_is_a_one_line_error(make):
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16; got 'fp16'"):
        make(precision="fp16").validate()


def test_dppo_family_refuses_bf16_saying_why():
    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
    from rllib_diffusion.algorithms.dppo.reinflow import ReinFlowConfig

    for cls, name in ((DPPOConfig, "DPPO"), (ReinFlowConfig, "ReinFlow")):
        assert cls().precision == "fp32"
        cls().validate()  # fp32 passes
        with pytest.raises(ValueError, match=rf"{name} refuses precision='bf16': .*PPO ratio"):
            cls().training(precision="bf16").validate()


def _precision_configs() -> list[type]:
    from rllib_diffusion.algorithms.dydiff.dydiff import DyDiffConfig
    from rllib_diffusion.algorithms.synther.synther import SynthERConfig

    found = {registry.get(name).config_class for name in registry.names()}
    return [c for c in {*found, SynthERConfig, DyDiffConfig}
            if any(k.name == "precision" for k in declared_knobs(c))]  # fmt: skip


def test_every_config_with_the_knob_has_a_learner_that_applies_it():
    """A declared knob is never silently ignored: each config that offers ``precision``
    either refuses bf16 or builds a learner with ``MixedPrecisionMixin``."""
    configs = _precision_configs()
    names = {c.__name__ for c in configs}
    assert {"DiffusionBCConfig", "DiffusionQLConfig", "DPPOConfig"} <= names
    for cls in configs:
        knob = next(k for k in declared_knobs(cls) if k.name == "precision")
        assert knob.default == "fp32" and knob.choices == ("fp32", "bf16")
        if cls.BF16_REFUSAL:
            continue
        assert issubclass(cls().get_default_learner_class(), MixedPrecisionMixin), cls


def test_autocast_helper():
    assert autocast("fp32", "cpu").__class__.__name__ == "nullcontext"
    with autocast("bf16", "cpu"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == (
            torch.bfloat16
        )
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        autocast("fp16", "cpu")
