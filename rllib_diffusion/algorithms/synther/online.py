"""Online SynthER (Lu et al. 2023, official ``synther/online/online_exp.py``): during
online off-policy training, every ``synther_retrain_every`` env steps a **fresh**
SynthER generator is trained on the replay's current transitions, it samples a pool of
``synther_pool_size`` synthetic transitions (replacing the previous pool), and every
gradient step's minibatch holds exactly ``synther_real_ratio · B`` replay rows and the
rest from the pool.

Host: the replay fine-tuning loop (:mod:`rllib_diffusion.algorithms.replay_finetune`,
``finetune --algo dql|idql|qsm``), which builds each minibatch in the driver from its
:class:`~rllib_diffusion.algorithms.replay.TransitionReplay`. The pieces are SynthER's
and the mixing's, not copies: the generator is :class:`SynthERModule` trained by its
learner (:func:`~rllib_diffusion.algorithms.synther.synthesize.generator_config`'s
``build_learner()``, batches handed to ``Learner.update``), its statistics fitted by
:func:`~rllib_diffusion.algorithms.synther.synthesize.fit_model_config`, sampled by
:func:`~rllib_diffusion.algorithms.synther.synthesize.generate`; the pool is an
:class:`~rllib_diffusion.algorithms.mixed_offline_data.ArrayStream` whose rows a batch
takes by :func:`~rllib_diffusion.algorithms.mixed_offline_data.real_rows` /
:func:`~rllib_diffusion.algorithms.mixed_offline_data.mixed_rows`; checkpoints hold
the pool by :mod:`~rllib_diffusion.algorithms.synthetic_pool` (``CheckpointMeta.
synthetic_pool``) and the generator next to it (:data:`GENERATOR_FILE`).

Glossary: B minibatch rows, N replay rows, D = 2·Do + Da + 2 transition dim (Do: the
replay's flattened observation, Da: its flattened action, e.g. a decision's chunk).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.synthetic_replay import DEFAULTS

#: The generator's file in a checkpoint directory (next to the pool's).
GENERATOR_FILE = "synther_online_generator.pt"
#: ``PoolRecord.dataset`` of an online pool: it was generated from the replay.
REPLAY_SOURCE = "replay"
#: Gradient steps per ``Learner.update`` call while the generator trains.
TRAIN_CHUNK = 50
#: Trailing chunks whose last loss is averaged into the reported generator loss.
LOSS_CHUNKS = 10


# --------------------------------------------------------------------- the state
class OnlineSynthER:
    """The generator of the last retrain and its pool; what a host's loop calls.

    Args:
        config: the host's validated config (its ``synther_*`` knobs, ``seed``).
    """

    def __init__(self, config: Any) -> None:
        self.knobs = {name: getattr(config, name) for name in DEFAULTS}
        self.seed = int(config.seed or 0)
        self.module: Any = None  # SynthERModule of the last retrain
        self.pool: Any = None  # ArrayStream of its transitions (replay columns)
        self.index = 0  # retrains so far count as k = env steps // retrain_every
        self.at_env_step: int | None = None
        self.loss: float | None = None
        self.source_sha256 = ""  # fingerprint of the replay statistics it was fitted on

    # ------------------------------------------------------------- cadence
    def due(self, env_steps: int) -> bool:
        """Whether retrain ``⌊env_steps / retrain_every⌋`` is still to run (k ≥ 1)."""
        return env_steps // self.knobs["synther_retrain_every"] > self.index

    def maybe_retrain(
        self, columns: dict[str, np.ndarray], env_steps: int, *, last_iteration: bool = False
    ) -> dict[str, Any]:
        """Retrain and regenerate on ``columns`` (the replay's held rows) if :meth:`due`,
        unless this is the run's ``last_iteration`` (its pool would serve that iteration
        only: the retrain is skipped and stays due, e.g. for a resume with a larger
        budget); the progress values of this iteration (:meth:`values`, plus the
        retrain's seconds when it ran, or the env step of the skipped one)."""
        if not self.due(env_steps):
            return self.values()
        if last_iteration:
            served_by = "the previous pool" if self.pool is not None else "no pool (all real)"
            print(
                f"[synther] retrain {env_steps // self.knobs['synther_retrain_every']} due at "
                f"env step {env_steps} skipped: the run's last iteration (its pool would "
                f"serve only this iteration); its minibatches use {served_by}",
                flush=True,
            )
            return self.values() | {M.SYNTHER_SKIPPED_STEP: int(env_steps)}
        started = time.perf_counter()
        self.retrain(columns, env_steps // self.knobs["synther_retrain_every"], env_steps)
        seconds = time.perf_counter() - started
        print(
            f"[synther] retrain {self.index} at env step {env_steps}: generator trained on "
            f"{len(next(iter(columns.values())))} replay transitions, loss {self.loss:.4f}; pool of "
            f"{self.pool.num_rows} synthetic transitions; {seconds:.1f}s",
            flush=True,
        )
        return self.values() | {M.SYNTHER_SECONDS: seconds}

    def values(self) -> dict[str, Any]:
        """Progress values: pool rows, last retrain's env step and generator loss."""
        out: dict[str, Any] = {M.SYNTHER_POOL_ROWS: self.pool.num_rows if self.pool else 0}
        if self.at_env_step is not None:
            out[M.SYNTHER_RETRAIN_STEP] = self.at_env_step
        if self.loss is not None:
            out[M.SYNTHER_GENERATOR_LOSS] = self.loss
        return out

    # ------------------------------------------------------------- retrain
    def retrain(self, columns: dict[str, np.ndarray], index: int, env_steps: int) -> None:
        """Retrain ``index``: a fresh generator fitted to and trained on ``columns``
        (uniform minibatches), then the pool it samples (seeds derived from
        ``(seed, index)``)."""
        from rllib_diffusion.algorithms.mixed_offline_data import ArrayStream
        from rllib_diffusion.algorithms.synther.synthesize import fit_model_config
        from rllib_diffusion.algorithms.synthetic_pool import array_sha256

        k = self.knobs
        layout = replay_layout(columns)
        flat = layout.flatten(columns)
        model = fit_model_config(
            flat,
            layout,
            env_id=None,
            width=k["synther_width"],
            depth=k["synther_depth"],
            denoising_steps=k["synther_denoising_steps"],
        )
        norm = model.normalization
        self.source_sha256 = array_sha256(
            np.asarray(norm["mean"]), np.asarray(norm["std"]), np.asarray([len(flat)])
        )
        self.module, self.loss = train_fresh_generator(
            model, columns, k, seed=_derived_seed(self.seed, index, 1)
        )
        pool = generated_replay_rows(
            self.module, k["synther_pool_size"], columns, seed=_derived_seed(self.seed, index, 2)
        )
        self.pool = ArrayStream(pool, seed=_derived_seed(self.seed, index, 3))
        self.index, self.at_env_step = index, int(env_steps)

    # ------------------------------------------------------------- batches
    def minibatch(self, replay: Any, batch_size: int) -> dict[str, np.ndarray]:
        """``batch_size`` rows: all from ``replay`` before the first pool, else exactly
        ``real_rows(synther_real_ratio, B)`` from it and the rest the pool's next batch,
        in a random order (seeded by the pool's seed and batches served)."""
        from rllib_diffusion.algorithms.mixed_offline_data import mixed_rows, real_rows

        if self.pool is None:
            return replay.sample(batch_size)
        n_real = real_rows(
            self.knobs["synther_real_ratio"], batch_size, flag="--synther-real-ratio"
        )
        rng = np.random.default_rng([self.pool.seed, self.pool.served])
        idx = self.pool.next_indices(batch_size - n_real) if n_real < batch_size else None
        syn = {} if idx is None else {c: v[idx] for c, v in self.pool.columns.items()}
        return mixed_rows(replay.sample(n_real) if n_real else {}, syn, rng)

    def minibatches(self, replay: Any, batch_size: int, count: int) -> dict[str, np.ndarray]:
        """``count`` :meth:`minibatch` es of ``batch_size`` rows, one after the other in
        one batch (a learner that splits it into consecutive ``batch_size`` slices,
        unshuffled, sees each at the exact ratio); before the first pool one uniform
        sample of ``count · batch_size`` replay rows."""
        if self.pool is None:
            return replay.sample(count * batch_size)
        parts = [self.minibatch(replay, batch_size) for _ in range(count)]
        return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}

    # ------------------------------------------------------------- checkpoints
    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the generator (:data:`GENERATOR_FILE`) and the pool into the checkpoint
        being saved in ``directory``; the ``CheckpointMeta`` field recording them (none
        before the first retrain)."""
        import torch

        from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD, save_pool

        if self.pool is None:
            return {}
        state = {
            "model_config": dict(self.module.model_config),
            "weights": self.module.state_dict(),
            "loss": self.loss,
            "source_sha256": self.source_sha256,
        }
        torch.save(state, Path(directory) / GENERATOR_FILE)
        record = save_pool(
            directory,
            self.pool,
            regeneration=self.index,
            at_step=self.at_env_step,
            **self._provenance(),
        )
        return {POOL_FIELD: record.to_dict()}

    def restore(self, checkpoint: str | Path, record: Any, env_steps: int) -> dict[str, Any]:
        """The generator and pool saved in ``checkpoint`` (``record``: its meta's
        ``synthetic_pool``) taken at ``env_steps``; what ``result.json["resumed"]``
        records. Without a record (saved before the first retrain, or by a run without
        SynthER) a one-line notice if a pool is due: it is regenerated at the first
        iteration from the restored replay."""
        from rllib_diffusion.algorithms.mixed_offline_data import ArrayStream
        from rllib_diffusion.algorithms.synthetic_pool import POOL_FIELD, load_pool

        if record is None:
            if self.due(env_steps):
                print(
                    f"[synther] checkpoint '{checkpoint}' holds no SynthER pool: retraining "
                    f"the generator on the restored replay at its first iteration (env step "
                    f"{env_steps}).",
                    flush=True,
                )
            return {POOL_FIELD: None}
        self.module, saved = load_generator(checkpoint)
        self.loss, self.source_sha256 = saved["loss"], saved["source_sha256"]
        columns, rec = load_pool(checkpoint, record, step=env_steps, expect=self._provenance())
        self.pool = ArrayStream(columns, seed=rec.seed, served=rec.served)
        self.index, self.at_env_step = rec.regeneration, rec.at_step
        print(
            f"[synther] restored the generator and pool of retrain {rec.regeneration} (env "
            f"step {rec.at_step}): {rec.rows} transitions, {rec.served} batches served",
            flush=True,
        )
        return {POOL_FIELD: {k: getattr(rec, k) for k in ("regeneration", "at_step", "rows")}}

    def _provenance(self) -> dict[str, Any]:
        """``PoolRecord`` provenance: the generator file and its weights' checksum, the
        replay and the checksum of the statistics the generator was fitted on."""
        return {
            "model": GENERATOR_FILE,
            "model_sha256": weights_sha256(self.module),
            "dataset": REPLAY_SOURCE,
            "dataset_sha256": self.source_sha256,
        }


# ------------------------------------------------------------------ functions
def _derived_seed(seed: int, index: int, purpose: int) -> int:
    """A seed for ``purpose`` (1 train, 2 sample, 3 pool order) of retrain ``index``."""
    return int(np.random.SeedSequence([seed, index, purpose]).generate_state(1)[0])


def replay_layout(columns: dict[str, np.ndarray]) -> Any:
    """The ``TransitionLayout`` of replay columns (Do, Da: their flattened widths)."""
    from ray.rllib.core.columns import Columns

    from rllib_diffusion.data.transitions import TransitionLayout

    obs, actions = columns[Columns.OBS], columns[Columns.ACTIONS]
    return TransitionLayout(int(np.prod(obs.shape[1:])), int(np.prod(actions.shape[1:])))


def train_fresh_generator(
    model: Any, columns: dict[str, np.ndarray], knobs: dict[str, Any], *, seed: int
) -> tuple[Any, float]:
    """A fresh generator ``model`` trained for ``synther_gradient_steps`` steps on
    uniform minibatches (with replacement) of ``columns`` by SynthER's learner; returns
    its module and loss (mean of the last minibatch loss of the final
    :data:`LOSS_CHUNKS` chunks of :data:`TRAIN_CHUNK` steps)."""
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from rllib_diffusion.algorithms.synther.synthesize import generator_config

    b, steps = knobs["synther_batch_size"], knobs["synther_gradient_steps"]
    config = generator_config(model, batch_size=b, lr=knobs["synther_lr"], seed=seed)
    torch.manual_seed(seed)  # the fresh network's initial weights
    learner = config.build_learner()
    rng, n, losses = np.random.default_rng(seed), len(next(iter(columns.values()))), []
    for start in range(0, steps, TRAIN_CHUNK):
        m = min(TRAIN_CHUNK, steps - start)
        idx = rng.integers(0, n, size=m * b)
        batch = SampleBatch({c: v[idx] for c, v in columns.items()})
        results = learner.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=m * b),
            minibatch_size=b,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0},
        )
        losses.append(float(results[DEFAULT_MODULE_ID][M.BC_LOSS].peek()))
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return module, float(np.mean(losses[-LOSS_CHUNKS:]))


def generated_replay_rows(
    module: Any, n: int, like: dict[str, np.ndarray], *, seed: int
) -> dict[str, np.ndarray]:
    """``n`` transitions of ``module`` (SynthER's :func:`generate`) as rows of the replay
    ``like``: its columns, shapes and dtypes (terminal flags 0/1 → the replay's bool)."""
    from rllib_diffusion.algorithms.synther.synthesize import generate

    cols = generate(module, n, seed=seed)
    return {c: cols[c].reshape(n, *v.shape[1:]).astype(v.dtype) for c, v in like.items()}


def weights_sha256(module: Any) -> str:
    """Checksum of a module's state dict (names, dtypes, shapes and values, in order)."""
    import hashlib

    from rllib_diffusion.algorithms.synthetic_pool import array_sha256

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode() + array_sha256(tensor.detach().cpu().numpy()).encode())
    return h.hexdigest()


def load_generator(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The generator module saved in ``checkpoint`` and its saved state; a one-line
    ``CheckpointError`` if the file is missing or unreadable."""
    import torch

    from rllib_diffusion.algorithms.synther.synther_rl_module import SynthERModelConfig
    from rllib_diffusion.algorithms.synther.synthesize import generator_config
    from rllib_diffusion.checkpoints import CheckpointError

    path = Path(checkpoint) / GENERATOR_FILE
    try:
        saved = torch.load(path, weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        reason = "is missing" if not path.is_file() else f"cannot be read ({type(err).__name__})"
        raise CheckpointError(
            f"checkpoint '{checkpoint}' records a SynthER pool but its generator "
            f"'{GENERATOR_FILE}' {reason}; use an earlier checkpoint or another --out."
        ) from None
    model = SynthERModelConfig.from_dict(saved["model_config"])
    spec = generator_config(model, batch_size=1, lr=0.0, seed=0).get_rl_module_spec()
    module = spec.build()
    module.load_state_dict(saved["weights"])
    return module, saved


__all__ = ["DEFAULTS", "GENERATOR_FILE", "OnlineSynthER"]
