"""The registry and the algorithm configs: every declared knob reaches the learner,
unused knobs are refused in one line, and no algorithm imports a sibling."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rllib_diffusion.algorithms import registry
from rllib_diffusion.algorithms.offline_q.train import ALGORITHMS, build_offline_config
from rllib_diffusion.cli import build_parser, main, offline_settings_from_args
from rllib_diffusion.modules.model_config import ConfigError

OBS, ACT = 3, 2
MID = "default_policy"

#: Non-default values valid for every algorithm declaring the knob (and different from
#: the per-task paper values on Hopper).
NEW_VALUES = {
    "eta": 5.0,
    "max_q_backup": 2,
    "ema_decay": 0.9,
    "ema_update_every": 3,
    "ema_start": 7,
    "actor_lr": 1.5e-4,
    "critic_lr": 2.5e-4,
    "tau": 0.02,
    "reward_scale": 3.0,
    "reward_bias": -0.5,
    "gamma": 0.95,
    "grad_clip": 2.5,
    "expectile": 0.8,
    "eta_lr": 0.01,
    "bc_threshold": 0.3,
    "lcb_rho": 0.7,
    "num_target_samples": 4,
    "actor_loss_reduction": "sum",
    "critic_loss_reduction": "sum",
    "lcb_std_ddof": 1,
    "eta_bc_loss": "post_update",
    "lr_decay_steps": 5000,
    "actor_weight_decay": 0.0,
    "alpha": 3.0,
    "normalize_q_loss": True,
    "q_agg": "min",
    "policy_noise": 0.3,
    "noise_clip": 0.4,
    "policy_freq": 3,
    "normalize_states": False,
    "precision": "bf16",
}


def _flag_args(values: dict) -> list[str]:
    out: list[str] = []
    for name, value in values.items():
        out += ["--" + name.replace("_", "-"), str(value)]
    return out


def _built(algo: str, extra: list[str]):
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", algo, *extra])
    settings = offline_settings_from_args(args)
    config, model = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    learner = config.build_learner()
    return learner, learner.module[MID].unwrapped(), model


def test_registry_lists_the_offline_algorithms_and_refuses_unknown_names():
    assert set(ALGORITHMS) == {
        "diffusion_ql",
        "diffusion_ql_flow",
        "idql",
        "dac",
        "fql",
        "td3bc",
    }
    assert registry.get("dac").config_class.__name__ == "DACConfig"
    assert registry.by_checkpoint_algorithm("fql").name == "fql"
    assert registry.by_checkpoint_algorithm("DiffusionBC").kind == registry.PRETRAIN
    with pytest.raises(ConfigError, match="algo='cql'; allowed: .*dac"):
        registry.get("cql")


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_declared_knob_set_on_the_cli_reaches_the_learner(algo):
    declared = {k.name for k in registry.get(algo).knobs()}
    assert declared <= set(NEW_VALUES), f"add a test value for {declared - set(NEW_VALUES)}"
    values = {k: NEW_VALUES[k] for k in sorted(declared)}
    for knob in registry.get(algo).knobs():
        assert values[knob.name] != knob.default, knob.name
    used = registry.get(algo).config_class.MODEL_KNOBS
    nets = ["--hidden-dims", "8", "8"]
    nets += ["--denoising-steps", "3"] if "denoising_steps" in used else []
    nets += ["--num-candidates", "7"] if "num_candidates" in used else []
    learner, module, model = _built(algo, [*_flag_args(values), *nets])
    cfg = learner.config
    for name, value in values.items():
        assert getattr(cfg, name) == pytest.approx(value), name
    # Learning rates reach the optimizers, the schedule knobs the module's behaviour.
    actor_optim = learner.get_optimizer(MID, "actor")
    assert actor_optim.param_groups[0]["lr"] == pytest.approx(values["actor_lr"])
    assert learner.get_optimizer(MID, "critic").param_groups[0]["lr"] == pytest.approx(
        values["critic_lr"]
    )
    if algo == "dac":  # η₀ is the dual variable's start, in DAC's module
        assert float(module.dual_eta) == pytest.approx(5.0)
    if algo == "idql":  # acting's expectile weights use the same τ
        assert module.dql_config.expectile == pytest.approx(0.8)
    if algo == "fql":
        assert module.fql_config.hidden_dims == (8, 8) == module.fql_config.critic_hidden_dims
        assert module.fql_config.flow_steps == 6
    elif algo == "td3bc":  # hidden_dims sizes the actor and both critics
        assert module.td3bc_config.hidden_dims == (8, 8) == module.td3bc_config.critic_hidden_dims
    else:
        cfgm = module.dql_config
        assert (cfgm.hidden_dims, cfgm.denoising_steps, cfgm.num_candidates) == ((8, 8), 3, 7)
        assert cfgm.policy == ("flow" if algo == "diffusion_ql_flow" else "ddpm")


def test_defaults_per_algorithm_and_task():
    """Nothing given: each config's own defaults, its per-task paper values, its nets."""
    defaults = {}
    for algo in ALGORITHMS:
        args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", algo])
        config, model = build_offline_config(
            offline_settings_from_args(args), "/x", "Hopper-v5", OBS, ACT
        )
        defaults[algo] = (config, model)
    dql, _ = defaults["diffusion_ql"]
    assert (dql.eta, dql.grad_clip, dql.max_q_backup) == (1.0, 9.0, 0)
    dac, dac_model = defaults["dac"]
    assert (dac.eta, dac.lcb_rho, dac.bc_threshold, dac.grad_clip) == (1.0, 1.5, 1.0, 1.0)
    assert (dac_model.num_critics, dac_model.num_candidates, dac_model.q_aggregation) == (
        10,
        10,
        "mean",
    )
    idql, idql_model = defaults["idql"]
    assert idql.grad_clip is None and idql.expectile == 0.7
    assert idql_model.actor_residual and idql_model.actor_layer_norm
    fql, fql_model = defaults["fql"]
    assert fql.alpha == 10.0 and fql.grad_clip is None
    # FQL's paper networks: 4×512 for the policies and the critic.
    assert fql_model.hidden_dims == (512,) * 4 == fql_model.critic_hidden_dims
    assert defaults["diffusion_ql"][1].hidden_dims == (256,) * 3
    td3bc, td3bc_model = defaults["td3bc"]  # the official TD3_BC defaults
    assert (td3bc.alpha, td3bc.policy_noise, td3bc.noise_clip, td3bc.policy_freq) == (
        2.5,
        0.2,
        0.5,
        2,
    )
    assert td3bc.grad_clip is None and td3bc_model.hidden_dims == (256, 256)
    for algo, (config, _) in defaults.items():
        assert not hasattr(config, "eta") or algo in ("diffusion_ql", "diffusion_ql_flow", "dac")
        assert not hasattr(config, "alpha") or algo in ("fql", "td3bc")


