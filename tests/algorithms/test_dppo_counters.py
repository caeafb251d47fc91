"""DPPO in RLlib's standard counters: ``num_env_steps_sampled_lifetime`` counts true env
steps (decisions × executed actions), decisions have their own counter, the result passes
RLlib's structure check, the counters survive a state round trip, and a Tune stopper on
env steps stops at the right count."""

from __future__ import annotations

from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)
from ray.rllib.utils.test_utils import check_train_results_new_api_stack

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo import DPPO
from rllib_diffusion.algorithms.dppo.finetune import FinetuneSettings, dppo_config_from_pretrained
from tests.algorithms.test_dppo_resilience import TINY_FT


def _tiny_config(pretrained):
    settings = FinetuneSettings.of(checkpoint=str(pretrained[0] / "checkpoint"), **TINY_FT)
    return dppo_config_from_pretrained(settings.checkpoint, settings)


def _counters(result: dict) -> tuple[int, int, int]:
    runners = result[ENV_RUNNER_RESULTS]
    assert result[NUM_ENV_STEPS_SAMPLED_LIFETIME] == runners[NUM_ENV_STEPS_SAMPLED_LIFETIME]
    return (
        int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME]),
        int(result[M.DECISIONS_LIFETIME]),
        int(runners[NUM_ENV_STEPS_SAMPLED]),
    )


def test_train_result_counts_true_env_steps_and_survives_a_state_round_trip(
    pretrained, ray_session
):
    config = _tiny_config(pretrained)
    act_steps = config.model_config["policy"]["act_steps"]
    algo = config.build_algo()
    try:
        first = algo.train()
        check_train_results_new_api_stack(first)
        env_steps, decisions, per_iteration = _counters(first)
        assert env_steps == algo.env_steps_lifetime == first[M.DPPO_NAMESPACE][M.ENV_STEPS]
        assert per_iteration == env_steps  # first iteration: this iteration's = lifetime
        # 40 decisions of up to act_steps real steps each (fewer where an episode ended).
        assert decisions >= 40 and decisions < env_steps <= decisions * act_steps
        # Module steps (forward passes) stay decisions.
        assert first[ENV_RUNNER_RESULTS]["num_module_steps_sampled_lifetime"]["default_policy"] == (
            decisions
        )
        state = algo.get_state()
        second = algo.train()
        check_train_results_new_api_stack(second)
        env_steps2, decisions2, per_iteration2 = _counters(second)
        assert env_steps2 == algo.env_steps_lifetime == env_steps + per_iteration2
        assert decisions2 > decisions

        # Restoring the first iteration's state restores its counts exactly ...
        algo.set_state(state)
        assert algo.env_steps_lifetime == env_steps
        assert algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)) == env_steps
        assert algo.metrics.peek(M.DECISIONS_LIFETIME) == decisions
        # ... and a checkpoint written before decisions had their own counter (its
        # env-step counter then counted decisions) is brought to the true count.
        stats = state["metrics_logger"]["stats"]
        del stats[M.DECISIONS_LIFETIME]
        stats[f"{ENV_RUNNER_RESULTS}--{NUM_ENV_STEPS_SAMPLED_LIFETIME}"]["lifetime_sum"] = decisions
        algo.set_state(state)
        assert algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)) == env_steps
        assert algo.metrics.peek(M.DECISIONS_LIFETIME) == decisions
        third = algo.train()
        env_steps3, decisions3, per_iteration3 = _counters(third)
        assert env_steps3 == algo.env_steps_lifetime == env_steps + per_iteration3
        assert decisions3 > decisions
    finally:
        algo.stop()


def test_tune_stopper_on_env_steps_counts_true_env_steps(pretrained, ray_session, tmp_path):
    """``stop={"num_env_steps_sampled_lifetime": N}`` ends the trial at the first iteration
    whose true env steps reach N (it stopped ``act_steps`` times too late when the
    counter counted decisions)."""
    from ray import tune

    config = _tiny_config(pretrained)
    budget = 300  # ~2 iterations of 40 decisions × 4 actions
    tuner = tune.Tuner(
        DPPO,
        param_space=config,
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="dppo_stop",
            stop={NUM_ENV_STEPS_SAMPLED_LIFETIME: budget},
        ),
    )
    results = tuner.fit()
    assert not results.errors
    df = results[0].metrics_dataframe
    steps = df[NUM_ENV_STEPS_SAMPLED_LIFETIME].tolist()
    assert steps[-1] >= budget and all(s < budget for s in steps[:-1]), steps
    per_iteration = steps[-1] - (steps[-2] if len(steps) > 1 else 0)
    assert steps[-1] - budget < per_iteration
    assert df[M.DPPO_NAMESPACE + "/" + M.ENV_STEPS].tolist() == steps
    assert (df[M.DECISIONS_LIFETIME] < df[NUM_ENV_STEPS_SAMPLED_LIFETIME]).all()
