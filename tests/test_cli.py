"""CLI flags map onto the settings dataclasses (no training)."""

from __future__ import annotations

import argparse

import pytest

from rllib_diffusion.algorithms.diffusion_ql.train import OfflineSettings
from rllib_diffusion.cli import (
    build_parser,
    finetune_settings_from_args,
    pretrain_settings_from_args,
    settings_from_args,
)


def test_pretrain_flags_map_to_settings():
    args = build_parser().parse_args(
        [
            "pretrain",
            "--dataset",
            "d",
            "--out",
            "o",
            "--hidden-dims",
            "8",
            "8",
            "--sampler",
            "ddim",
            "--ddim-steps",
            "5",
        ]
    )
    s = pretrain_settings_from_args(args)
    assert (s.dataset, s.out_dir, s.hidden_dims, s.sampler, s.ddim_steps) == (
        "d",
        "o",
        (8, 8),
        "ddim",
        5,
    )


def test_finetune_flags_map_to_settings():
    args = build_parser().parse_args(
        [
            "finetune",
            "--checkpoint",
            "c",
            "--no-reward-scaling",
            "--lambda",
            "0.9",
            "--ft-denoising-steps",
            "1",
        ]
    )
    s = finetune_settings_from_args(args)
    k = s.knobs  # DPPO's knobs, declared by DPPOConfig / DPPOModelConfig
    assert (s.checkpoint, k["reward_scaling"], k["lambda_"], k["ft_denoising_steps"]) == (
        "c",
        False,
        0.9,
        1,
    )


def test_offline_flags_map_to_settings():
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", "idql", "--eta", "2"])
    s = settings_from_args(OfflineSettings, args)
    assert (s.algo, s.eta, s.alpha, s.normalize_rewards) == ("idql", 2.0, None, None)
    args = build_parser().parse_args(["offline", "--dataset", "d", "--no-normalize-rewards"])
    assert settings_from_args(OfflineSettings, args).normalize_rewards is False


def test_unknown_algorithm_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["offline", "--dataset", "d", "--algo", "cql"])


def test_one_flag_name_per_knob_across_all_commands():
    """A setting has the same flag in every command that takes it, and a flag means the
    same setting everywhere (argparse has no public API to list a parser's options)."""
    from collections import defaultdict

    from rllib_diffusion.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    flags_of, dests_of = defaultdict(set), defaultdict(set)
    for command in sub.choices.values():
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    flag = flag.replace("--no-", "--", 1)  # BooleanOptionalAction's pair
                    flags_of[action.dest].add(flag)
                    dests_of[flag].add(action.dest)
    assert {d: f for d, f in flags_of.items() if len(f) > 1} == {}
    assert {f: d for f, d in dests_of.items() if len(d) > 1} == {}
    # The flag is the setting's name (``lambda_`` → ``--lambda``), never a synonym.
    from rllib_diffusion.knobs import flag_name

    renamed = {d: f for d, f in flags_of.items() if f != {flag_name(d)}}
    assert renamed == {"overrides": {"--set"}}  # tune's KEY=VALUE list, not a setting


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--dataset", "d"],
        ["pretrain-gaussian", "--dataset", "d", "--state-dependent-std"],
        ["finetune", "--checkpoint", "c", "--no-reward-scaling"],
        ["offline", "--dataset", "d", "--algo", "dac", "--eta", "2", "--lcb-rho", "0.5"],
    ],
)
def test_every_flag_lands_in_a_settings_field(argv):
    """No flag is silently dropped: each one fills a field of the command's settings."""
    from rllib_diffusion import cli

    args = build_parser().parse_args(argv)
    builders = {
        "pretrain": cli.pretrain_settings_from_args,
        "pretrain-gaussian": cli.pretrain_gaussian_settings_from_args,
        "finetune": cli.finetune_settings_from_args,
        "offline": cli.offline_settings_from_args,
    }
    builders[argv[0]](args)  # raises TypeError naming a stray flag
    args.stray_flag = 1
    with pytest.raises(TypeError, match="stray_flag"):
        builders[argv[0]](args)


def test_main_job_flags_reach_pretraining():
    """The main job (experiments/pipeline.py) adds DPPO flags to pretrain's; pretraining
    gets its own and the DPPO ones are declared as read by the job itself."""
    import importlib.util
    from pathlib import Path

    from rllib_diffusion.cli import pretrain_settings_from_args

    path = Path(__file__).resolve().parents[1] / "experiments" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("main_job_pipeline", path)
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    args = pipeline.parse_args(["--gradient-steps", "3000"])
    s = pretrain_settings_from_args(args, consumed=pipeline.DPPO_FLAGS)
    assert (s.gradient_steps, s.steps_per_iteration, s.out_dir) == (3000, 1000, "runs/main_job")


