"""`make run PY=...` and `make test PY=...` set up the interpreter that then runs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["run", "test", "bench"])
def test_the_setup_script_gets_the_makefiles_interpreter(target: str) -> None:
    out = subprocess.run(
        ["make", "-n", target, "PY=/opt/other/python3.11"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    setup = [ln for ln in out if "scripts/setup.sh" in ln]
    assert setup and all("PYTHON=/opt/other/python3.11" in ln for ln in setup)
    assert any(ln.startswith("/opt/other/python3.11 -m") for ln in out)
