"""The one run loop of every training command (offline pretraining and Q-learning,
Gaussian PPO; DPPO and the online phase are moving onto it).

Run control (:class:`RunControl`: output, budget, evaluation/checkpoint cadence, seed,
resume) is separate from the algorithm's knobs (its ``AlgorithmConfig``). A family
describes itself with a small :class:`RunFamily`; :func:`run_training` does the rest,
the same way for all of them:

    resume check → build → (restore | start evaluation) → ``train()`` until the budget,
    one ``progress.jsonl`` line + TensorBoard scalars + one printed line per iteration,
    atomic checkpoints at the cadence and at the end → evaluation of exactly what was
    saved → ``result.json``.

Progress keys are defined once below; families add their own metrics to a line.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion.checkpoints import CheckpointMeta

# Progress-line keys shared by every family.
ITERATION = "iteration"
SECONDS = "seconds"
EVAL_RETURN = "eval_return_mean"
EVAL_RETURN_STD = "eval_return_std"
EVAL_NORMALIZED = "eval_normalized_score"


@dataclass
class RunControl:
    """How a run is driven, shared by every command (never an algorithm knob).

    Attributes:
        out_dir: output directory (``checkpoint/``, ``progress.jsonl``, ``result.json``,
            ``tensorboard/``).
        budget: stop at the first iteration whose progress counter (the family's unit:
            gradient steps or env steps) reaches this.
        eval_interval: evaluate every this many iterations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_interval: save every this many iterations (0: only at the end).
        seed: RNG seed.
        resume: continue from ``out_dir/checkpoint`` if present (else start fresh).
    """

    out_dir: str
    budget: int
    eval_interval: int = 0
    eval_episodes: int = 10
    checkpoint_interval: int = 0
    seed: int = 0
    resume: bool = False

    @classmethod
    def from_settings(cls, settings: Any, *, budget: int) -> RunControl:
        """The run-control fields of a command's settings (same names; no ``resume``
        field means never resume)."""
        return cls(
            out_dir=settings.out_dir,
            budget=budget,
            eval_interval=settings.eval_interval,
            eval_episodes=settings.eval_episodes,
            checkpoint_interval=settings.checkpoint_interval,
            seed=settings.seed,
            resume=getattr(settings, "resume", False),
        )


class RunFamily:
    """What a family of algorithms tells the run loop (override what differs).

    Attributes:
        tag: prefix of printed lines, e.g. "pretrain".
        unit: the progress counter the budget counts ("gradient_steps" or "env_steps").
        existing_is_error: without ``resume``, an existing checkpoint in ``out_dir`` is
            an error (True) or is replaced (False).
    """

    tag: str = "run"
    unit: str = "iterations"
    existing_is_error: bool = False
    #: Evaluation of the starting policy (fine-tuning runs; set by ``start``), kept in
    #: the checkpoint meta and restored from it on resume.
    start_evaluation: dict[str, Any] | None = None

    def meta(self) -> CheckpointMeta:
        """Checkpoint metadata of this run (iteration and timing are added by the loop)."""
        raise NotImplementedError

    def build(self) -> Any:
        """The RLlib ``Algorithm``."""
        raise NotImplementedError

    def check_resumable(self, saved: CheckpointMeta, where: Path) -> None:
        """Raise a CheckpointError naming every setting that differs from ``saved``."""

    def start(self, algo: Any, control: RunControl) -> dict[str, Any] | None:
        """Fresh runs only (after ``build``): load pretrained weights etc.; return the
        iteration-0 progress line (e.g. the starting policy's evaluation) or None."""
        return None

    def restore(self, algo: Any, ckpt_dir: Path) -> dict[str, Any] | None:
        """Resumed runs: restore ``algo`` from ``ckpt_dir``; what to record about it in
        ``result.json["resumed"]`` besides the iteration (or None)."""
        algo.restore_from_path(str(ckpt_dir))
        return None

    def before_iteration(self, algo: Any, counter: int, control: RunControl) -> None:
        """Called before each ``train()`` with the progress counter so far (e.g. to size
        the iteration that reaches the budget)."""

    def progress_line(
        self, algo: Any, result: dict[str, Any], it: int, *, evaluated: bool
    ) -> dict[str, Any]:
        """The family's part of iteration ``it``'s line; must hold ``self.unit``."""
        raise NotImplementedError

    def format_line(self, line: dict[str, Any], control: RunControl) -> str:
        msg = f"[{self.tag}] iter {line[ITERATION]}  {self.unit.replace('_', ' ')} "
        msg += f"{line.get(self.unit, 0)}/{control.budget}"
        if EVAL_RETURN in line:
            msg += f"  eval return {line[EVAL_RETURN]:.1f}"
        return msg + f"  {line.get(SECONDS, 0.0):.0f}s"

    def finish(self, algo: Any) -> dict[str, Any]:
        """After the last iteration, before ``algo.stop()``: fields for ``result.json``
        that need the live algorithm (e.g. where its actors ran)."""
        return {}

    def final_evaluation(self, ckpt: str, control: RunControl) -> dict[str, Any]:
        """Evaluation of the saved checkpoint (loaded from disk: exactly what was saved)
        in the env."""
        raise NotImplementedError

    def summary(self, base: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        """``result.json`` from the loop's ``base`` fields and the final evaluation."""
        return {**base, "evaluation": evaluation}


def eval_fields(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Progress-line fields of an ``evaluate_module`` result."""
    fields = {
        EVAL_RETURN: evaluation["episode_return_mean"],
        EVAL_RETURN_STD: evaluation["episode_return_std"],
    }
    if "normalized_score" in evaluation:
        fields[EVAL_NORMALIZED] = evaluation["normalized_score"]
    return fields


def before_after_summary(
    tag: str, base: dict[str, Any], start: dict[str, Any] | None, final: dict[str, Any]
) -> dict[str, Any]:
    """``result.json`` of a fine-tuning run (start and final evaluation), printed as one
    "return before -> after" line."""
    before = "n/a" if not start else f"{start['episode_return_mean']:.1f}"
    print(
        f"[{tag}] return before {before} -> after {final['episode_return_mean']:.1f} ± "
        f"{final['episode_return_std']:.1f} ({final['num_episodes']} episodes, "
        f"{base['env_steps']} env steps, {base['train_seconds'] / 60:.1f} min)",
        flush=True,
    )
    return {**base, "start_evaluation": start, "final_evaluation": final}


def run_training(family: RunFamily, control: RunControl) -> dict[str, Any]:
    """Run ``family`` under ``control``; returns the summary also written to ``result.json``."""
    from rllib_diffusion.checkpoints import resume_checkpoint_meta
    from rllib_diffusion.utils.io import write_json_atomic

    started = time.perf_counter()
    out = Path(control.out_dir).expanduser().resolve()
    ckpt_dir = out / "checkpoint"
    meta = family.meta()
    saved = resume_checkpoint_meta(
        ckpt_dir,
        control.resume,
        algorithms=(meta.algorithm,),
        tag=family.tag,
        existing_is_error=family.existing_is_error,
    )
    if saved is not None:
        family.check_resumable(saved, ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    algo = family.build()
    state: dict[str, Any] = {}
    try:
        state.update(_begin(family, control, algo, saved, out))
        ckpt = _train(family, control, algo, meta, state, out)
    finally:
        if state.get("writer") is not None:
            state["writer"].close()
        algo.stop()
    print(f"[{family.tag}] checkpoint: {ckpt}; evaluating {control.eval_episodes} episodes ...")
    evaluation = family.final_evaluation(ckpt, control)
    base = {
        **meta.to_dict(),
        "checkpoint": ckpt,
        "iterations": state["it"],
        family.unit: state["counter"],
        "train_seconds": state["train_seconds"],
        "total_seconds": time.perf_counter() - started,
        "resumed": state["resumed"],
        "progress": state["lines"],
        **state["finish"],
    }
    summary = family.summary(base, evaluation)
    write_json_atomic(out / "result.json", summary)
    return summary


def _begin(
    family: RunFamily,
    control: RunControl,
    algo: Any,
    saved: CheckpointMeta | None,
    out: Path,
) -> dict[str, Any]:
    """Restore (resume) or start (fresh): the loop state before the first iteration."""
    from rllib_diffusion.checkpoints import CheckpointError, progress_up_to
    from rllib_diffusion.utils.io import write_jsonl_atomic

    if saved is None:
        first = family.start(algo, control)
        lines = [first] if first is not None else []
        state = {"it": 0, "seconds_before": 0.0, "resumed": None}
        shutil.rmtree(out / "tensorboard", ignore_errors=True)  # an earlier run's events
    else:
        it = int(saved.iteration)
        restored = family.restore(algo, out / "checkpoint")
        if algo.iteration != it:
            raise CheckpointError(
                f"Checkpoint '{out / 'checkpoint'}' says iteration {it} but restores "
                f"iteration {algo.iteration}; it is inconsistent, start a new --out."
            )
        lines = progress_up_to(out / "progress.jsonl", it, first=0 if _has_line0(out) else 1)
        state = {
            "it": it,
            "seconds_before": float(saved.train_seconds or 0.0),
            "resumed": {"from_iteration": it, **(restored or {})},
        }
        family.start_evaluation = saved.start_evaluation
        print(f"[{family.tag}] resumed from '{out / 'checkpoint'}' at iteration {it}", flush=True)
    write_jsonl_atomic(out / "progress.jsonl", lines)
    state["lines"] = lines
    state["counter"] = int(lines[-1].get(family.unit, 0)) if lines else 0
    state["writer"] = tensorboard_writer(
        out / "tensorboard", family.unit, lines[-1] if lines else None
    )
    if saved is None and lines:
        log_scalars(state["writer"], family.tag, family.unit, lines[0])
    return state


def _has_line0(out: Path) -> bool:
    try:
        with open(out / "progress.jsonl") as f:
            return json.loads(f.readline()).get(ITERATION) == 0
    except (OSError, ValueError):
        return False


def _train(
    family: RunFamily,
    control: RunControl,
    algo: Any,
    meta: CheckpointMeta,
    state: dict[str, Any],
    out: Path,
) -> str:
    """Iterations until the budget; returns the final checkpoint's path."""
    from rllib_diffusion.checkpoints import save_algorithm_checkpoint

    t0 = time.perf_counter() - state["seconds_before"]

    def checkpoint() -> str:
        seconds = time.perf_counter() - t0
        return save_algorithm_checkpoint(
            algo,
            out / "checkpoint",
            meta.replace(
                iteration=state["it"],
                env_steps=state["counter"] if family.unit == "env_steps" else None,
                train_seconds=seconds,
                start_evaluation=family.start_evaluation,
            ),
        )

    with open(out / "progress.jsonl", "a") as progress:
        done = state["counter"] >= control.budget
        while not done:
            state["it"] = it = state["it"] + 1
            family.before_iteration(algo, state["counter"], control)
            result = algo.train()
            evaluated = bool(control.eval_interval) and it % control.eval_interval == 0
            line = {ITERATION: it, **family.progress_line(algo, result, it, evaluated=evaluated)}
            line[SECONDS] = time.perf_counter() - t0
            state["counter"] = int(line[family.unit])
            state["lines"].append(line)
            progress.write(json.dumps(line) + "\n")
            progress.flush()
            log_scalars(state["writer"], family.tag, family.unit, line)
            print(family.format_line(line, control), flush=True)
            done = state["counter"] >= control.budget
            if control.checkpoint_interval and it % control.checkpoint_interval == 0 and not done:
                checkpoint()
    state["finish"] = family.finish(algo)
    state["train_seconds"] = time.perf_counter() - t0
    return checkpoint()


# ---------------------------------------------------------------------- TensorBoard
def tensorboard_writer(logdir: Path, unit: str, last_line: dict[str, Any] | None) -> Any:
    """A tensorboardX writer (None when it is not installed); on resume, events past the
    checkpoint (x > ``last_line[unit]``) from the interrupted run are purged."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    resumed = last_line is not None and last_line.get(ITERATION, 0)
    purge = int(last_line.get(unit, 0)) + 1 if resumed else None
    return SummaryWriter(str(logdir), purge_step=purge)


def log_scalars(writer: Any, tag: str, unit: str, line: dict[str, Any]) -> None:
    """Every number of a progress line (one level of dicts too) as ``<tag>/<key>`` at
    x = ``line[unit]``."""
    if writer is None:
        return
    step = int(line.get(unit, 0))
    for key, value in line.items():
        if key == unit:
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            name = f"{tag}/{key}" if sub is None else f"{tag}/{key}/{sub}"
            writer.add_scalar(name, float(v), global_step=step)
    writer.flush()