@pytest.mark.parametrize(
    "argv, names",
    [
        # (--eta is a finetune flag since DQL: its knob; --max-q-backup is offline-only)
        (["finetune", "--checkpoint", "c", "--max-q-backup", "5"], ["finetune", "--max-q-backup"]),
        (["pretrain", "--dataset", "d", "--horizon", "four"], ["pretrain", "--horizon"]),
        (["evaluate"], ["evaluate", "--checkpoint"]),
    ],
)
def test_parse_errors_are_one_line_naming_the_command_and_flag(argv, names, capsys):
    from rllib_diffusion.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("error:"), err
    assert all(name in err for name in names), err


def test_every_gaussian_ppo_knob_set_on_the_cli_reaches_the_ppo_config():
    """The Gaussian baseline's knobs (RLlib PPO's own) are GaussianPPOSettings fields;
    each non-default value typed on the command line arrives in the built PPOConfig."""
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
        GaussianPPOSettings,
        build_gaussian_ppo_config,
    )

    new = {
        "--lr": ("2e-4", "lr", 2e-4),
        "--clip": ("0.3", "clip_param", 0.3),
        "--gamma": ("0.95", "gamma", 0.95),
        "--lambda": ("0.9", "lambda_", 0.9),
        "--num-epochs": ("3", "num_epochs", 3),
        "--minibatch-size": ("64", "minibatch_size", 64),
        "--train-batch-size": ("128", "train_batch_size_per_learner", 128),
        "--num-envs-per-env-runner": ("3", "num_envs_per_env_runner", 3),
        "--seed": ("7", "seed", 7),
    }
    argv = ["finetune-gaussian", "--checkpoint", "c"]
    for flag, (value, _, _) in new.items():
        argv += [flag, value]
    s = settings_from_args(GaussianPPOSettings, build_parser().parse_args(argv))
    config = build_gaussian_ppo_config(s, {"env_id": "Hopper-v5"}, {"fcnet_hiddens": [8]})
    default = build_gaussian_ppo_config(
        GaussianPPOSettings("c"), {"env_id": "Hopper-v5"}, {"fcnet_hiddens": [8]}
    )
    for flag, (_, attr, value) in new.items():
        assert getattr(config, attr) == value != getattr(default, attr), flag


def test_help_shows_every_default(capsys):
    """Each flag that has a default shows it in ``--help`` (derived flags and hand-written
    ones alike); switches and flags without a default need not."""
    from rllib_diffusion.cli import COMMANDS, main

    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for action in sub.choices[command]._actions:
            default = action.default
            if default == argparse.SUPPRESS and action.dest != "help":  # derived from a field
                assert "(default" in (action.help or "") or action.required, action.dest
            if action.nargs == 0 or default in (None, argparse.SUPPRESS) or action.required:
                continue
            shown = list(default) if isinstance(default, tuple) else default
            assert f"default: {shown}" in text or "default" in (action.help or ""), (
                command,
                action.option_strings,
            )


