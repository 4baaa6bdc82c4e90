"""Shared tiny fixtures: a parameter-free classifier on 1x8x8 images and its input spec.

Everything here is deterministic and runs in microseconds, so tests stay fast on a shared CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands

# The tests train tiny models; one thread avoids OpenMP hand-offs that cost more than they give,
# and keeps results identical whatever else the machine is doing.
torch.set_num_threads(1)


@pytest.fixture
def spec8() -> InputSpec:
    """Grey 8x8 images in [0, 1]."""
    return InputSpec(channels=1, height=8, width=8)


@pytest.fixture
def toy_model() -> RowBands:
    return RowBands()


@pytest.fixture
def images8() -> Tensor:
    """Six seeded random grey 8x8 images in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    return torch.rand((6, 1, 8, 8), generator=g)


@pytest.fixture
def make_oracle(spec8: InputSpec) -> Callable[..., LocalOracle]:
    """``make_oracle(output=..., budget=..., **kw)``: a LocalOracle around a fresh RowBands."""

    def make(output: str = "probabilities", *, budget: int | None = None, **kw: Any) -> LocalOracle:
        return LocalOracle(RowBands(), spec8, output=output, ledger=Ledger(budget=budget), **kw)

    return make


@pytest.fixture
def temp_attack() -> Any:
    """``temp_attack(name, factory)`` registers an attack type for one test only."""
    from stealkit.attacks import register_attack, unregister_attack

    added: list[str] = []

    def register(name: str, factory: Callable[..., Any]) -> None:
        register_attack(name, factory)
        added.append(name)

    yield register
    for name in added:
        unregister_attack(name)


class CliRun:
    """`python -m stealkit run CONFIG --out OUT --no-progress` in a child process (one thread),
    as a user types it: ``interrupt_after(n)`` sends SIGINT once ``n`` runs have finished,
    ``again()`` runs the same command to the end."""

    def __init__(self, config: Path, out: Path, name: str) -> None:
        import os
        import sys

        self.cmd = [
            sys.executable,
            "-m",
            "stealkit",
            "run",
            str(config),
            "--out",
            str(out),
            "--no-progress",
        ]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.results = out / name / "results.json"

    def read(self) -> dict[str, Any]:
        import json

        return json.loads(self.results.read_text())

    def interrupt_after(
        self, n: int, *, timeout: float = 240, pause: float = 0.0
    ) -> tuple[int, str]:
        """SIGINT ``pause`` seconds after the ``n``-th ok run; the exit code and stderr."""
        import json
        import signal
        import subprocess
        import time

        proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if sum(r["status"] == "ok" for r in self.read()["runs"]) >= n:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail(f"{n} runs did not finish within {timeout} s")
        time.sleep(pause)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err

    def again(self) -> Any:
        import subprocess

        return subprocess.run(self.cmd, capture_output=True, text=True, env=self.env, timeout=300)


@pytest.fixture
def cli_run() -> type[CliRun]:
    return CliRun
