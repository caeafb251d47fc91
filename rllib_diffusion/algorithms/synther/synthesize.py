"""Training the SynthER generator and writing synthetic transitions as a Minari dataset
(``rllib-diffusion synthesize``).

dataset → transition parquet → :class:`SynthER` (RLlib offline API) → checkpoint
(``CheckpointMeta`` algorithm "SynthER") → its fidelity on the data's marginals
(``result.json``) → N transitions sampled in chunks → one single-step Minari episode per
transition (terminal: terminated, else truncated), written atomically with provenance
under the ``metadata.json`` key :data:`PROVENANCE_KEY`.

Terminal flags (``--terminals``, :data:`TERMINAL_LABELS`): ``generated`` is SynthER's
official choice, the generated flag dimension thresholded at 0.5; ``env-rule`` labels
each transition by the env's termination rule on its generated next state
(:mod:`rllib_diffusion.envs.termination`), refused before any training for an env
without a known rule. Offline only: online SynthER's pools keep the generated flag.
"""

from __future__ import annotations

import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rllib_diffusion import columns as C
from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.offline_run import (
    OfflineFamily,
    OfflineRunSettings,
    lr_schedule,
    start_offline_run,
)
from rllib_diffusion.algorithms.synther.synther import ALGORITHM_NAME

# PROVENANCE_KEY and read_provenance moved to data.synthetic; still importable from here.
from rllib_diffusion.data.minari_io import check_output_id
from rllib_diffusion.data.synthetic import (  # noqa: F401
    PROVENANCE_KEY,
    read_provenance,
)
from rllib_diffusion.knobs import Count, NonNegative, NonNegativeFloat, Positive, PositiveFloat
from rllib_diffusion.modules.model_config import ConfigError

#: Transitions the final fidelity check samples (at most the dataset's size).
FIDELITY_SAMPLES = 5_000

#: How a generated transition gets its terminal flag (``--terminals``): SynthER's
#: threshold of the generated flag at 0.5, or the env's termination rule on s′.
TerminalLabels = Literal["generated", "env-rule"]
TERMINAL_LABELS: tuple[str, ...] = typing.get_args(TerminalLabels)
GENERATED_TERMINALS, ENV_RULE_TERMINALS = TERMINAL_LABELS
#: Provenance keys of the terminal labelling: the choice; with ``env-rule`` the rate
#: the generated flag would have given and the number of transitions the rule flags.
TERMINALS_KEY = "terminals"
GENERATED_TERMINAL_RATE_KEY = "terminal_rate_generated_flag"
RULE_TERMINALS_KEY = "num_terminals_env_rule"


@dataclass
class SynthERSettings(OfflineRunSettings):
    """Settings of a generator training run (shared fields in :class:`OfflineRunSettings`).

    Attributes:
        width: hidden width of the residual MLP denoiser (SynthER's paper: 2048).
        depth: hidden layers of the denoiser (SynthER's paper: 6).
        denoising_steps: diffusion steps K of training and sampling (SynthER samples
            with 128 EDM steps).
        ddim_steps: sample with this many DDIM steps instead of K DDPM steps (None: DDPM).
        lr: Adam learning rate (SynthER: 3e-4).
        lr_end: learning rate at the end of a cosine decay (equal to lr: constant).
        warmup_steps: linear learning-rate warm-up steps.
        knobs: ``SynthERConfig.training()`` knobs given (weight decay, EMA schedule).
    """

    out_dir: str = "runs/synther"
    gradient_steps: Count = 20_000
    width: Positive = 512
    depth: Positive = 4
    denoising_steps: Count = 100
    ddim_steps: Count | None = None
    lr: PositiveFloat = 3e-4
    lr_end: NonNegativeFloat = 3e-4
    warmup_steps: NonNegative = 0
    knobs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.synthetic_dataset is not None or self.real_ratio != 1.0:
            raise ConfigError(
                "the SynthER generator trains on real data only: drop --synthetic-dataset "
                "and --real-ratio."
            )
        if self.ddim_steps is not None and self.ddim_steps > self.denoising_steps:
            raise ConfigError(
                f"--ddim-steps ({self.ddim_steps}) must be <= --denoising-steps "
                f"({self.denoising_steps})."
            )


