"""The test suite's own rules: ruff passes, and every test file has one tier."""

import subprocess
import sys
from pathlib import Path

from conftest import SLOWEST_FIRST, TIERS

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), f"ruff is not installed beside {sys.executable}: pip install -e '.[dev]'"
    proc = subprocess.run([str(ruff), "check", "--no-cache", "fedcl", "tests", "simulations", "benchmarks", "scripts"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_every_test_file_has_one_tier():
    files = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert files - set(TIERS) == set(), "add these files to TIERS in tests/conftest.py"
    assert set(TIERS) - files == set(), "TIERS names files that do not exist"
    assert set(SLOWEST_FIRST) <= files, "SLOWEST_FIRST in tests/conftest.py names files that do not exist"
