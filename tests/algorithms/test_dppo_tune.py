"""DPPO under Ray Tune writes TensorBoard event files with our metrics."""

from __future__ import annotations

from rllib_diffusion.algorithms.dppo import DPPO, FinetuneSettings, dppo_config_from_pretrained


def test_tune_trial_writes_tensorboard_metrics(pretrained, ray_session, tmp_path):
    from ray import tune
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = FinetuneSettings.of(
        checkpoint=str(pretrained[0] / "checkpoint"),
        num_envs_per_env_runner=2,
        decisions_per_iteration=40,
        pair_minibatch_size=80,
        num_epochs=1,
        ft_denoising_steps=2,
        eval_interval=0,
    )
    config = dppo_config_from_pretrained(settings.checkpoint, settings)
    tuner = tune.Tuner(
        DPPO,
        param_space=config,
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="dppo_tb", stop={"training_iteration": 2}
        ),
    )
    results = tuner.fit()
    assert not results.errors
    events = list(tmp_path.rglob("events.out.tfevents*"))
    assert events, "no TensorBoard event files written"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert any(t.endswith("dppo/env_steps_lifetime") for t in tags), sorted(tags)[:20]
    assert any("approx_kl" in t for t in tags)
    assert any("clip_fraction/k1" in t for t in tags)
