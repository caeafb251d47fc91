"""``rllib-diffusion`` command line: collect | concat-datasets | train-behavior | pretrain |
pretrain-gaussian | finetune-gaussian | finetune | offline | online | evaluate | dataset-info | tune.

Each sub-command has a ``add_<name>_args(parser)`` / ``run_<name>(args)`` pair so that
the scripts in ``experiments/`` reuse the exact same flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _in_range(t: type, low: float, *, above: bool = False):
    from rllib_diffusion.knobs import Range, in_range

    return in_range(t, Range(low, above=above))


#: argparse types of hand-written flags (derived flags check their declared ranges).
COUNT, NON_NEGATIVE, POSITIVE = (
    _in_range(int, 1),
    _in_range(int, 0),
    _in_range(float, 0, above=True),
)


def _invocation() -> str:
    """How this process was started, as a user would type it."""
    import shlex

    prog = os.path.basename(sys.argv[0])
    head = ["rllib-diffusion"] if prog == "rllib-diffusion" else [sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def _json_out(result: dict[str, Any], path: str | None) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=str)
        os.replace(tmp, path)
        print(f"wrote {path}")


def settings_from_args(cls, args: argparse.Namespace, *, consumed=(), **explicit: Any):
    """Build the settings dataclass ``cls`` from parsed flags named like its fields.

    Lists become tuples; ``explicit`` wins over flags. A
    flag that matches no field (and is not in ``consumed``: read by the caller) is a
    programming error, never silently dropped.
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    stray = set(vars(args)) - names - {"command", *consumed, *explicit}
    if stray:
        raise TypeError(f"flags {sorted(stray)} match no field of {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in explicit:
            kwargs[f.name] = explicit[f.name]
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def add_settings_args(
    p: Any,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, str] | None = None,
    **choices,
) -> None:
    """One flag per field of settings dataclass ``cls`` (help from its ``Attributes:``
    docs, default shown); ``choices``: allowed values of a field, e.g. ``algo=[...]``;
    ``defaults``: the text shown instead of a field's default (per-algorithm ones)."""
    import dataclasses

    from rllib_diffusion.knobs import add_knob_args, settings_knobs

    knobs = [
        dataclasses.replace(k, choices=tuple(choices[k.name])) if k.name in choices else k
        for k in settings_knobs(cls, exclude=("knobs", *exclude))
    ]
    shown = defaults or {}
    knobs = [
        dataclasses.replace(k, help=f"{k.help} {shown[k.name]}") if k.name in shown else k
        for k in knobs
    ]
    add_knob_args(p, knobs, fill_defaults=True)


# ----------------------------------------------------------------------------- collect
def add_collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. Hopper-v5")
    p.add_argument(
        "--dataset-id",
        required=True,
        help="Minari id to write, e.g. rllib-diffusion/hopper/medium-v0 "
        "(stored under $MINARI_DATASETS_PATH, default ~/.minari/datasets)",
    )
    p.add_argument(
        "--policy",
        help="'random' or an RLlib Algorithm checkpoint directory (e.g. from train-behavior); "
        "default: random, unless --policy-sequence is given",
    )
    _add_policy_sequence_args(p.add_argument_group("medium-replay (policy sequence)"))
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--num-steps", type=COUNT, help="record at least this many transitions")
    size.add_argument("--num-episodes", type=COUNT, help="record this many episodes")
    p.add_argument("--num-envs", type=COUNT, default=8, help="envs stepped in lock-step")
    p.add_argument(
        "--deterministic", action="store_true", help="act deterministically (default: sample)"
    )
    p.add_argument("--seed", type=int, default=0, help="RNG seed")
    p.add_argument("--ref-min-score", type=float, help="override the random-policy reference")
    p.add_argument("--ref-max-score", type=float, help="override the expert reference")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset id")
    p.add_argument("--json", help="also write the summary to this JSON file")


def _add_policy_sequence_args(group: Any) -> None:
    from rllib_diffusion.collect.sequence import PolicySequenceSettings

    add_settings_args(group, PolicySequenceSettings)


