"""Submit a job to a Ray cluster with the Ray Jobs Python SDK (``JobSubmissionClient``).

The SDK version of ``ray job submit --working-dir . -- python experiments/pipeline.py``:
uploads the working dir (minus ``--excludes``), runs the entrypoint on the head node with
``OMP_NUM_THREADS=1`` and prints the job id. Everything after ``--`` is appended to the
entrypoint::

    python experiments/submit_job.py --wait -- --out /data/runs/main_job \\
        --gradient-steps 500 --finetune-env-steps 2000 --eval-episodes 2
    python experiments/submit_job.py --entrypoint "python experiments/finetune.py" \\
        -- --checkpoint /data/runs/bc/checkpoint --out /data/runs/dppo

Token authentication: the script reads the cluster token the way Ray does
(``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``) and sends it as an ``Authorization: Bearer`` header, so it works
whether or not ``RAY_AUTH_MODE=token`` is set in this shell. A cluster without token auth
ignores the header. Errors (no or wrong token, cluster unreachable, bad address) are one
line on stderr and exit status 2; with ``--wait`` the exit status is 0 only if the job
SUCCEEDED (1 otherwise). See docs/cluster.md, "Submitting jobs".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_ENTRYPOINT = "python experiments/pipeline.py"
#: Left out of the upload, on top of what Ray 2.60 leaves out by itself: the patterns in
#: .gitignore files and its default excludes ``.git``, ``.venv``, ``venv``,
#: ``__pycache__`` (``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES``).
DEFAULT_EXCLUDES = [
    "runs/",
    "outputs/",
    "build/",
    "dist/",
    "benchmarks/work/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
]


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    else:
        extra = []
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` are appended to the entrypoint.",
    )
    p.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"the cluster's dashboard / Jobs API (default: {DEFAULT_ADDRESS})",
    )
    p.add_argument("--working-dir", default=".", help="directory uploaded as the job's working dir")
    p.add_argument(
        "--entrypoint",
        default=DEFAULT_ENTRYPOINT,
        help=f"command run on the head node, in the working dir (default: {DEFAULT_ENTRYPOINT})",
    )
    p.add_argument(
        "--excludes",
        nargs="*",
        default=DEFAULT_EXCLUDES,
        metavar="PATTERN",
        help="gitignore-style patterns left out of the upload (default: %(default)s)",
    )
    p.add_argument("--submission-id", default=None, help="job id (default: Ray picks one)")
    p.add_argument(
        "--entrypoint-num-gpus",
        type=float,
        default=None,
        help="GPUs reserved for the entrypoint (it then runs on a node that has them)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's logs and exit with its status (0: SUCCEEDED, 1: otherwise)",
    )
    return p.parse_args(argv), extra


def find_token() -> tuple[str | None, str]:
    """The cluster token and where it came from, in Ray's order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"RAY_AUTH_TOKEN_PATH={path}: no such file")
        return p.read_text().strip() or None, str(p)
    p = Path.home() / ".ray" / "auth_token"
    if p.is_file():
        return p.read_text().strip() or None, str(p)
    return None, "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


def connect(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        # Without a scheme Ray would take it for a GCS address and wait 30 s for it.
        raise UserError(f"--address {address}: give the dashboard's URL, e.g. {DEFAULT_ADDRESS}")
    token, source = find_token()
    if token is None and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        raise UserError(f"RAY_AUTH_MODE=token but there is no token in {source}")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        # Checks the connection and the cluster's Ray version (GET /api/version).
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as e:
        reason = str(e).splitlines()[0]
        if token is None:
            raise UserError(
                f"{address} requires a token ({reason}) and there is none in {source}"
            ) from None
        raise UserError(f"{address} refused the token from {source}: {reason}") from None


def submit(client, args: argparse.Namespace, extra: list[str]) -> str:
    working_dir = Path(args.working_dir)
    if not working_dir.is_dir():
        raise UserError(f"--working-dir {args.working_dir}: not a directory")
    entrypoint = args.entrypoint
    if extra:
        entrypoint += " " + shlex.join(extra)
    runtime_env = {
        "working_dir": str(working_dir),
        "env_vars": {"OMP_NUM_THREADS": "1"},
        "excludes": list(args.excludes),
    }
    kwargs = {}
    if args.entrypoint_num_gpus is not None:
        kwargs["entrypoint_num_gpus"] = args.entrypoint_num_gpus
    return client.submit_job(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        submission_id=args.submission_id,
        **kwargs,
    )


async def _tail(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def wait(client, job_id: str) -> int:
    from ray.job_submission import JobStatus

    asyncio.run(_tail(client, job_id))
    info = client.get_job_info(job_id)
    # A failed job's message repeats the end of its logs: keep the first clause.
    why = (info.message or "").split(", last available logs")[0].splitlines()
    print(f"job '{job_id}': {info.status.value}" + (f" ({why[0]})" if why else ""))
    return 0 if info.status == JobStatus.SUCCEEDED else 1


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    address = args.address.rstrip("/")
    try:
        from ray.exceptions import AuthenticationError

        client = connect(address)
        job_id = submit(client, args, extra)
        print(f"submitted job '{job_id}' to {address}", flush=True)
        if not args.wait:
            print(
                f"follow it with: RAY_AUTH_MODE=token ray job logs -f --address {address}"
                f" {job_id}   (also: ray job status / ray job stop)",
                flush=True,
            )
        return wait(client, job_id) if args.wait else 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
    except AuthenticationError as e:
        print(f"error: {address}: {str(e).splitlines()[0]}", file=sys.stderr)
    except ConnectionError as e:  # also the SDK's "Failed to connect to Ray at address"
        print(f"error: cannot reach the Ray dashboard at {address}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; the job keeps running (`ray job stop` stops it)", file=sys.stderr)
        return 130
    except Exception as e:  # Ray reports bad addresses/versions as ValueError/RuntimeError
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
