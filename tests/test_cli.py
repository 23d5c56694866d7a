"""End to end through the real command line (a subprocess, as a user runs it)."""

import os
import subprocess
import sys



ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def fedcl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedcl", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)


def test_list():
    proc = fedcl("list")
    assert proc.returncode == 0 and "efficientnet_lite0" in proc.stdout and "residual_conv" in proc.stdout