@pytest.mark.parametrize(
    ("algo", "flags", "flag"),
    [
        ("idql", ["--eta", "5"], "--eta"),
        ("fql", ["--eta", "5"], "--eta"),
        ("dac", ["--alpha", "3"], "--alpha"),
        ("diffusion_ql", ["--alpha", "3"], "--alpha"),
        ("dac", ["--max-q-backup", "10"], "--max-q-backup"),
        ("fql", ["--ema-decay", "0.9"], "--ema-decay"),
        ("diffusion_ql", ["--expectile", "0.9"], "--expectile"),
        ("fql", ["--num-candidates", "5"], "--num-candidates"),
        ("td3bc", ["--eta", "5"], "--eta"),
        ("td3bc", ["--denoising-steps", "5"], "--denoising-steps"),
        ("fql", ["--policy-freq", "3"], "--policy-freq"),
    ],
)
def test_cli_refuses_a_knob_the_algorithm_does_not_use_in_one_line(algo, flags, flag, capsys):
    # Refused before any data is read or Ray starts (the dataset does not exist).
    assert main(["offline", "--dataset", "/nonexistent", "--algo", algo, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and f"of {algo}" in err[0], err


def test_configs_refuse_foreign_knobs_from_python():
    from rllib_diffusion.algorithms.fql import FQLConfig
    from rllib_diffusion.algorithms.idql import IDQLConfig

    with pytest.raises(ConfigError, match=r"^--eta is not a knob of idql; its knobs: "):
        IDQLConfig().training(eta=5.0)
    # A sweep's or a dict's foreign key is set as an attribute by RLlib: validate() refuses.
    config = FQLConfig().update_from_dict({"max_q_backup": 10})
    with pytest.raises(ConfigError, match="--max-q-backup is not a knob of fql"):
        config.validate()
    with pytest.raises(ConfigError, match="--no-such-knob is not a knob of idql"):
        IDQLConfig().training(no_such_knob=1)


def test_online_phase_is_a_public_config_option():
    from rllib_diffusion.algorithms.dac import DACConfig

    config = DACConfig()
    assert config.is_online is False
    config.online_phase(enabled=True, env_steps_per_iteration=30, updates_per_env_step=0.5)
    assert config.is_online is True
    assert (config.online_env_steps_per_iteration, config.updates_per_env_step) == (30, 0.5)


#: Every algorithm family package (the shared layer, e.g. ``offline_q``, ``finetune_run``,
#: ``denoiser_training``, ``window_prelearner``, sits above them and is not listed).
FAMILIES = (
    "bc", "dppo", "dsrl", "gaussian", "synther", "diffusion_ql", "dac", "idql", "fql", "awr",
    "td3bc", "dydiff", "qgrad",
)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_no_family_imports_a_sibling(family):
    others = [f"rllib_diffusion.algorithms.{f}" for f in FAMILIES if f != family]
    code = (
        "import sys\n"
        f"import rllib_diffusion.algorithms.{family}\n"
        f"print([m for m in sys.modules if m.split('.')[:3] in {[o.split('.') for o in others]}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize(
    ("name", "module_class", "owned"),
    [("idql", "IDQLModule", "value."), ("dac", "DACModule", "dual_eta")],
)
def test_pre_redesign_checkpoints_load_into_the_module_that_owns_their_state(
    name, module_class, owned
):
    """The old shared ``DiffusionQLModule`` pickle of an IDQL/DAC run becomes that
    algorithm's own module, with its value net / dual variable loaded from the old state."""
    import pickle
    from pathlib import Path

    import torch

    from rllib_diffusion.checkpoints import MODULE_SUBDIR, load_policy_module

    ckpt = Path(__file__).parents[1] / "fixtures" / "legacy_v0" / name
    module, _ = load_policy_module(ckpt)
    assert type(module).__name__ == module_class
    with open(ckpt / MODULE_SUBDIR / "module_state.pkl", "rb") as f:
        old = pickle.load(f)
    state = module.state_dict()
    keys = [k for k in old if k.startswith(owned)]
    assert keys
    for k in keys:
        torch.testing.assert_close(state[k], torch.as_tensor(old[k]))


def test_every_family_is_registered_under_its_checkpoint_name():
    """Pretraining and fine-tuning algorithms are in the registry too, each under the
    name its checkpoints carry; their config classes build."""
    from rllib_diffusion.algorithms.bc.pretrain import ALGORITHM_NAME as BC
    from rllib_diffusion.algorithms.dppo.dppo import ALGORITHM_NAME as DPPO
    from rllib_diffusion.algorithms.gaussian.gaussian_bc import ALGORITHM_NAME as GBC
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import ALGORITHM_NAME as GPPO

    assert registry.names(registry.PRETRAIN) == ("diffusion_bc", "gaussian_bc")
    assert set(registry.names(registry.FINETUNE)) >= {"dppo", "gaussian_ppo"}
    for checkpoint_name in (BC, DPPO, GBC, GPPO):
        spec = registry.by_checkpoint_algorithm(checkpoint_name)
        assert spec is not None and spec.config_class().algo_class is not None, checkpoint_name
    dppo_knobs = {k.name for k in registry.get("dppo").knobs()}
    # training() knobs, the RLlib PPO knobs DPPO lists and its model config's fields; not
    # the knobs the run sets itself.
    assert dppo_knobs >= {"actor_lr", "clip_param_base", "clip_param", "ft_denoising_steps"}
    assert "pretrained_checkpoint" not in dppo_knobs and "policy" not in dppo_knobs


def test_finetune_runs_registered_finetuning_algorithms_only(capsys):
    """``finetune --algo`` takes the algorithms whose spec names a run family; anything
    else is refused in one line before Ray starts (the checkpoint does not exist)."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings

    assert "dppo" in registry.finetune_names()
    assert "gaussian_ppo" not in registry.finetune_names()  # `finetune-gaussian` runs it
    with pytest.raises(ConfigError, match=r"^algo='gaussian_ppo' is not a fine-tuning algo"):
        FinetuneSettings(checkpoint="c", algo="gaussian_ppo")
    with pytest.raises(ConfigError, match=r"^algo='nope'; allowed: "):
        FinetuneSettings(checkpoint="c", algo="nope")
    assert main(["finetune", "--checkpoint", "/nonexistent", "--algo", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--algo" in err[-1] and "nope" in err[-1], err
