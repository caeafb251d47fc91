"""Ray Tune sweeps: tune_configs modules build, ASHA sweeps run and export an evaluable
best checkpoint, interrupted and finished experiments resume, user errors are one line."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
from ray.tune import Callback

from rllib_diffusion.cli import main
from rllib_diffusion.tuning import (
    BEST_CHECKPOINT_DIR,
    SUMMARY_FILE,
    SWEEP_METRIC,
    SweepArgs,
    TuneSweep,
    build_sweep,
    coerce_value,
    run_sweep,
)
from rllib_diffusion.tuning.metric import EvalReturnMetric

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "tune_configs"
DPPO_SWEEP = str(SWEEPS / "dppo_hopper.py")
#: DPPO settings small enough for a 2-CPU test machine (one CPU per trial: no remote runner).
TINY_DPPO = [
    "num_env_runners=0",
    "num_envs_per_env_runner=2",
    "decisions_per_iteration=40",
    "pair_minibatch_size=80",
    "num_epochs=1",
    "eval_interval=0",
    "eval_episodes=2",
    "checkpoint_interval=1",
]


def _overrides(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _last_results(exp: Path) -> dict[str, dict]:
    """trial_id -> last line of the trial's result.json, read from disk."""
    out = {}
    for f in exp.glob("*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if lines:
            out[lines[-1]["trial_id"]] = lines[-1]
    return out


def _sweep_return(result: dict) -> float:
    return result["sweep"]["return_mean"]


def test_override_values_are_parsed_and_checked():
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune_knobs
    from rllib_diffusion.modules.model_config import ConfigError

    args = SweepArgs(
        overrides={
            "actor_lr": "3e-5",
            "clip": "1",
            "use_ddim": "true",
            "ddim_steps": "None",
            "target_kl": "none",
            "out_dir": "runs/x",
        }
    )
    s = args.settings(FinetuneSettings, knobs=finetune_knobs(), checkpoint="c", num_epochs=2)
    k = s.knobs  # DPPO knobs (declared by DPPOConfig), by name; --set takes flag spellings
    assert (k["actor_lr"], k["clip_param"], s.use_ddim, s.ddim_steps, k["target_kl"]) == (
        3e-5,
        1.0,
        True,
        None,
        None,
    )
    assert isinstance(k["clip_param"], float) and k["num_epochs"] == 2 and s.out_dir == "runs/x"
    assert coerce_value("32,32", tuple[int, ...], "x") == (32, 32)
    assert coerce_value("64", tuple[int, ...], "x") == (64,)
    with pytest.raises(ConfigError, match="expected int"):
        SweepArgs(overrides={"num_epochs": "many"}).settings(
            FinetuneSettings, knobs=finetune_knobs(), checkpoint="c"
        )
    with pytest.raises(ConfigError, match="has no field 'lr'"):
        SweepArgs(overrides={"lr": "1"}).settings(FinetuneSettings, checkpoint="c")


def test_export_checkpoint_local_and_uri(tmp_path):
    from ray.tune import Checkpoint

    from rllib_diffusion.tuning import _default_name, export_checkpoint

    src = tmp_path / "trial" / "checkpoint_000003"
    (src / "learner_group").mkdir(parents=True)
    (src / "learner_group" / "state.pkl").write_bytes(b"weights")
    ckpt = Checkpoint.from_directory(str(src))
    dest = tmp_path / "exp" / BEST_CHECKPOINT_DIR
    (dest / "stale").mkdir(parents=True)  # an earlier export is replaced as a whole
    assert export_checkpoint(ckpt, str(dest), {"algorithm": "DPPO"}) == str(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["learner_group", "rllib_diffusion.json"]
    assert json.loads((dest / "rllib_diffusion.json").read_text())["algorithm"] == "DPPO"
    assert sorted(p.name for p in dest.parent.iterdir()) == [BEST_CHECKPOINT_DIR]  # no temp dirs
    uri = f"file://{tmp_path / 'bucket' / 'best'}"
    assert export_checkpoint(ckpt, uri, {"algorithm": "DPPO"}) == uri
    copied = tmp_path / "bucket" / "best"
    assert (copied / "learner_group" / "state.pkl").read_bytes() == b"weights"
    assert json.loads((copied / "rllib_diffusion.json").read_text())["algorithm"] == "DPPO"
    names = ["tune_configs/dppo_hopper.py", "dppo_hopper", "my_pkg.sweeps.dppo_hopper"]
    assert {_default_name(n) for n in names} == {"dppo_hopper"}


# ---------------------------------------------------------------- modules build (no run)
def _resolved_config(sweep: TuneSweep):
    """One sample of the search space (Tune's own resolution), and the config the trial's
    Algorithm builds from it."""
    from ray.tune.search.variant_generator import generate_variants

    _, resolved = next(iter(generate_variants(sweep.param_dict())))
    config = sweep.trainable.get_default_config().update_from_dict(resolved)
    return resolved, config


def test_reinflow_sweep_module_builds(pretrained, tmp_path):
    """The chain-PPO sweep takes ReinFlow: its trainable, knobs, no K_ft search, and trial
    checkpoints named ReinFlow. Building reads only the checkpoint's metadata, so a copy
    of the tiny DDPM checkpoint relabelled as a flow policy stands in for one."""
    import shutil

    from rllib_diffusion.algorithms.dppo.reinflow import ReinFlow
    from rllib_diffusion.checkpoints import META_FILE

    ckpt = tmp_path / "flow_checkpoint"
    shutil.copytree(pretrained[0] / "checkpoint", ckpt)
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["policy_config"]["sampler"] = "flow"
    (ckpt / META_FILE).write_text(json.dumps(meta))
    sweep = build_sweep(
        "reinflow_hopper", SweepArgs(checkpoint=str(ckpt), max_iterations=20, num_samples=2)
    )
    assert sweep.trainable is ReinFlow
    assert set(sweep.searched_keys()) == {"actor_lr", "critic_lr", "entropy_coeff"}
    resolved, config = _resolved_config(sweep)
    config.validate()
    assert config.entropy_coeff == resolved["entropy_coeff"]
    assert sweep.checkpoint_meta(resolved)["algorithm"] == "ReinFlow"
    # A DPPO-only knob is refused for ReinFlow, in one line naming it.
    with pytest.raises(Exception, match=r"^finetune: --gamma-denoising does not apply to ReinFlow"):
        build_sweep(
            "reinflow_hopper",
            SweepArgs(checkpoint=str(ckpt), overrides={"gamma_denoising": "0.9"}),
        )


@pytest.mark.parametrize("name", ["dppo_hopper", "dppo_hopper_pbt"])
def test_dppo_sweep_modules_build(pretrained, name):
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    from rllib_diffusion.algorithms.dppo import DPPO

    sweep = build_sweep(
        name,  # by name: looked up in tune_configs/
        SweepArgs(checkpoint=str(pretrained[0] / "checkpoint"), max_iterations=20, num_samples=3),
    )
    assert sweep.trainable is DPPO
    assert (sweep.metric, sweep.mode) == (SWEEP_METRIC, "max")
    assert sweep.metric_source == "evaluation/env_runners/episode_return_mean"
    assert sweep.num_samples == 3 and sweep.stop == {"training_iteration": 20}
    assert sweep.checkpoint_config.checkpoint_at_end
    space = sweep.param_dict()
    if name == "dppo_hopper":
        assert isinstance(sweep.scheduler, ASHAScheduler)
        assert set(sweep.searched_keys()) == {
            "actor_lr",
            "critic_lr",
            "clip_param",
            "_model_config/ft_denoising_steps",
        }
        # K_ft candidates fit the tiny policy's K = 5 chain.
        assert sorted(space["_model_config"]["ft_denoising_steps"].categories) == [1, 2, 5]
    else:
        assert isinstance(sweep.scheduler, PopulationBasedTraining)
        mutated = set(sweep.scheduler._hyperparam_mutations)
        assert mutated == {"actor_lr", "clip_param"} and mutated <= set(space)
        assert sweep.checkpoint_config.checkpoint_frequency == 2  # = perturbation interval
    resolved, config = _resolved_config(sweep)
    config.validate()
    assert config.actor_lr == resolved["actor_lr"] and config.clip_param == resolved["clip_param"]
    # The metric callback is installed, and an evaluation falls within the budget.
    assert config.callbacks_class is EvalReturnMetric
    assert 1 <= config.evaluation_interval <= 20
    meta = sweep.checkpoint_meta(resolved)
    assert meta["algorithm"] == "DPPO" and meta["env_id"] == "Hopper-v5"
    assert meta["policy_config"]["denoising_steps"] == 5


def test_diffusion_bc_sweep_module_builds(tiny_dataset):
    from ray.tune.schedulers import ASHAScheduler

    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBC

    sweep = build_sweep(
        str(SWEEPS / "diffusion_bc.py"),
        SweepArgs(dataset=tiny_dataset[1], max_iterations=5, overrides={"horizon": "4"}),
    )
    assert sweep.trainable is DiffusionBC and isinstance(sweep.scheduler, ASHAScheduler)
    assert sweep.metric == SWEEP_METRIC
    assert sweep.metric_source == "evaluation/env_runners/episode_return_mean"
    assert sweep.max_concurrent_trials == 1
    assert set(sweep.searched_keys()) == {
        "lr",
        "weight_decay",
        "_model_config/denoising_steps",
        "_model_config/hidden_dims",
    }
    resolved, config = _resolved_config(sweep)
    assert config.evaluation_interval == 1  # the metric is fresh every iteration
    meta = sweep.checkpoint_meta(resolved)
    assert meta["algorithm"] == "DiffusionBC"
    assert meta["policy_config"]["denoising_steps"] in (10, 20)


@pytest.mark.parametrize(
    ("algo", "config_class", "searched"),
    [
        ("diffusion_ql", "DiffusionQLConfig", {"eta", "actor_lr"}),
        ("idql", "IDQLConfig", {"expectile", "actor_lr"}),
        ("dac", "DACConfig", {"lcb_rho", "bc_threshold"}),
        ("fql", "FQLConfig", {"alpha"}),
    ],
)
def test_offline_sweep_module_builds(tiny_dataset, algo, config_class, searched):
    sweep = build_sweep("offline", SweepArgs(dataset=tiny_dataset[1], overrides={"algo": algo}))
    assert set(sweep.searched_keys()) == searched
    assert sweep.metric == SWEEP_METRIC
    assert sweep.metric_source == "evaluation/env_runners/episode_return_mean"
    resolved, config = _resolved_config(sweep)
    assert config.callbacks_class is EvalReturnMetric
    assert type(config).__name__ == config_class
    for key in searched:
        assert getattr(config, key) == resolved[key]
    meta = sweep.checkpoint_meta(resolved)
    assert meta["algorithm"] == algo and meta["env_config"]["flatten_actions"]


# ------------------------------------------------------------------- user errors (CLI)
def test_tune_cli_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "no_function.py"
    bad.write_text("X = 1\n")
    wrong = tmp_path / "offline_ckpt"
    wrong.mkdir()
    (wrong / "rllib_diffusion.json").write_text(json.dumps({"algorithm": "idql"}))
    cases = [
        (["tune", str(tmp_path / "missing.py")], "Sweep config file not found"),
        (["tune", "no_such_sweep"], "not found"),
        (["tune", str(bad)], "defines no make_sweep(args)"),
        (["tune", DPPO_SWEEP], "this sweep needs --checkpoint"),
        (["tune", DPPO_SWEEP, "--checkpoint", str(wrong)], "fine-tunes DiffusionBC checkpoints"),
        (["tune", DPPO_SWEEP, "--checkpoint", str(tmp_path / "nope")], "Checkpoint not found"),
    ]
    for argv, message in cases:
        assert main([*argv, "--storage-path", str(tmp_path / "runs")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err, (argv, err)
        assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------- sweeps that run
def _tune_argv(ckpt: str, storage: Path, name: str, *extra: str) -> list[str]:
    return [
        "tune",
        DPPO_SWEEP,
        "--checkpoint",
        ckpt,
        "--storage-path",
        str(storage),
        "--name",
        name,
        "--verbose",
        "0",
        *extra,
        "--set",
        *TINY_DPPO,
    ]


@pytest.mark.parametrize(
    "num_samples",
    [pytest.param(2, id="2-trials"), pytest.param(4, id="4-trials", marks=pytest.mark.slow)],
)
def test_asha_sweep_exports_best_checkpoint_that_evaluates(
    pretrained, ray_session, tmp_path, capsys, num_samples
):
    """Iterations shorter than an episode (1 decision = 4 env steps per env): RLlib reports
    no training return, the sweep metric is the evaluation at the last iteration."""
    ckpt = str(pretrained[0] / "checkpoint")
    argv = _tune_argv(
        ckpt, tmp_path, "asha", "--num-samples", str(num_samples), "--max-iterations", "2"
    )
    argv += ["decisions_per_iteration=2", "pair_minibatch_size=16"]
    assert main(argv) == 0
    exp = tmp_path / "asha"
    for f in exp.glob("*/result.json"):
        first, second = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        # No episode ended in iteration 1: no training return; the metric is unknown.
        assert not math.isfinite(first["env_runners"].get("episode_return_mean", math.nan))
        assert math.isnan(first["sweep"]["return_mean"]) and first["sweep"]["return_fresh"] == 0
        # Evaluated in iteration 2 (the last): measured there.
        assert second["sweep"]["return_fresh"] == 1 and second["sweep"]["return_iteration"] == 2
        assert (
            second["sweep"]["return_mean"]
            == (second["evaluation"]["env_runners"]["episode_return_mean"])
        )
    summary = json.loads((exp / SUMMARY_FILE).read_text())
    assert summary["num_trials"] == num_samples
    assert summary["errored_trials"] == [] and summary["unfinished_trials"] == []
    # TensorBoard event files in every trial directory.
    trial_dirs = [p for p in exp.iterdir() if (p / "result.json").exists()]
    assert len(trial_dirs) == num_samples
    assert all(list(d.glob("events.out.tfevents*")) for d in trial_dirs)

    # The exported checkpoint names the trial whose last result is best (read from disk).
    best_dir = exp / BEST_CHECKPOINT_DIR
    meta = json.loads((best_dir / "rllib_diffusion.json").read_text())
    last = _last_results(exp)
    assert len(last) == num_samples
    best_id = max(last, key=lambda t: _sweep_return(last[t]))
    assert meta["tune"]["trial_id"] == best_id == summary["best"]["trial_id"]
    assert math.isclose(meta["tune"]["metric_value"], _sweep_return(last[best_id]))
    # checkpoint_at_end: the exported checkpoint is the trial's last iteration.
    assert meta["tune"]["checkpoint_iteration"] == last[best_id]["training_iteration"]
    assert meta["algorithm"] == "DPPO" and meta["env_id"] == "Hopper-v5"
    assert meta["tune"]["source_checkpoint"].startswith(meta["tune"]["trial_path"])
    trial_config = json.loads((Path(meta["tune"]["trial_path"]) / "params.json").read_text())
    assert meta["tune"]["config"]["actor_lr"] == trial_config["actor_lr"]
    assert meta["model_config"] == trial_config["_model_config"]
    assert not list(exp.glob(f".{BEST_CHECKPOINT_DIR}.*"))  # no temp dirs left behind
    out = capsys.readouterr().out
    assert f"best trial {best_id}" in out and str(best_dir) in out

    # `rllib-diffusion evaluate` loads it.
    result_json = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(best_dir),
                "--episodes",
                "2",
                "--json",
                str(result_json),
            ]
        )
        == 0
    )
    evaluation = json.loads(result_json.read_text())
    assert evaluation["algorithm"] == "DPPO" and evaluation["env_id"] == "Hopper-v5"
    assert len(evaluation["episode_returns"]) == 2

    # Same name without --resume: refused; with --resume: a finished experiment just
    # re-exports the same best trial.
    assert main(argv) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    resumed = json.loads((exp / SUMMARY_FILE).read_text())
    assert resumed["resumed"] and resumed["num_trials"] == num_samples
    assert resumed["best"]["trial_id"] == best_id
    assert resumed["errored_trials"] == [] and resumed["unfinished_trials"] == []


class InterruptAfter(Callback):
    """Sends SIGINT (Ctrl+C) once a trial reports ``iteration``. Fires once per marker
    file: the callback is pickled with the experiment and comes back on resume."""

    def __init__(self, iteration: int, marker: Path) -> None:
        self.iteration, self.marker = iteration, marker

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get("training_iteration", 0) >= self.iteration and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_sweep_resumes_from_checkpoints(pretrained, ray_session, tmp_path):
    args = SweepArgs(
        checkpoint=str(pretrained[0] / "checkpoint"),
        num_samples=2,
        max_iterations=3,
        # Evaluated every iteration: the interrupted sweep has a metric to export by.
        overrides={**_overrides(TINY_DPPO), "eval_interval": "1"},
    )
    kwargs = dict(
        storage_path=str(tmp_path), name="interrupted", max_concurrent_trials=1, verbose=0
    )
    first = run_sweep(DPPO_SWEEP, args, callbacks=[InterruptAfter(2, tmp_path / "fired")], **kwargs)
    assert (tmp_path / "fired").exists()
    assert first["unfinished_trials"], first["trials"]  # Ctrl+C left work to do
    meta = json.loads(
        (tmp_path / "interrupted" / BEST_CHECKPOINT_DIR / "rllib_diffusion.json").read_text()
    )
    assert meta["tune"]["experiment_complete"] is False
    started = {
        t["trial_id"]: t["training_iteration"] for t in first["trials"] if t["training_iteration"]
    }
    assert started and all(it < 3 for it in started.values())

    second = run_sweep(DPPO_SWEEP, args, resume=True, **kwargs)
    assert (
        second["resumed"] and second["unfinished_trials"] == [] and second["errored_trials"] == []
    )
    assert second["num_trials"] == 2
    last = _last_results(tmp_path / "interrupted")
    for trial_id in started:
        # Continued from its checkpoint: more iterations in total than since the restore.
        assert last[trial_id]["training_iteration"] == 3
        assert last[trial_id]["iterations_since_restore"] < 3
    assert len(last) == 2  # the sample never started before Ctrl+C ran too
    meta = json.loads(
        (tmp_path / "interrupted" / BEST_CHECKPOINT_DIR / "rllib_diffusion.json").read_text()
    )
    assert meta["tune"]["experiment_complete"] is True


# ------------------------------------------------------------ sweep metric (no trials)
def test_sweep_metric_is_carried_forward_and_survives_a_checkpoint():
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from rllib_diffusion.tuning.metric import TrainReturnMetric

    class Algo:
        metrics = MetricsLogger(root=True)

    algo, callback, seen = Algo(), TrainReturnMetric(), []
    # RLlib: no key before the first episode ends, NaN in iterations where none ends;
    # the first result after a restore repeats the restored value (iteration 5).
    returns = [None, math.nan, 5.0, math.nan, 5.0, 7.0, math.nan]
    for it, ret in enumerate(returns, start=1):
        result = algo.metrics.reduce()
        result["training_iteration"] = it
        result["iterations_since_restore"] = it - 4 if it > 4 else it
        if ret is not None:
            result["env_runners"] = {"episode_return_mean": ret}
        callback.on_train_result(algorithm=algo, metrics_logger=algo.metrics, result=result)
        seen.append(tuple(result["sweep"][k] for k in ("return_mean", "return_fresh")))
        seen[-1] += (result["sweep"]["return_iteration"],)
        if it == 4:  # a checkpoint restored into a new Algorithm (resume, PBT exploit)
            state = algo.metrics.get_state()
            algo.metrics = MetricsLogger(root=True)
            algo.metrics.set_state(state)
    assert all(math.isnan(v) and f == 0 and i == 0 for v, f, i in seen[:2])
    assert seen[2:] == [(5.0, 1, 3), (5.0, 0, 3), (5.0, 0, 3), (7.0, 1, 6), (7.0, 0, 6)]


def test_schedulers_decide_on_measured_values_only():
    from ray.tune.schedulers import TrialScheduler

    from rllib_diffusion.tuning.schedulers import MeasuredASHA, MeasuredPBT

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    asha = MeasuredASHA(time_attr="training_iteration", max_t=9, grace_period=1)
    asha.set_search_properties(SWEEP_METRIC, "max")
    good, bad = Trial("good"), Trial("bad")
    for t in (good, bad):
        asha.on_trial_add(None, t)

    def report(trial, it, value):
        return asha.on_trial_result(None, trial, {"training_iteration": it, SWEEP_METRIC: value})

    # Unknown at the milestone: neither recorded nor stopped ...
    assert report(good, 1, math.nan) == report(bad, 1, math.nan) == TrialScheduler.CONTINUE
    assert not any(rung[1] for rung in asha._trial_info["good"]._rungs)
    # ... the first measured value after it decides.
    assert report(good, 2, 10.0) == TrialScheduler.CONTINUE
    assert report(bad, 2, 1.0) == TrialScheduler.STOP

    pbt = MeasuredPBT(
        time_attr="training_iteration", perturbation_interval=1, hyperparam_mutations={"lr": [1, 2]}
    )
    pbt.set_search_properties(SWEEP_METRIC, "max")
    nan_result = {"training_iteration": 5, SWEEP_METRIC: math.nan}
    assert pbt.on_trial_result(None, good, nan_result) == TrialScheduler.CONTINUE


# ------------------------------------------------------------------ failing trials (CLI)
FLAKY_SWEEP = """
from ray import tune

from rllib_diffusion.tuning import TuneSweep


class Flaky(tune.Trainable):
    def setup(self, config):
        self.fail = config["fail"]

    def step(self):
        if self.fail and self.iteration >= 1:
            raise RuntimeError("boom: the env exploded\\nsecond line of the message")
        return {"score": 1.0, "big": {f"key_{i}": i for i in range(300)}}

    def save_checkpoint(self, checkpoint_dir):
        return {"iteration": self.iteration}

    def load_checkpoint(self, checkpoint):
        pass


def make_sweep(args):
    metric = args.overrides.get("metric", "score")
    return TuneSweep(
        trainable=Flaky,
        param_space={"fail": tune.grid_search([False, True])},
        metric=metric,
        metric_source=None,
        checkpoint_meta=lambda config: {"algorithm": "DPPO", "env_id": "Hopper-v5"},
        num_samples=1,
        stop={"training_iteration": 3},
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
        max_failures=0,
    )
"""


def test_failed_trial_is_one_line_naming_trial_and_log(ray_session, tmp_path, capsys):
    sweep = tmp_path / "flaky.py"
    sweep.write_text(FLAKY_SWEEP)
    argv = ["tune", str(sweep), "--storage-path", str(tmp_path), "--verbose", "0"]
    assert main([*argv, "--name", "flaky"]) == 0  # the other trial finishes and is exported
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "flaky" / SUMMARY_FILE).read_text())
    [failed] = summary["errored_trials"]
    row = next(t for t in summary["trials"] if t["trial_id"] == failed)
    assert row["error"] == "RuntimeError: boom: the env exploded"
    assert Path(row["error_file"]).is_file() and row["error_file"].startswith(row["path"])
    lines = [ln for ln in out.splitlines() if "failed:" in ln]
    expected = f"[tune] trial {failed} failed: RuntimeError: boom: the env exploded; log: "
    assert lines and all(ln.startswith(expected) for ln in lines), out
    assert all(row["error_file"] in ln for ln in lines)
    assert "key_299" not in out and summary["best"]["trial_id"] != failed

    # A metric the trials never report (the crash): one line, no result dict.
    assert main([*argv, "--name", "nometric", "--set", "metric=missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: Tune stopped the sweep: ValueError: Trial returned a result")
    assert "`missing`" in err and "key_299" not in err and "nometric" in err
