"""`rllib-diffusion online` as a script (also for `ray job submit -- python experiments/online.py ...`).

Run with --help for the flags; they are the CLI's, defined once in rllib_diffusion.cli.
"""

from __future__ import annotations

import sys

from rllib_diffusion.cli import main

if __name__ == "__main__":
    sys.exit(main(["online", *sys.argv[1:]]))
