"""Run the bad-input battery (``tests/bad_inputs.py``) as subprocesses against a checkout
and count the outcomes: ``clear`` (non-zero exit, one error line naming the flag/file,
nothing written), ``unclear`` (fails, but not like that), ``traceback``, ``silent``
(exit 0: a wrong "success") and ``timeout``.

    python scripts/bad_input_battery.py --label after
    git worktree add /tmp/before <commit> && \\
        python scripts/bad_input_battery.py --checkout /tmp/before --label before

Writes ``benchmarks/results/bad_input_battery_<label>.json``. The inputs (a tiny
pretrained checkpoint, damaged files) are made once with this checkout, under --work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bad_inputs import CASES, fill, listing, make_inputs, snapshot  # noqa: E402

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s|\(pid=|\[\d{4}-\d\d-\d\d )")


#: Runs the CLI of the checkout in argv[1], not the editable install's.
BOOT = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
    "getattr(f, '__name__', '')]; sys.path.insert(0, sys.argv.pop(1)); "
    "import rllib_diffusion.cli as c; sys.exit(c.main(sys.argv[1:]))"
)


def pretrained(work: Path) -> Path:
    """A tiny DiffusionBC run (made once) with this checkout's CLI."""
    run = work / "pretrained"
    if not (run / "result.json").exists():
        cmd = [sys.executable, "-m", "rllib_diffusion.cli", "pretrain", "--dataset",
               str(ROOT / "data" / "hopper-medium-v5-small.npz"), "--out", str(run),
               "--gradient-steps", "40", "--steps-per-iteration", "20", "--batch-size", "32",
               "--hidden-dims", "32", "32", "--denoising-steps", "5", "--eval-episodes", "1",
               "--overwrite"]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, env=_env(ROOT, work))
    return run


def _env(checkout: Path, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "OMP_NUM_THREADS": "1",
        "MINARI_DATASETS_PATH": str(work / "minari"),
        "RLLIB_DIFFUSION_CACHE": str(work / "cache"),
    }


def _kill_ray_of(driver_pid: int) -> None:
    """Kill Ray processes that a killed case's driver left behind (their command lines
    name the driver's session ``session_<date>_<driver pid>``; no other Ray is touched)."""
    marker = re.compile(rf"session_[\d_-]+_{driver_pid}\b")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.search(text):
            with contextlib.suppress(OSError):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


def classify(rc: int | None, out: str, err: str, names: str, wrote: bool) -> str:
    if rc is None:
        return "timeout"
    if "Traceback" in out + err:
        return "traceback"
    if rc == 0:
        return "silent"
    ours = [x for x in err.splitlines() if x.strip() and not LOG_LINE.match(x)]
    named = len(ours) == 1 and names.lower() in ours[0].lower()
    return "clear" if named and ours[0].startswith("error:") and not wrote else "unclear"


def run_case(checkout: Path, work: Path, case_id: str, argv, names, values, timeout: float):
    case_dir = work / "cases" / case_id
    values = {**values, "out": str(case_dir / "out")}
    before = snapshot(values)
    cmd = [sys.executable, "-c", BOOT, str(checkout), *fill(argv, values)]
    case_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=case_dir, env=_env(checkout, work), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        # The case is still running (a wrong "success" that trains): stop it and the Ray
        # processes it started (its process group), as a user's Ctrl-C would.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        rc = None
    _kill_ray_of(proc.pid)
    wrote = bool(listing(case_dir / "out")) or snapshot(values) != before
    outcome = classify(rc, out, err, names, wrote)
    last = [x for x in err.splitlines() if x.strip() and not LOG_LINE.match(x)][-3:]
    return {"case": case_id, "outcome": outcome, "exit": rc, "seconds": time.perf_counter() - t0,
            "stderr_tail": last, "wrote_files": wrote}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkout", default=str(ROOT), help="the code to test (a git worktree)")
    p.add_argument("--label", required=True, help="results/bad_input_battery_<label>.json")
    p.add_argument("--work", default="runs/bad_input_battery", help="inputs and case outputs")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per case")
    args = p.parse_args()
    work = Path(args.work).resolve() / args.label
    run = pretrained(Path(args.work).resolve())
    values = make_inputs(work / "inputs", run / "checkpoint", run)
    rows = []
    for case_id, argv, names in CASES:
        row = run_case(Path(args.checkout), work, case_id, argv, names, values, args.timeout)
        rows.append(row)
        print(f"{row['outcome']:>9}  {case_id}  {row['stderr_tail'][-1:]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in
              ("clear", "unclear", "traceback", "silent", "timeout")}  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    result = {"label": args.label, "commit": commit, "cases": len(rows), "counts": counts,
              "rows": rows}  # fmt: skip
    path = ROOT / "benchmarks" / "results" / f"bad_input_battery_{args.label}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    print(json.dumps(counts), f"-> {path}")


if __name__ == "__main__":
    main()