@dataclass
class SynthesizeSettings(SynthERSettings):
    """Settings of ``rllib-diffusion synthesize`` (generator flags: :class:`SynthERSettings`).

    Attributes:
        dataset_id: Minari id to write the synthetic transitions to (under
            $MINARI_DATASETS_PATH), e.g. rllib-diffusion/hopper/synther-v0.
        num_transitions: N, synthetic transitions to write.
        generator: a SynthER checkpoint to sample from instead of training one (it must
            have been trained on --dataset; the generator flags are then not used).
        sample_batch_size: transitions sampled per chunk (one progress line each).
        terminals: terminal flag of a generated transition: "generated" (SynthER's: the
            generated flag thresholded at 0.5) or "env-rule" (the env's termination
            rule on the generated next state; Hopper, Walker2d, HalfCheetah).
        overwrite: replace an earlier run in OUT and an existing dataset with this id.
    """

    dataset_id: str = field(kw_only=True)
    num_transitions: Count = field(default=100_000, kw_only=True)
    generator: str | None = field(default=None, kw_only=True)
    sample_batch_size: Count = field(default=10_000, kw_only=True)
    terminals: TerminalLabels = field(default=GENERATED_TERMINALS, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dataset_id:
            raise ConfigError("--dataset-id must name the Minari id to write.")
        if self.terminals not in TERMINAL_LABELS:
            raise ConfigError(
                f"--terminals {self.terminals!r}; allowed: {', '.join(TERMINAL_LABELS)}."
            )


# --------------------------------------------------------------------------- training
class SynthERFamily(OfflineFamily):
    """Generator training in the shared run loop; the final "evaluation" compares
    generated transitions with the data instead of acting in an env."""

    def final_evaluation(self, ckpt: str, control) -> dict[str, Any]:
        from rllib_diffusion.checkpoints import load_policy_module
        from rllib_diffusion.data.transitions import TransitionLayout, dataset_transitions

        module, _ = load_policy_module(ckpt, expect_algorithms=(ALGORITHM_NAME,))
        real = dataset_transitions(self.dataset)
        layout = TransitionLayout(self.dataset.obs_dim, self.dataset.action_dim)
        flat = layout.flatten(real)
        m = min(FIDELITY_SAMPLES, len(flat))
        rng = np.random.default_rng(10_000 + control.seed)
        gen = generate(module, m, seed=10_000 + control.seed)
        return marginal_fidelity(flat[rng.choice(len(flat), m, replace=False)], layout.flatten(gen))

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        print(
            f"[{self.tag}] generated vs data over {evaluation['num_samples']} transitions: "
            f"mean |Δmean|/std {evaluation['mean_abs_z_error']:.3f}, mean std ratio "
            f"{evaluation['std_ratio_mean']:.3f}, terminal rate "
            f"{evaluation['terminal_rate_generated']:.4f} (data "
            f"{evaluation['terminal_rate_data']:.4f}); train time {base['train_seconds']:.0f}s",
            flush=True,
        )
        return {**base, "evaluation": evaluation}


def marginal_fidelity(real: np.ndarray, generated: np.ndarray) -> dict[str, Any]:
    """Per-dimension agreement of generated ``(M, D)`` with real ``(M', D)`` transitions:
    mean |Δmean| in units of the data's std, the ratio of stds, terminal rates."""
    std = np.maximum(real.std(axis=0), 1e-6)
    z_err = np.abs(generated.mean(axis=0) - real.mean(axis=0)) / std
    varying = real.std(axis=0) > 1e-6
    ratio = generated.std(axis=0)[varying] / std[varying]
    return {
        "num_samples": int(len(generated)),
        "mean_abs_z_error": float(z_err.mean()),
        "max_abs_z_error": float(z_err.max()),
        "std_ratio_mean": float(ratio.mean()) if ratio.size else 1.0,
        "std_ratio_min": float(ratio.min()) if ratio.size else 1.0,
        "std_ratio_max": float(ratio.max()) if ratio.size else 1.0,
        "terminal_rate_data": float(real[:, -1].mean()),
        "terminal_rate_generated": float(generated[:, -1].mean()),
    }


def generator_model_config(s: SynthERSettings, dataset: Any, env_id: str):
    """``SynthERModelConfig`` with per-dimension statistics fitted on ``dataset``."""
    from rllib_diffusion.data.transitions import TransitionLayout, dataset_transitions

    layout = TransitionLayout(dataset.obs_dim, dataset.action_dim)
    return fit_model_config(
        layout.flatten(dataset_transitions(dataset)),
        layout,
        width=s.width,
        depth=s.depth,
        denoising_steps=s.denoising_steps,
        ddim_steps=s.ddim_steps,
        env_id=env_id,
    )


def fit_model_config(flat: np.ndarray, layout: Any, *, env_id: str | None, **network: Any):
    """``SynthERModelConfig`` of ``layout`` (a ``TransitionLayout``) standardised by the
    statistics of ``flat`` ``(N, D)`` (mean, std per dimension; x̂0 clamped at the
    largest |z| plus one); ``network``: its width, depth, denoising and DDIM steps."""
    from rllib_diffusion.algorithms.synther.synther_rl_module import SynthERModelConfig
    from rllib_diffusion.data.transitions import StandardNormalizer

    norm = StandardNormalizer.fit(flat)
    return SynthERModelConfig(
        obs_dim=layout.obs_dim,
        action_dim=layout.action_dim,
        normalization=norm.to_dict(),
        clip_x0=float(np.abs(norm.normalize(flat)).max()) + 1.0,
        env_id=env_id,
        **network,
    )


def build_synther_config(s: SynthERSettings, data_path: str, model) -> Any:
    """The ``SynthERConfig`` for ``s`` on transition parquet ``data_path``."""
    from rllib_diffusion.algorithms.window_prelearner import seed_local_shuffle

    config = generator_config(
        model, batch_size=s.batch_size, lr=lr_schedule(s), seed=s.seed, **s.knobs
    )
    return seed_local_shuffle(
        config.offline_data(input_=[data_path], dataset_num_iters_per_learner=s.steps_per_iteration)
    )


def generator_config(model: Any, *, batch_size: int, lr: Any, seed: int, **knobs: Any) -> Any:
    """The ``SynthERConfig`` of generator ``model`` (a ``SynthERModelConfig``) with no
    data source: spaces of its layout, ``batch_size``, ``lr`` (a float or a schedule),
    ``seed`` and ``SynthERConfig.training()`` ``knobs``. ``build_learner()`` of it trains
    the generator on batches given to ``Learner.update`` (online SynthER)."""
    import gymnasium as gym

    from rllib_diffusion.algorithms.synther.synther import SynthERConfig

    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
    return (
        SynthERConfig()
        .environment(observation_space=box(model.obs_dim), action_space=box(model.action_dim))
        .training(train_batch_size_per_learner=batch_size, lr=lr, **knobs)
        .evaluation(evaluation_interval=None)
        .debugging(seed=seed)
        .rl_module(model_config=model.to_dict())
    )


def train_generator(settings: SynthERSettings) -> dict[str, Any]:
    """Train the SynthER generator; returns the summary also written to ``result.json``
    (``checkpoint``: the generator checkpoint)."""
    from rllib_diffusion.data.offline import prepare_transition_data
    from rllib_diffusion.run_loop import RunControl, run_training

    s = settings
    _, started, dataset, env_id = start_offline_run(s)
    data_path, n = prepare_transition_data(dataset, seed=s.seed)
    model = generator_model_config(s, dataset, env_id)
    print(
        f"[synther] generator {s.depth}×{s.width} (K={s.denoising_steps}) on {dataset.name}: "
        f"{n} transitions of dim {model.layout.dim}",
        flush=True,
    )
    config = build_synther_config(s, data_path, model)
    meta = {"algorithm": ALGORITHM_NAME, "env_id": env_id, "model_config": model.to_dict()}
    family = SynthERFamily(
        config.build_algo,
        s,
        tag="synther",
        meta=meta,
        dataset=dataset,
        env_config={},
        loss_key=M.BC_LOSS,
    )
    summary = run_training(family, RunControl.from_settings(s, budget=s.gradient_steps))
    summary["total_seconds"] = time.perf_counter() - started
    return summary


# ------------------------------------------------------------------------- sampling
def generate(module: Any, n: int, *, seed: int, chunk: int = 10_000, progress=None) -> dict:
    """``n`` transitions from a loaded :class:`SynthERModule`, sampled in chunks with one
    torch generator seeded by ``seed`` (the same seed and chunk give the same data).
    ``progress(done, n)`` is called after each chunk."""
    import torch

    from rllib_diffusion.data.transitions import TRANSITION_COLUMNS

    gen = torch.Generator().manual_seed(int(seed))
    parts: dict[str, list[np.ndarray]] = {c: [] for c in TRANSITION_COLUMNS}
    done = 0
    while done < n:
        k = min(chunk, n - done)
        for name, value in module.generate(k, generator=gen).items():
            parts[name].append(value)
        done += k
        if progress is not None:
            progress(done, n)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _check_output_id(s: SynthesizeSettings) -> None:
    """One-line errors for an output id that cannot be written, before any training."""
    check_output_id(s.dataset_id, overwrite=s.overwrite)


def terminal_rule(s: SynthesizeSettings) -> Any:
    """The termination rule ``--terminals env-rule`` labels with (None for "generated"):
    the one of ``--env-id`` or else the dataset's env; a one-line ``ConfigError``, before
    any training, when no rule is known for that env."""
    from rllib_diffusion.data import load_dataset
    from rllib_diffusion.envs.termination import TERMINATIONS, termination_fn

    if s.terminals != ENV_RULE_TERMINALS:
        return None
    env_id = s.env_id or load_dataset(s.dataset, download=s.download).env_id
    rule = termination_fn(env_id)
    if rule is None:
        raise ConfigError(
            f"--terminals {ENV_RULE_TERMINALS}: no termination rule is known for env "
            f"{env_id!r} (known: {', '.join(TERMINATIONS)}); use --terminals "
            f"{GENERATED_TERMINALS}, or add its rule to rllib_diffusion/envs/termination.py."
        )
    return rule


def label_terminals(columns: dict, rule: Any) -> tuple[dict, dict[str, Any]]:
    """``columns`` with terminal flags from ``rule`` on their next states (0.0/1.0), and
    the provenance of the labelling; unchanged (SynthER's generated flags) when ``rule``
    is None."""
    if rule is None:
        return columns, {}
    flagged = np.asarray(rule(columns[C.NEXT_OBS]), bool)
    info = {
        GENERATED_TERMINAL_RATE_KEY: float(columns[C.TERMINATEDS].mean()),
        RULE_TERMINALS_KEY: int(flagged.sum()),
    }
    return {**columns, C.TERMINATEDS: flagged.astype(np.float32)}, info


def synthesize(settings: SynthesizeSettings) -> dict[str, Any]:
    """Train (or load) the generator and write ``num_transitions`` synthetic transitions as
    the Minari dataset ``dataset_id``; returns a summary (also ``synthesize.json`` in OUT)."""
    from rllib_diffusion.checkpoints import load_policy_module
    from rllib_diffusion.data.synthetic import generator_checkpoint, write_synthetic_transitions
    from rllib_diffusion.utils.runtime import limit_threads

    s = settings
    limit_threads()
    _check_output_id(s)
    rule = terminal_rule(s)
    ckpt, training = generator_checkpoint(
        s.generator,
        lambda: train_generator(s),
        algorithm=ALGORITHM_NAME,
        dataset=s.dataset,
        flag="--generator",
        command="rllib-diffusion synthesize",
    )
    module, meta = load_policy_module(ckpt, expect_algorithms=(ALGORITHM_NAME,))
    source = meta.dataset or {}
    started = time.perf_counter()
    columns, labelling = label_terminals(_sample_columns(module, s, started), rule)
    sample_seconds = time.perf_counter() - started
    provenance = {**_provenance(s, ckpt, meta, source, columns), **labelling}
    print(
        f"[synthesize] writing {s.num_transitions} transitions to '{s.dataset_id}' ...", flush=True
    )
    path = write_synthetic_transitions(
        columns,
        s.dataset_id,
        env_id=meta.env_id,
        source=source,
        algorithm_name=ALGORITHM_NAME,
        description=f"{s.num_transitions} SynthER transitions generated from {s.dataset} "
        "(one single-step episode each)",
        provenance=provenance,
        overwrite=s.overwrite,
    )
    summary = {
        "dataset_id": s.dataset_id,
        "path": path,
        "provenance": provenance,
        "sample_seconds": sample_seconds,
        "write_seconds": time.perf_counter() - started - sample_seconds,
        "generator_evaluation": training.get("evaluation"),
        "settings": asdict(s),
    }
    _write_summary(s, summary)
    print(f"[synthesize] wrote {path} ({summary['write_seconds']:.0f}s)", flush=True)
    return summary


def _sample_columns(module: Any, s: SynthesizeSettings, started: float) -> dict:
    """Sample ``s.num_transitions`` transitions, printing the progress (rate since ``started``)."""

    def progress(done: int, n: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"[synthesize] sampled {done}/{n} transitions  {rate:.0f}/s", flush=True)

    return generate(
        module, s.num_transitions, seed=s.seed, chunk=s.sample_batch_size, progress=progress
    )


def _provenance(
    s: SynthesizeSettings, ckpt: str, meta: Any, source: dict, columns: dict
) -> dict[str, Any]:
    """The synthetic dataset's provenance: generator, source data, size, seed, run."""
    from rllib_diffusion.utils.runtime import run_metadata

    return {
        "generator_checkpoint": ckpt,
        "generator_algorithm": ALGORITHM_NAME,
        "generator_model": {
            k: meta.model_config[k] for k in ("width", "depth", "denoising_steps", "ddim_steps")
        },
        "source_dataset": s.dataset,
        "source_dataset_name": source.get("name"),
        "source_num_transitions": source.get("num_transitions"),
        "num_transitions": int(s.num_transitions),
        "seed": int(s.seed),
        TERMINALS_KEY: s.terminals,
        "terminal_rate": float(columns[C.TERMINATEDS].mean()),
        "run": run_metadata(),
    }


def _write_summary(s: SynthesizeSettings, summary: dict[str, Any]) -> None:
    """Write ``summary`` as ``synthesize.json`` in the run's output directory (atomically)."""
    from rllib_diffusion.utils.io import write_json_atomic

    out = Path(s.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "synthesize.json", summary)