def run_collect(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from rllib_diffusion.collect.collect import collect_dataset
    from rllib_diffusion.collect.sequence import PolicySequenceSettings

    fields = dataclasses.fields(PolicySequenceSettings)
    sequence = PolicySequenceSettings(**{f.name: getattr(args, f.name) for f in fields})
    result = collect_dataset(
        args.env,
        args.dataset_id,
        policy=args.policy,
        sequence=sequence,
        num_episodes=args.num_episodes,
        num_steps=args.num_steps,
        num_envs=args.num_envs,
        explore=not args.deterministic,
        seed=args.seed,
        ref_min_score=args.ref_min_score,
        ref_max_score=args.ref_max_score,
        overwrite=args.overwrite,
    )
    _json_out(result, args.json)
    return result


# --------------------------------------------------------------------- concat-datasets
def add_concat_datasets_args(p: argparse.ArgumentParser) -> None:
    from rllib_diffusion.collect.concat import ConcatSettings

    add_settings_args(p, ConcatSettings)


def run_concat_datasets(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.collect.concat import ConcatSettings, concat_datasets

    settings = settings_from_args(ConcatSettings, args)
    result = concat_datasets(settings)
    _json_out(result, settings.json)
    return result


# ---------------------------------------------------------------------- train-behavior
def add_train_behavior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. Hopper-v5")
    p.add_argument(
        "--out", dest="out_dir", required=True, help="directory for checkpoints and progress"
    )
    p.add_argument("--target-return", type=float, help="stop once the mean return reaches this")
    p.add_argument("--max-env-steps", type=COUNT, default=3_000_000, help="env-step budget")
    p.add_argument("--max-minutes", type=POSITIVE, default=60.0, help="wall-clock budget")
    p.add_argument("--checkpoint-every", type=COUNT, default=5, help="iterations")
    p.add_argument(
        "--num-envs-per-env-runner", type=COUNT, default=8, help="vectorised envs per EnvRunner"
    )
    p.add_argument(
        "--num-env-runners", type=NON_NEGATIVE, default=1, help="CPU EnvRunners (0: the driver)"
    )
    p.add_argument("--seed", type=int, default=0, help="RNG seed")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (budgets are the run's totals)",
    )


def run_train_behavior(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.collect.behavior import BehaviorPPOSettings, train_behavior_policy

    settings = BehaviorPPOSettings(
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner,
        seed=args.seed,
    )
    return train_behavior_policy(
        args.env,
        args.out_dir,
        target_return=args.target_return,
        max_env_steps=args.max_env_steps,
        max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every,
        settings=settings,
        resume=args.resume,
    )


# ---------------------------------------------------------------------------- pretrain
def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    """Run and policy flags from ``PretrainSettings``, knobs from ``DiffusionBCConfig``,
    the other network fields from ``DiffusionPolicyConfig``."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, policy_knobs
    from rllib_diffusion.knobs import add_knob_args

    add_settings_args(p, PretrainSettings, exclude=("policy",))
    add_knob_args(p.add_argument_group("DiffusionBC knobs"), _diffusion_bc_knobs())
    add_knob_args(p.add_argument_group("policy network (DiffusionPolicyConfig)"), policy_knobs())


def _diffusion_bc_knobs() -> list:
    """The knobs ``DiffusionBCConfig.training()`` declares (flags derived from them)."""
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.knobs import declared_knobs

    return declared_knobs(DiffusionBCConfig)


def pretrain_settings_from_args(args: argparse.Namespace, *, consumed=()):
    """``consumed``: flags the caller reads itself (e.g. the main job's DPPO flags)."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, policy_knobs
    from rllib_diffusion.knobs import given_knobs

    knobs = given_knobs(args, _diffusion_bc_knobs())
    policy = given_knobs(args, policy_knobs())
    return settings_from_args(
        PretrainSettings,
        args,
        consumed=(*consumed, *knobs, *policy),
        knobs=knobs,
        policy=policy,
    )


def run_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.bc.pretrain import pretrain

    return pretrain(pretrain_settings_from_args(args))


# ------------------------------------------------------------------- pretrain-gaussian
def add_pretrain_gaussian_args(p: argparse.ArgumentParser) -> None:
    from rllib_diffusion.algorithms.gaussian.gaussian_bc import GaussianBCSettings

    add_settings_args(p, GaussianBCSettings, exclude=("free_log_std",))
    p.add_argument(
        "--state-dependent-std",
        action="store_true",
        help="let the network predict the log-std per state (default: one learned log-std)",
    )


def pretrain_gaussian_settings_from_args(args: argparse.Namespace):
    from rllib_diffusion.algorithms.gaussian.gaussian_bc import GaussianBCSettings

    return settings_from_args(
        GaussianBCSettings,
        args,
        consumed=("state_dependent_std",),
        free_log_std=not args.state_dependent_std,
    )


def run_pretrain_gaussian(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.gaussian.gaussian_bc import pretrain_gaussian

    return pretrain_gaussian(pretrain_gaussian_settings_from_args(args))


# ------------------------------------------------------------------- finetune-gaussian
def add_finetune_gaussian_args(p: argparse.ArgumentParser) -> None:
    """Run flags from ``GaussianPPOSettings``; DiffPPO's knobs (any given makes the run
    DiffPPO) from ``DiffPPOConfig.training()``."""
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import GaussianPPOSettings
    from rllib_diffusion.knobs import add_knob_args

    add_settings_args(p, GaussianPPOSettings)
    group = p.add_argument_group("DiffPPO knobs (synthetic-segment augmentation; none: PPO)")
    add_knob_args(group, _diffppo_knobs())


def _diffppo_knobs() -> list:
    from rllib_diffusion.algorithms.gaussian.diffppo import DiffPPOConfig
    from rllib_diffusion.knobs import declared_knobs

    return declared_knobs(DiffPPOConfig)


def run_finetune_gaussian(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
        GaussianPPOSettings,
        finetune_gaussian_ppo,
    )
    from rllib_diffusion.knobs import given_knobs

    knobs = given_knobs(args, _diffppo_knobs())
    settings = settings_from_args(GaussianPPOSettings, args, consumed=tuple(knobs), knobs=knobs)
    return finetune_gaussian_ppo(settings)


# ---------------------------------------------------------------------------- finetune
def add_finetune_args(p: argparse.ArgumentParser, algo: str | None = None) -> None:
    """Run flags from ``FinetuneSettings``; algorithm knobs from each fine-tuning
    algorithm's config and model config (registry): every flag, its help and its
    default come from a declaration. ``algo``: that algorithm's knobs and defaults
    only (``finetune --algo X --help``)."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, run_defaults_help

    add_settings_args(
        p,
        FinetuneSettings,
        exclude=("env_kwargs",),  # any JSON values: Python only (see its docs)
        defaults=run_defaults_help(algo),
        algo=_finetune_algos(),
    )
    if algo is not None:
        add_algo_knob_args(p, registry.get(algo, registry.FINETUNE))
        return
    add_merged_knob_args(
        _merged_knob_group(p, "finetune"),
        registry.merged_knobs(_finetune_algos(), registry.FINETUNE),
    )


def _finetune_algos() -> tuple[str, ...]:
    """What ``finetune --algo`` takes."""
    from rllib_diffusion.algorithms import registry

    return registry.finetune_names()


def finetune_settings_from_args(args: argparse.Namespace):
    """``FinetuneSettings`` with the algorithm knobs the user typed in ``knobs``."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings
    from rllib_diffusion.knobs import given_knobs

    merged = registry.merged_knobs(registry.finetune_names(), registry.FINETUNE)
    knobs = given_knobs(args, [knob for knob, _ in merged])
    return settings_from_args(FinetuneSettings, args, consumed=knobs, knobs=knobs)


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.finetune_run import finetune

    return finetune(finetune_settings_from_args(args))


# ----------------------------------------------------------------------------- offline
def add_offline_args(p: argparse.ArgumentParser, algo: str | None = None) -> None:
    """Run and network flags from ``OfflineSettings``; algorithm knobs derived from each
    algorithm's config (``algo``: that algorithm's only, ``offline --algo X --help``)."""
    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.offline_q.train import KNOB_FIELDS, OfflineSettings

    add_settings_args(p, OfflineSettings, exclude=KNOB_FIELDS, algo=_offline_algos())
    if algo is not None:
        add_algo_knob_args(p, registry.get(algo, registry.OFFLINE_Q))
        return
    add_offline_knob_args(_merged_knob_group(p, "offline"))


def _offline_algos() -> list[str]:
    """What ``offline --algo`` takes."""
    from rllib_diffusion.algorithms.offline_q.train import ALGORITHMS

    return sorted(ALGORITHMS)


def add_offline_knob_args(group: Any) -> None:
    """One flag per knob of any offline algorithm, saying which algorithms use it."""
    from rllib_diffusion.algorithms.offline_q.train import offline_knobs

    add_merged_knob_args(group, offline_knobs())


def _merged_knob_group(p: argparse.ArgumentParser, command: str) -> Any:
    """The argument group of every algorithm's knobs, saying how to see one's only."""
    return p.add_argument_group(
        "algorithm knobs (refused where unused)",
        f"`rllib-diffusion {command} --algo X --help` lists only X's knobs, with X's defaults.",
    )


def add_algo_knob_args(p: argparse.ArgumentParser, spec: Any) -> None:
    """The knobs of one registered algorithm (``spec``), its help texts and its
    defaults, under a group naming it."""
    from rllib_diffusion.knobs import add_knob_args

    add_knob_args(p.add_argument_group(f"{spec.name} knobs", spec.description), spec.knobs())


def add_merged_knob_args(group: Any, merged: list) -> None:
    """One flag per knob of :func:`~rllib_diffusion.algorithms.registry.merged_knobs`,
    its help saying which algorithms use it."""
    import dataclasses

    from rllib_diffusion.knobs import add_knob_args

    for knob, algos in merged:
        tagged = dataclasses.replace(knob, help=f"[{', '.join(algos)}] {knob.help}")
        add_knob_args(group, [tagged], defaults_of=algos[0])  # differing ones: in the help


def offline_settings_from_args(args: argparse.Namespace):
    """``OfflineSettings`` with only the knobs typed (others: the algorithm's defaults)."""
    from rllib_diffusion.algorithms.offline_q.train import (
        KNOB_FIELDS,
        OfflineSettings,
        offline_knobs,
    )
    from rllib_diffusion.knobs import given_knobs

    given = given_knobs(args, [knob for knob, _ in offline_knobs()])
    knobs = {k: v for k, v in given.items() if k not in KNOB_FIELDS}
    return settings_from_args(OfflineSettings, args, consumed=given, knobs=knobs)


def run_offline(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.offline_q.train import check_settings, train_offline

    settings = offline_settings_from_args(args)
    check_settings(settings)  # a knob the algorithm does not use: one line, before Ray
    return train_offline(settings)


# ------------------------------------------------------------------------------ online
def add_online_args(p: argparse.ArgumentParser) -> None:
    """Run flags from ``OnlineSettings``; online SynthER's knobs from their declaration
    (``SynthEROnlineConfigMixin.training()``), with its defaults."""
    from rllib_diffusion.algorithms.online_run import OnlineSettings
    from rllib_diffusion.algorithms.synthetic_replay import synther_knobs
    from rllib_diffusion.knobs import add_knob_args

    add_settings_args(p, OnlineSettings)
    group = p.add_argument_group("online SynthER knobs (off unless --synther-real-ratio < 1)")
    add_knob_args(group, synther_knobs())


def online_settings_from_args(args: argparse.Namespace):
    """``OnlineSettings`` with the online SynthER knobs the user typed in ``knobs``."""
    from rllib_diffusion.algorithms.online_run import OnlineSettings
    from rllib_diffusion.algorithms.synthetic_replay import synther_knobs
    from rllib_diffusion.knobs import given_knobs

    knobs = given_knobs(args, synther_knobs())
    return settings_from_args(OnlineSettings, args, consumed=tuple(knobs), knobs=knobs)


def run_online(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.online_run import finetune_online

    return finetune_online(online_settings_from_args(args))


# ---------------------------------------------------------------------------- evaluate
def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory of this package")
    p.add_argument("--episodes", type=COUNT, default=10, help="episodes to run")
    p.add_argument("--seed", type=int, default=0, help="RNG seed")
    p.add_argument("--stochastic", action="store_true", help="sample instead of deterministic")
    p.add_argument(
        "--video",
        help="write a video of the first episode (.mp4 or .gif); renders offscreen, "
        "set MUJOCO_GL=egl (default here) or osmesa",
    )
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument(
        "--num-candidates",
        type=COUNT,
        help="Diffusion-QL/IDQL/DAC: actions sampled per state (default: the checkpoint's)",
    )
    p.add_argument(
        "--action-selection",
        choices=["softmax", "argmax", "expectile"],
        help="Diffusion-QL/IDQL/DAC: how a candidate is picked (expectile: IDQL only)",
    )


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.evaluation import evaluate_checkpoint
    from rllib_diffusion.utils.runtime import run_metadata

    result = evaluate_checkpoint(
        args.checkpoint,
        episodes=args.episodes,
        seed=args.seed,
        stochastic=args.stochastic,
        video=args.video,
        num_candidates=args.num_candidates,
        action_selection=args.action_selection,
    )
    result.update(command=_invocation(), run=run_metadata())
    _json_out(result, args.json)
    return result


# ------------------------------------------------------------------------ dataset-info
def add_dataset_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="Minari id or directory, .npz or .hdf5")
    p.add_argument("--download", action="store_true", help="let Minari download the id")


def run_dataset_info(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.data import load_dataset

    summary = load_dataset(args.dataset, download=args.download).summary()
    print(json.dumps(summary, indent=1, default=str))
    return summary


# -------------------------------------------------------------------------- synthesize
#: Run settings a generator does not read (no env evaluation, no synthetic input).
_SYNTHESIZE_EXCLUDED = ("synthetic_dataset", "real_ratio", "eval_interval", "eval_episodes")


def add_synthesize_args(p: argparse.ArgumentParser) -> None:
    """Flags from ``SynthesizeSettings``; knobs from ``SynthERConfig.training()``."""
    from rllib_diffusion.algorithms.synther import SynthERConfig, SynthesizeSettings
    from rllib_diffusion.knobs import add_knob_args, declared_knobs

    add_settings_args(p, SynthesizeSettings, exclude=_SYNTHESIZE_EXCLUDED)
    add_knob_args(p.add_argument_group("SynthER knobs"), declared_knobs(SynthERConfig))


def run_synthesize(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.synther import SynthERConfig, SynthesizeSettings, synthesize
    from rllib_diffusion.knobs import declared_knobs, given_knobs

    knobs = given_knobs(args, declared_knobs(SynthERConfig))
    return synthesize(settings_from_args(SynthesizeSettings, args, consumed=knobs, knobs=knobs))


# ------------------------------------------------------------------------------ dydiff
def add_dydiff_args(p: argparse.ArgumentParser) -> None:
    """Flags from ``DyDiffRolloutSettings``; knobs from ``DyDiffConfig.training()``."""
    from rllib_diffusion.algorithms.dydiff import DyDiffConfig, DyDiffRolloutSettings
    from rllib_diffusion.algorithms.dydiff.rollout import FILTERS
    from rllib_diffusion.knobs import add_knob_args, declared_knobs

    add_settings_args(p, DyDiffRolloutSettings, exclude=_SYNTHESIZE_EXCLUDED, filter=FILTERS)
    add_knob_args(p.add_argument_group("DyDiff knobs"), declared_knobs(DyDiffConfig))


def run_dydiff(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.algorithms.dydiff import DyDiffConfig, DyDiffRolloutSettings, dydiff
    from rllib_diffusion.knobs import declared_knobs, given_knobs

    knobs = given_knobs(args, declared_knobs(DyDiffConfig))
    return dydiff(settings_from_args(DyDiffRolloutSettings, args, consumed=knobs, knobs=knobs))


# -------------------------------------------------------------------------------- tune
def add_tune_args(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "Every sweep ranks trials by sweep/return_mean, the last measured evaluation return "
        "(carried forward between evaluations, so it exists however long an episode is); "
        "sweep/return_fresh says whether it was measured in that iteration. A failed trial "
        "is one line naming it, the error and its error.txt; the other trials go on. "
        "See tune_configs/README.md."
    )
    p.add_argument(
        "sweep",
        help="sweep module: a file (tune_configs/dppo_hopper.py), a name in tune_configs/ "
        "(dppo_hopper) or a dotted module; it defines make_sweep(args) -> TuneSweep",
    )
    p.add_argument("--checkpoint", help="pretrained checkpoint (DPPO sweeps: from pretrain)")
    p.add_argument("--dataset", help="dataset (DiffusionBC / offline sweeps), as for pretrain")
    p.add_argument("--download", action="store_true", help="let Minari download --dataset")
    p.add_argument("--env-id", help="env to evaluate in (default: the dataset's)")
    p.add_argument(
        "--storage-path",
        default="runs/tune",
        help="local directory or URI (s3://bucket/prefix, gs://...) holding the experiment",
    )
    p.add_argument("--name", help="experiment name (default: the sweep module's name)")
    p.add_argument("--num-samples", type=COUNT, help="trials (default: the sweep's)")
    p.add_argument(
        "--max-iterations", type=COUNT, help="iterations per trial (default: the sweep's)"
    )
    p.add_argument("--max-concurrent-trials", type=COUNT, help="default: the sweep's (or Tune's)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="fix a field of the sweep's settings for all trials, e.g. "
        "decisions_per_iteration=500 num_env_runners=2 (python literals)",
    )
    p.add_argument("--seed", type=int, default=0, help="RNG seed")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue STORAGE/NAME (unfinished trials continue, errored ones restart from "
        "their last checkpoint); pass the same sweep and flags as the first run",
    )
    p.add_argument(
        "--export-dir",
        help="where to export the best checkpoint (default STORAGE/NAME/best_checkpoint)",
    )
    p.add_argument(
        "--verbose", type=int, choices=[0, 1, 2], default=1, help="Tune output verbosity"
    )


def run_tune(args: argparse.Namespace) -> dict[str, Any]:
    from rllib_diffusion.modules.model_config import ConfigError
    from rllib_diffusion.tuning import SweepArgs, run_sweep

    overrides: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        overrides[key.strip()] = value
    sweep_args = SweepArgs(
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        env_id=args.env_id,
        download=args.download,
        num_samples=args.num_samples,
        max_iterations=args.max_iterations,
        seed=args.seed,
        overrides=overrides,
    )
    return run_sweep(
        args.sweep,
        sweep_args,
        storage_path=args.storage_path,
        name=args.name,
        resume=args.resume,
        export_dir=args.export_dir,
        max_concurrent_trials=args.max_concurrent_trials,
        verbose=args.verbose,
        command=_invocation(),
    )


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "collect": (add_collect_args, run_collect, "record a Minari dataset from a policy"),
    "concat-datasets": (
        add_concat_datasets_args,
        run_concat_datasets,
        "join datasets of one env into a new Minari dataset (e.g. medium + expert = "
        "medium-expert), with the provenance of each source",
    ),
    "train-behavior": (
        add_train_behavior_args,
        run_train_behavior,
        "train a Gaussian behaviour policy with RLlib PPO (for collecting datasets)",
    ),
    "pretrain": (add_pretrain_args, run_pretrain, "diffusion BC pretraining (RLlib offline)"),
    "pretrain-gaussian": (
        add_pretrain_gaussian_args,
        run_pretrain_gaussian,
        "Gaussian-policy BC pretraining (RLlib BC; baseline)",
    ),
    "finetune-gaussian": (
        add_finetune_gaussian_args,
        run_finetune_gaussian,
        "fine-tune a Gaussian BC policy with RLlib PPO (baseline)",
    ),
    "finetune": (
        add_finetune_args,
        run_finetune,
        "fine-tune a pretrained diffusion/flow policy online (--algo: DPPO and siblings; RLlib EnvRunners)",
    ),
    "offline": (
        add_offline_args,
        run_offline,
        "offline RL with diffusion/flow policies (Diffusion-QL, IDQL, DAC, FQL) and TD3+BC "
        "(RLlib offline API), on real data, mixed with a synthetic dataset "
        "(--synthetic-dataset) or with DyDiff rollouts of the learning policy regenerated "
        "every N gradient steps (--dydiff-model)",
    ),
    "online": (
        add_online_args,
        run_online,
        "continue an offline run (IDQL, FQL, ...) online: EnvRunners fill a replay buffer",
    ),
    "evaluate": (add_evaluate_args, run_evaluate, "evaluate a checkpoint in its env"),
    "dataset-info": (add_dataset_info_args, run_dataset_info, "summarise a dataset"),
    "synthesize": (
        add_synthesize_args,
        run_synthesize,
        "train (or load) a SynthER transition generator and write N synthetic transitions "
        "as a Minari dataset",
    ),
    "dydiff": (
        add_dydiff_args,
        run_dydiff,
        "train (or load) a DyDiff segment dynamics model and write a policy's rollouts "
        "(iterated action injection, filtered) as a Minari dataset",
    ),
    "tune": (
        add_tune_args,
        run_tune,
        "Ray Tune sweep (ASHA / PBT) from a tune_configs/ module; exports the best checkpoint",
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """A parse error is one line naming the command and the problem (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each flag's default, unless its help already says it, or it has
    none (required flags, switches, optional values that are None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


#: Anywhere on a command line: show the traceback of user errors too.
DEBUG_FLAG = "--debug"


#: Commands whose ``--help`` after an explicit ``--algo X`` lists only X's knobs: what
#: each one's ``--algo`` takes.
ALGO_HELP: dict[str, Callable[[], Sequence[str]]] = {
    "finetune": _finetune_algos,
    "offline": _offline_algos,
}
HELP_FLAGS = ("-h", "--help")


def algo_help_request(argv: Sequence[str]) -> tuple[str, str] | None:
    """``(command, algo)`` when ``argv`` asks for the ``--help`` of an :data:`ALGO_HELP`
    command with an explicit ``--algo X`` (either order, or ``--algo=X``; the last wins)."""
    if not argv or argv[0] not in ALGO_HELP or not set(HELP_FLAGS) & set(argv[1:]):
        return None
    algo = None
    for arg, following in zip(argv[1:], [*argv[2:], None], strict=True):
        if arg.startswith("--algo="):
            algo = arg.partition("=")[2]
        elif arg == "--algo" and following is not None and not following.startswith("-"):
            algo = following
    return None if algo is None else (argv[0], algo)


def build_parser(algo_help: tuple[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``rllib-diffusion`` parser; ``algo_help``: ``(command, algo)`` whose parser
    takes only ``algo``'s knobs (the ``--help`` of :func:`algo_help_request`)."""
    parser = OneLineParser(
        prog="rllib-diffusion",
        description="Diffusion and flow policies on Ray RLlib.",
        epilog=f"Add {DEBUG_FLAG} to any command to see the traceback behind an error line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, (add_args, _, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter
        )
        if algo_help is not None and algo_help[0] == name:
            add_args(p, algo=algo_help[1])
        else:
            add_args(p)
    return parser


def run_command(
    run: Callable[[argparse.Namespace], Any], args: argparse.Namespace, *, debug: bool = False
) -> int:
    """Run a sub-command: a user error (bad dataset, checkpoint, flag, config file,
    output dir) is one ``error:`` line on stderr and exit code 2 (``debug``: raised with
    its traceback); anything else keeps its traceback."""
    from rllib_diffusion.errors import USER_ERRORS

    try:
        run(args)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def one_line(err: BaseException) -> str:
    """The first line of an error's message (RLlib appends advice lines of its own)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    algo_help = algo_help_request(argv)
    if algo_help is not None and algo_help[1] not in ALGO_HELP[algo_help[0]]():
        # An unknown --algo: the parser's one-line error naming the choices, not the help.
        argv, algo_help = [a for a in argv if a not in HELP_FLAGS], None
    parser = build_parser(algo_help)
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as done:  # --help, or a parse error already printed in one line
        return int(done.code or 0)
    if unknown:
        flags = [u for u in unknown if u.startswith("-")] or unknown
        print(
            f"error: `rllib-diffusion {args.command}` has no flag {', '.join(flags)} "
            f"(see `rllib-diffusion {args.command} --help`)",
            file=sys.stderr,
        )
        return 2
    return run_command(COMMANDS[args.command][1], args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
