"""The diffusion core must stay importable without Ray (ARCHITECTURE principle 2)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_does_not_pull_in_ray():
    code = (
        "import sys, rllib_diffusion.diffusion, rllib_diffusion.diffusion.networks; "
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_check_would_catch_ray():
    # Guard against a vacuous check: importing ray in the same way is detected.
    code = "import sys, ray; assert 'ray' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