def test_main_job_flags_give_both_stages_their_settings():
    """experiments/pipeline.py reads the pretrain flags and its own DPPO flags."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("pipeline_under_test", path)
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    args = pipeline.parse_args(["--seed", "3"])
    s = pretrain_settings_from_args(args, consumed=pipeline.DPPO_FLAGS)
    assert (s.seed, s.out_dir, s.gradient_steps) == (3, "runs/main_job", 12_000)
    assert (args.finetune_env_steps, args.eval_episodes, args.seed) == (150_000, 10, 3)
    assert args.overwrite is False and pipeline.parse_args(["--overwrite"]).overwrite is True


def test_an_algorithm_run_default_applies_unless_the_flag_is_given(capsys):
    """DSRL defaults to the official 4 envs per EnvRunner, DPPO to 10; a typed value
    wins, and ``--help`` lists each algorithm's default."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings
    from rllib_diffusion.cli import main

    def envs(*argv: str) -> int:
        args = build_parser().parse_args(["finetune", "--checkpoint", "c", *argv])
        return finetune_settings_from_args(args).num_envs_per_env_runner

    assert envs("--algo", "dsrl") == 4
    assert envs("--algo", "dppo") == 10
    assert envs("--algo", "dsrl", "--num-envs-per-env-runner", "7") == 7
    assert FinetuneSettings("c", algo="dsrl").num_envs_per_env_runner == 4
    assert main(["finetune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "dppo 10;" in text and "dsrl 4;" in text


def test_return_fields_of_a_finetune_progress_line():
    """Training and evaluation returns (normalised with references) come from RLlib's
    result; the evaluation only where the iteration evaluated."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS

    from rllib_diffusion import metrics as M
    from rllib_diffusion.algorithms.finetune_run import return_fields

    result = {
        ENV_RUNNER_RESULTS: {"episode_return_mean": 30.0},
        EVALUATION_RESULTS: {ENV_RUNNER_RESULTS: {"episode_return_mean": 60.0}},
    }
    refs = {"min": 10.0, "max": 110.0}
    assert return_fields(result, refs, evaluated=True) == {
        M.TRAIN_RETURN: 30.0,
        M.TRAIN_NORMALIZED: 20.0,
        M.EVAL_RETURN: 60.0,
        M.EVAL_NORMALIZED: 50.0,
    }
    assert return_fields(result, None, evaluated=False) == {M.TRAIN_RETURN: 30.0}
    # A due evaluation without a return is flagged (and warned about on stderr).
    assert return_fields({}, refs, evaluated=True) == {M.TRAIN_RETURN: None, M.EVAL_MISSING: True}


def _flag_help(text: str, flag: str) -> str:
    """The ``--help`` entry of ``flag`` (its lines up to the next flag's), one line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {flag} "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" " * 4)),
        len(lines),
    )
    return " ".join(" ".join(lines[start:end]).split())


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "--algo", "dsrl", "--help"],
        ["finetune", "--help", "--algo", "dsrl"],
        ["finetune", "--algo=dsrl", "-h"],
    ],
)
def test_help_with_an_algo_lists_its_knobs_with_its_defaults(argv, capsys):
    """``--algo dsrl --help`` shows DSRL's flags only, each with DSRL's default and help
    (no algorithm tags, no other algorithm's default), under a group naming DSRL."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.cli import main

    dsrl = {k.flag: k for k in registry.get("dsrl", registry.FINETUNE).knobs()}
    dppo = {k.flag: k for k in registry.get("dppo", registry.FINETUNE).knobs()}
    assert "--utd" in dsrl and "--utd" not in dppo  # a DSRL-only flag
    assert "--clip" in dppo and "--clip" not in dsrl  # a DPPO-only flag
    assert dsrl["--critic-lr"].default != dppo["--critic-lr"].default
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "\ndsrl knobs:\n" in text and "algorithm knobs" not in text
    assert "--utd" in text and "--clip " not in text and "--ft-denoising-steps" not in text
    critic_lr = _flag_help(text, "--critic-lr")
    assert critic_lr.endswith(f"(default: {dsrl['--critic-lr'].default})"), critic_lr
    assert "[" not in critic_lr and "dppo" not in critic_lr
    envs = _flag_help(text, "--num-envs-per-env-runner")  # a run setting, DSRL's 4
    assert envs.endswith("(default: 4)") and "dppo" not in envs, envs
    for flag, knob in dsrl.items():  # each with DSRL's own help text
        assert " ".join(knob.help.replace("``", "").split()) in _flag_help(text, flag), flag


def test_help_without_an_algo_lists_every_algorithms_knobs(capsys):
    """Plain ``--help``: the flags of every algorithm, each saying which use it, and one
    line saying how to narrow it; ``offline`` narrows the same way."""
    from rllib_diffusion.cli import main

    assert main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--utd" in text and "--clip " in text
    assert _flag_help(text, "--utd").split()[2] == "[dsrl]"
    assert "`rllib-diffusion finetune --algo X --help` lists only X's knobs" in " ".join(
        text.split()
    )
    assert main(["offline", "--help", "--algo", "fql"]) == 0
    text = capsys.readouterr().out
    assert "\nfql knobs:\n" in text and "--q-agg" in text and "--lcb-rho" not in text


@pytest.mark.parametrize("command", ["finetune", "offline"])
def test_help_with_an_unknown_algo_is_the_one_line_error(command, capsys):
    from rllib_diffusion.cli import main

    assert main([command, "--help", "--algo", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "invalid choice: 'nope'" in err and "'idql'" in err
