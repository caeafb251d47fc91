"""The periodic evaluation inside a fine-tuning run (``--eval-interval``): a due evaluation
that leaves no return is reported (warning + ``eval_missing`` on the progress line), and
evaluations slower than RLlib's ``evaluation_sample_timeout_s`` still record their return
(they run in the driver, where RLlib applies no sample timeout)."""

from __future__ import annotations

import pytest
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, return_fields

TRAIN = {ENV_RUNNER_RESULTS: {"episode_return_mean": 3.0}, "training_iteration": 25}


@pytest.mark.parametrize(
    ("evaluation", "cause"),
    [
        (None, "no evaluation section"),
        ({}, "no evaluation section"),
        ({ENV_RUNNER_RESULTS: {}}, "without EnvRunner metrics"),
        ({ENV_RUNNER_RESULTS: {"num_env_steps_sampled": 900}}, "no evaluation episode completed"),
    ],
)
def test_due_evaluation_without_return_is_reported(evaluation, cause, capsys):
    result = dict(TRAIN)
    if evaluation is not None:
        result[EVALUATION_RESULTS] = evaluation
    fields = return_fields(result, None, evaluated=True)
    assert fields == {M.TRAIN_RETURN: 3.0, M.EVAL_MISSING: True}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "iteration 25" in err[0] and "--eval-interval" in err[0] and cause in err[0]


def test_recorded_or_not_due_evaluation_is_not_reported(capsys):
    result = {**TRAIN, EVALUATION_RESULTS: {ENV_RUNNER_RESULTS: {"episode_return_mean": 0.5}}}
    refs = {"min": 0.0, "max": 1.0}
    assert return_fields(result, refs, evaluated=True) == {
        M.TRAIN_RETURN: 3.0,
        M.TRAIN_NORMALIZED: 300.0,
        M.EVAL_RETURN: 0.5,
        M.EVAL_NORMALIZED: 50.0,
    }
    assert return_fields(TRAIN, None, evaluated=False) == {M.TRAIN_RETURN: 3.0}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "rllib"])
def test_evaluation_longer_than_rllib_sample_timeout_records_its_return(
    lockstep, pretrained, ray_session, capsys
):
    """Both in-driver evaluations (DPPO's lock-step one and RLlib's own, which DSRL uses)
    record a return although every evaluation episode outlasts the sample timeout."""
    from rllib_diffusion.algorithms.dppo.finetune import dppo_config_from_pretrained, progress_line

    s = FinetuneSettings.of(
        checkpoint=str(pretrained[0] / "checkpoint"),
        ft_denoising_steps=2,
        num_env_runners=0,
        decisions_per_iteration=20,
        eval_interval=1,
        eval_episodes=2,
    )
    config = dppo_config_from_pretrained(s.checkpoint, s).evaluation(
        evaluation_sample_timeout_s=1e-4
    )
    if not lockstep:
        config.evaluation(custom_evaluation_function=None)
    algo = config.build_algo()
    try:
        line = progress_line(algo.train(), 1, None, evaluated=True)
    finally:
        algo.stop()
    assert line[M.EVAL_RETURN] is not None and M.EVAL_MISSING not in line
    assert "recorded no return" not in capsys.readouterr().err
