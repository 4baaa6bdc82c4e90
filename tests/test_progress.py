"""Progress inside a run: plain lines about every 10% off a terminal, nothing outside
``reporting``; `-v` works after the subcommand without matplotlib's debug lines."""

from __future__ import annotations

import io
import logging
import re

import torch

from stealkit.cli import main
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from stealkit.progress import ledger_tracker, reporting, track
from stealkit.train.loop import fit


def _lines(text: str, what: str) -> list[int]:
    return [int(m.group(1).replace(",", "")) for m in re.finditer(rf"{what}: ([\d,]+)/", text)]


def test_training_steps_are_reported_every_tenth_off_a_terminal() -> None:
    out = io.StringIO()
    model = torch.nn.Linear(4, 2)
    x, y = torch.rand(64, 4), torch.randint(2, (64,))
    with reporting(tty=False, stream=out):
        fit(
            model,
            x,
            y,
            loss_fn=torch.nn.functional.cross_entropy,
            steps=200,
            batch_size=16,
            device="cpu",
            progress="fitting",
        )
    done = _lines(out.getvalue(), "fitting")
    assert done == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]


def test_nothing_is_printed_outside_reporting(capsys) -> None:
    bar = track("work", 100)
    bar.update(100)
    bar.close()
    assert capsys.readouterr().err == ""


def test_queries_bought_are_tracked_from_the_ledger() -> None:
    out = io.StringIO()
    spec = InputSpec(channels=1, height=8, width=8)
    with reporting(tty=False, stream=out):
        bar, on_charge = ledger_tracker("queries", 100)
        oracle = LocalOracle(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)),
            spec,
            ledger=Ledger(budget=100, on_charge=on_charge),
        )
        for _ in range(4):
            oracle.query(torch.rand(25, 1, 8, 8))
        bar.close()
    assert _lines(out.getvalue(), "queries") == [25, 50, 75, 100]


def test_a_tty_gets_bars_not_lines() -> None:
    out = io.StringIO()
    with reporting(tty=True, stream=out):
        bar = track("bars", 10, unit="step")
        bar.update(10)
        bar.close()
    text = out.getvalue()
    assert "bars:" in text and "0/10 [" in text and "step/s" in text  # a tqdm bar
    assert "%, " not in text  # not the plain lines


def test_verbose_after_the_subcommand_shows_stealkits_debug_only(capsys) -> None:
    assert main(["list", "-v"]) == 0
    assert logging.getLogger("stealkit").level == logging.DEBUG
    assert logging.getLogger("matplotlib").getEffectiveLevel() > logging.DEBUG
    assert main(["-v", "list"]) == 0
    assert main(["list"]) == 0
    assert logging.getLogger("stealkit").level == logging.WARNING
