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

Progress keys are defined once below; families add their own metrics to a line. Runs
with remote EnvRunners also get, in every line, the healthy EnvRunners and the restarts
so far, and in ``result.json["placement"]["env_runners"]`` every EnvRunner with its
state. SIGINT/SIGTERM stop a run cleanly after the current iteration (checkpoint,
``result.json`` marked interrupted, exit code 130/143; see :func:`run_training`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.checkpoints import CheckpointMeta

# Progress-line keys shared by every family.
ITERATION = "iteration"
SECONDS = "seconds"
EVAL_RETURN = M.EVAL_RETURN
EVAL_RETURN_STD = "eval_return_std"
EVAL_NORMALIZED = M.EVAL_NORMALIZED

# result.json keys of a run stopped by a signal.
INTERRUPTED = "interrupted"
INTERRUPT_SIGNAL = "interrupt_signal"

#: Signals that stop a run cleanly (between iterations, checkpoint + result.json).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        overwrite: replace an earlier run in ``out_dir`` (without it, or ``resume``, an
            earlier run there is an error).
    """

    out_dir: str
    budget: int
    eval_interval: int = 0
    eval_episodes: int = 10
    checkpoint_interval: int = 0
    seed: int = 0
    resume: bool = False
    overwrite: bool = False

    @classmethod
    def from_settings(cls, settings: Any, *, budget: int) -> RunControl:
        """The run-control fields of a command's settings (same names; no ``resume`` or
        ``overwrite`` field means never)."""
        return cls(
            out_dir=settings.out_dir,
            budget=budget,
            eval_interval=settings.eval_interval,
            eval_episodes=settings.eval_episodes,
            checkpoint_interval=settings.checkpoint_interval,
            seed=settings.seed,
            resume=getattr(settings, "resume", False),
            overwrite=getattr(settings, "overwrite", False),
        )


class RunFamily:
    """What a family of algorithms tells the run loop (override what differs).

    Attributes:
        tag: prefix of printed lines, e.g. "pretrain".
        unit: the progress counter the budget counts ("gradient_steps" or "env_steps").
    """

    tag: str = "run"
    unit: str = "iterations"
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

    def save_files(self, algo: Any, directory: Path) -> dict[str, Any]:
        """Write the family's own state (e.g. a regenerated data pool) into a checkpoint
        being saved: ``directory`` is its temp dir, renamed into place with RLlib's files,
        so they are saved atomically together. Returns the ``CheckpointMeta`` fields that
        record them (read back by :meth:`restore`)."""
        return {}

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
    """Run ``family`` under ``control``; returns the summary also written to ``result.json``.

    SIGINT (Ctrl-C) or SIGTERM ends the run after the current iteration: a checkpoint and
    a ``result.json`` marked ``"interrupted": true`` are written (no final evaluation:
    ``--resume`` continues the run and evaluates at its end), then :class:`RunInterrupted`
    exits the process with 128 + the signal number (130, 143) and no traceback.
    """
    from rllib_diffusion.checkpoints import resume_checkpoint_meta
    from rllib_diffusion.utils.io import write_json_atomic

    started = time.perf_counter()
    out = Path(control.out_dir).expanduser().resolve()
    ckpt_dir = out / "checkpoint"
    check_out_dir(out, control)
    meta = family.meta()
    saved = resume_checkpoint_meta(
        ckpt_dir,
        control.resume,
        algorithms=(meta.algorithm,),
        tag=family.tag,
        existing_is_error=False,  # check_out_dir decided (refused, or --overwrite)
    )
    if saved is not None:
        family.check_resumable(saved, ckpt_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if control.overwrite:
        clear_run(out)
    try:
        with StopSignals(family.tag) as stop:
            state = _build_and_train(family, control, meta, saved, out, stop)
            # The stopped Algorithm is garbage now: collect it (and close its Ray Data
            # iterators) while Ray is up, not at interpreter exit after ray.shutdown().
            gc.collect()
            summary = _summary(family, control, meta, state, started)
            write_json_atomic(out / "result.json", summary)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no --out
        raise
    if stop.signum is not None:
        print(
            f"[{family.tag}] stopped by {stop.name} after iteration {state['it']}: "
            f"checkpoint {state['checkpoint']}; continue with --resume",
            file=sys.stderr,
            flush=True,
        )
        raise RunInterrupted(stop.signum, summary)
    return summary


#: Files of a run in its output directory.
RUN_FILES = ("checkpoint", "progress.jsonl", "result.json", "tensorboard")


def check_out_dir(out: Path, control: RunControl) -> None:
    """One-line error when ``out`` cannot take this run: a file, or an earlier run's
    output without ``--resume`` (continue it) or ``--overwrite`` (replace it)."""
    from rllib_diffusion.checkpoints import CheckpointError

    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out '{out}' is a file; give a directory (new or a run's).")
    if control.resume and control.overwrite:
        raise CheckpointError(
            "--resume continues the run in --out, --overwrite replaces it: pick one."
        )
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not (control.resume or control.overwrite):
        raise CheckpointError(
            f"--out '{out}' already holds a run ({', '.join(found)}). Pass --resume to continue "
            "that run, --overwrite to replace it, or use another --out."
        )


def clear_run(out: Path) -> None:
    """Remove an earlier run's files from ``out`` (``--overwrite``); other files stay."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _summary(
    family: RunFamily,
    control: RunControl,
    meta: CheckpointMeta,
    state: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """``result.json``: the loop's fields plus the family's summary of the final
    evaluation, or (stopped by a signal) no evaluation and the signal."""
    ckpt, stop = state["checkpoint"], state["stop"]
    base = {
        **meta.to_dict(),
        "checkpoint": ckpt,
        "iterations": state["it"],
        family.unit: state["counter"],
        "train_seconds": state["train_seconds"],
        "total_seconds": time.perf_counter() - started,
        "resumed": state["resumed"],
        **_last_health(state["lines"]),
        INTERRUPTED: False,
        "progress": state["lines"],
        **state["finish"],
    }
    if stop.signum is not None:
        return {
            **base,
            INTERRUPTED: True,
            INTERRUPT_SIGNAL: stop.name,
            "start_evaluation": family.start_evaluation,
            "evaluation": None,
        }
    print(f"[{family.tag}] checkpoint: {ckpt}; evaluating {control.eval_episodes} episodes ...")
    summary = family.summary(base, family.final_evaluation(ckpt, control))
    if stop.signum is not None:  # arrived during the final evaluation (it completed)
        summary.update({INTERRUPTED: True, INTERRUPT_SIGNAL: stop.name})
    return summary


class RunInterrupted(SystemExit):
    """Raised by :func:`run_training` once a run stopped by a signal is saved.

    A ``SystemExit``: uncaught, the process exits with ``code`` = 128 + the signal number
    (130 SIGINT, 143 SIGTERM) without a traceback. ``summary`` is the ``result.json``.
    """

    def __init__(self, signum: int, summary: dict[str, Any]) -> None:
        super().__init__(128 + int(signum))
        self.signal_name = signal.Signals(signum).name
        self.summary = summary


class StopSignals:
    """SIGINT/SIGTERM handlers for the duration of a run (a context manager; the previous
    handlers are restored on exit): the first signal sets ``signum`` (checked between
    iterations), a second one aborts at once (``KeyboardInterrupt``).

    ``ray.init`` installs its own SIGTERM handler (``sys.exit`` wherever the driver is,
    which ends in a C++ stack trace and no ``result.json``): call :meth:`install` again
    after it. Ray's worker processes block SIGINT, so Ctrl-C only reaches the driver.
    Outside the main thread (where Python refuses handlers) nothing is installed.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def install(self) -> None:
        """(Re)install the handlers, remembering the first handlers they replaced."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current != self._handle:
                self._previous.setdefault(sig, current)
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n[{self.tag}] {self.name} received: stopping after this iteration "
            "(checkpoint + result.json); send it again to abort at once",
            file=sys.stderr,
            flush=True,
        )


def _build_and_train(
    family: RunFamily,
    control: RunControl,
    meta: CheckpointMeta,
    saved: CheckpointMeta | None,
    out: Path,
    stop: StopSignals,
) -> dict[str, Any]:
    """Build, restore or start, train, checkpoint and stop the Algorithm; the loop state
    (the Algorithm itself is not kept)."""
    algo = family.build()
    stop.install()  # ray.init (inside build) replaced the SIGTERM handler
    state: dict[str, Any] = {"stop": stop}
    try:
        state.update(_begin(family, control, algo, saved, out))
        state["runner_pids"] = {r["worker_index"]: r["pid"] for r in _runners(algo) or []}
        state["checkpoint"] = _train(family, control, algo, meta, state, out)
    finally:
        if state.get("writer") is not None:
            state["writer"].close()
        algo.stop()
    return state


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
    state["restarts_before"] = int(lines[-1].get(M.ENV_RUNNER_RESTARTS, 0)) if lines else 0
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
            files=lambda directory: family.save_files(algo, directory),
        )

    with open(out / "progress.jsonl", "a") as progress:
        done = state["counter"] >= control.budget
        while not done and state["stop"].signum is None:
            state["stop"].install()  # in case something (a late ray.init) replaced them
            state["it"] = it = state["it"] + 1
            family.before_iteration(algo, state["counter"], control)
            result = algo.train()
            evaluated = bool(control.eval_interval) and it % control.eval_interval == 0
            line = {ITERATION: it, **family.progress_line(algo, result, it, evaluated=evaluated)}
            line.update(runner_health(algo, result, state["restarts_before"]))
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
    state["finish"] = with_runner_states(family.finish(algo), algo, state["runner_pids"])
    state["train_seconds"] = time.perf_counter() - t0
    return checkpoint()


# ------------------------------------------------------------------ EnvRunner health
def runner_health(algo: Any, result: dict[str, Any], restarts_before: int = 0) -> dict[str, int]:
    """Progress-line fields on the remote EnvRunners (none without any): how many are
    healthy and how many restarts RLlib counted, cumulative over resumed runs.

    From RLlib's ``fault_tolerance`` result section (``EnvRunnerGroup``'s
    ``num_healthy_remote_workers()`` / ``num_remote_worker_restarts()``), there for
    every algorithm with an EnvRunnerGroup.
    """
    from ray.rllib.utils.metrics import FAULT_TOLERANCE_STATS

    stats = result.get(FAULT_TOLERANCE_STATS)
    if not stats or _remote_runner_group(algo) is None:
        return {}
    return {
        M.ENV_RUNNERS_HEALTHY: int(stats["num_healthy_workers"]),
        M.ENV_RUNNER_RESTARTS: restarts_before + int(stats["num_remote_worker_restarts"]),
    }


def with_runner_states(
    finish: dict[str, Any], algo: Any, pids_at_start: dict[int, int]
) -> dict[str, Any]:
    """``finish`` with ``placement.env_runners`` listing every remote EnvRunner (node,
    pid, ``state``: "healthy", "restarted" (another process than at the start of this
    run) or "unhealthy" (not answering; no node known)), replacing any healthy-only list."""
    group = _remote_runner_group(algo)
    if group is None:
        return finish
    seen = {r["worker_index"]: r for r in _runners(algo) or []}
    runners = []
    for index in range(1, group.num_remote_env_runners() + 1):  # RLlib's remote ids
        where = seen.get(index)
        if where is None:
            runners.append({"worker_index": index, M.RUNNER_STATE: M.RUNNER_UNHEALTHY})
            continue
        restarted = pids_at_start.get(index, where["pid"]) != where["pid"]
        state = M.RUNNER_RESTARTED if restarted else M.RUNNER_HEALTHY
        runners.append({**where, M.RUNNER_STATE: state})
    placement = {**finish.get("placement", {}), "env_runners": runners}
    return {**finish, "placement": placement}


def _last_health(lines: list[dict[str, Any]]) -> dict[str, int]:
    """The EnvRunner health fields of the last progress line that has them."""
    for line in reversed(lines):
        if M.ENV_RUNNER_RESTARTS in line:
            return {k: line[k] for k in (M.ENV_RUNNERS_HEALTHY, M.ENV_RUNNER_RESTARTS)}
    return {}


def _remote_runner_group(algo: Any) -> Any:
    """The algorithm's EnvRunnerGroup if it has remote EnvRunners, else None."""
    group = getattr(algo, "env_runner_group", None)
    return group if group is not None and group.num_remote_env_runners() > 0 else None


def _runners(algo: Any) -> list[dict[str, Any]] | None:
    """:func:`runner_where` of every healthy remote EnvRunner (None: there are none)."""
    group = _remote_runner_group(algo)
    if group is None:
        return None
    return group.foreach_env_runner(runner_where, local_env_runner=False, timeout_seconds=60)


def runner_where(runner: Any) -> dict[str, Any]:
    """Where an EnvRunner runs (called on it): index, Ray node id, node IP, pid."""
    import ray

    return {
        "worker_index": runner.worker_index,
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }


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
