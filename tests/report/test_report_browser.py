"""The report in a real browser: headless Chromium shows every run's row, decodes every plot, and
logs no error to its console.

Chromium is driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in NUL, read from file descriptor 3 and written to 4), so the test needs only the
standard library and Debian's ``chromium``, and opens no port. ``scripts/install-chromium.sh``
installs Chromium; as root with apt-get this test runs it, elsewhere it skips without Chromium.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stealkit.report import write_report

ROOT = Path(__file__).resolve().parents[2]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROBE = "stealkit-console-probe"  # logged on purpose, to show that console errors are caught

ATTACKS = ("knockoff-random", "copycat")
DEFENSES = ("none", "top1", "rounding")
BUDGETS = (1000, 5000)
SEEDS = (0, 1)
DATA_FREE = "dfme"  # a data-free attack, with within-run curves


def _find_chromium() -> str | None:
    candidates = [
        os.environ.get("STEALKIT_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's executable; installed here when missing and this is root with apt-get."""
    found = _find_chromium()
    if found is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(
                "Chromium is not installed (/usr/bin/chromium) and cannot be installed here (not "
                "root, or no apt-get): run 'sudo apt-get install chromium' or, as root, "
                "scripts/install-chromium.sh"
            )
        setup = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        found = _find_chromium()
        if found is None:
            pytest.fail(f"scripts/install-chromium.sh did not install Chromium:\n{setup.stderr}")
    return found


class DevTools:
    """A headless Chromium and its DevTools protocol over a pipe; events are kept in ``events``."""

    def __init__(self, executable: str, profile: Path, log: Path, *, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id, self._buffer = 0, b""
        to_chromium, self._write = os.pipe()
        self._read, from_chromium = os.pipe()

        def wire() -> None:  # in the child: read commands on fd 3, write answers on fd 4
            commands, answers = (
                fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chromium, from_chromium)
            )
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
                + ["about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=wire,  # fine here: pytest runs this single-threaded
                close_fds=False,  # fds 3 and 4 must survive; Python's own fds are not inherited
            )
        os.close(to_chromium)
        os.close(from_chromium)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and wait for its answer; DevTools errors raise."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        """The first event ``method`` of ``session``, received already or within the timeout."""
        deadline = time.monotonic() + self.timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            self.events.append(self._receive(deadline, method))

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium did not answer {waiting_for} in {self.timeout} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium closed its DevTools pipe (exit {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=5)
        except (OSError, RuntimeError, TimeoutError, EOFError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Errors the page's console shows: console.error/assert, uncaught exceptions, and browser
    log entries of level error (failed loads, refused resources, CSP and security messages)."""
    errors = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "assert",
        ):
            errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(str(details.get("exception", {}).get("description", details.get("text"))))
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
    return errors


_INSPECT = """(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(i => i.decode().then(() => true, () => false)));
  // Rendered and not hidden (display, visibility, or a closed <details>), with a size.
  const shown = el => el.checkVisibility({visibilityProperty: true, opacityProperty: true})
      && el.getBoundingClientRect().width > 0 && el.getBoundingClientRect().height > 0;
  const rows = selector => [...document.querySelectorAll(selector)].filter(shown)
      .map(tr => [...tr.cells].map(td => td.innerText.trim()));
  return {
    title: document.title,
    runs: rows("#runs tbody tr"),
    failed: rows("#failed > table:first-of-type tbody tr"),
    transfer: rows("#transfer tbody tr"),
    images: images.map((img, i) => ({alt: img.alt, src: img.src.slice(0, 22), shown: shown(img),
                                     width: img.naturalWidth, height: img.naturalHeight,
                                     decoded: decoded[i]})),
  };
})()"""


def render_in_chromium(
    executable: str, page: Path, scratch: Path
) -> tuple[dict[str, Any], list[str]]:
    """Open ``page`` in headless Chromium: what ``_INSPECT`` finds, and the console's errors."""
    browser = DevTools(executable, scratch / "profile", scratch / "chromium.log")
    try:
        targets = browser.call("Target.getTargets")["targetInfos"]
        tab = next(t["targetId"] for t in targets if t["type"] == "page")
        session = browser.call("Target.attachToTarget", {"targetId": tab, "flatten": True})
        sid = session["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable", session=sid)
        browser.call("Page.navigate", {"url": page.as_uri()}, session=sid)
        browser.wait_for("Page.loadEventFired", sid)
        found = browser.call(
            "Runtime.evaluate",
            {"expression": _INSPECT, "awaitPromise": True, "returnByValue": True},
            session=sid,
        )
        assert "exceptionDetails" not in found, found["exceptionDetails"]
        browser.call("Runtime.evaluate", {"expression": f"console.error('{PROBE}')"}, session=sid)
        browser.wait_for("Runtime.consoleAPICalled", sid)
        errors = _console_errors(browser.events)
    finally:
        browser.close()
    assert PROBE in errors, f"the console probe was not seen, so errors would go unseen: {errors}"
    return found["result"]["value"], [e for e in errors if e != PROBE]


def _run(attack: str, defense: str, budget: int, seed: int) -> dict[str, Any]:
    agreement = 0.6 + 0.05 * (*ATTACKS, DATA_FREE).index(attack) - 0.1 * DEFENSES.index(defense)
    agreement += (0.1 if budget == 5000 else 0.0) + 0.01 * seed
    run: dict[str, Any] = {
        "attack": attack,
        "defense": defense,
        "budget": budget,
        "seed": seed,
        "status": "ok",
        "error": None,
        "attack_repr": f"{attack}(lr=0.001)",
        "defense_repr": f"{defense}()",
        "surrogate": "cnn3",
        "metrics": {"agreement": agreement, "accuracy": agreement - 0.02, "relative_accuracy": 0.9},
        "ledger": {"budget": budget, "spent": budget, "cost": budget / 1000, "price_per_1k": 1.0},
        "wall_seconds": 3.0,
    }
    if attack == DATA_FREE:
        run["curve"] = [
            {"queries": q, "agreement": agreement * q / budget, "accuracy": agreement * q / budget}
            for q in range(budget // 4, budget + 1, budget // 4)
        ]
    else:
        run["transfer"] = [
            {"method": m, "targeted": t, "success": 0.3 + 0.1 * t, "white_box_success": 0.9}
            for m in ("fgsm", "pgd")
            for t in (False, True)
        ]
    return run


def _results() -> dict[str, Any]:
    """Every kind of content: two pool attacks x three defences x two budgets x two seeds with
    transfer attacks, a data-free attack with curves, a failed and an interrupted run."""
    runs = [_run(a, d, b, s) for a in ATTACKS for d in DEFENSES for b in BUDGETS for s in SEEDS]
    runs += [_run(DATA_FREE, "none", b, 0) for b in BUDGETS]
    broken = {"attack": "copycat", "defense": "none", "budget": 20000, "seed": 0}
    runs.append(broken | {"status": "failed", "error": "RuntimeError: CUDA out of memory"})
    runs.append(
        broken
        | {"seed": 1, "status": "interrupted", "error": "interrupted by the user (SIGINT)"}
        | {"ledger": {"spent": 4096, "cost": 4.1}}
    )
    defenses = [
        {"name": d, "repr": f"{d}()", "victim_accuracy": 0.99 - 0.02 * i, "mean_l1_change": 0.1 * i}
        for i, d in enumerate(DEFENSES)
    ]
    planned = [{k: r[k] for k in ("attack", "defense", "budget", "seed")} for r in runs]
    return {
        "name": "browser-check",
        "created": "2026-11-23T18:00:00",
        "complete": False,
        "planned": planned + [broken | {"seed": 2}],
        "invocations": [
            {"started": "2026-11-23T18:00:00", "finished": "2026-11-23T19:00:00"}
            | {"status": "interrupted", "ran": len(runs), "skipped": 0, "queries_bought": 120_000}
        ],
        "victim": {"name": "digit-recognizer", "test_accuracy": 0.99, "eval_set": "mnist-5k:all"},
        "defenses": defenses,
        "runs": runs,
        "transfer_baseline": {"arch": "cnn3", "dataset": "emnist", "transfer": runs[0]["transfer"]},
        "config": {"name": "browser-check"},
    }


@pytest.fixture(scope="module")
def rendered(
    chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], list[str]]]:
    scratch = tmp_path_factory.mktemp("browser")
    page = write_report(_results(), scratch / "report.html")
    yield render_in_chromium(chromium, page, scratch)


def _key(run: dict[str, Any]) -> list[str]:
    return [run["attack"], run["defense"], f"{run['budget']:,}", str(run["seed"])]


def test_every_run_has_a_visible_row(rendered: tuple[dict[str, Any], list[str]]) -> None:
    found, _ = rendered
    runs = _results()["runs"]
    ok = sorted(_key(r) for r in runs if r["status"] == "ok")
    assert sorted(row[:4] for row in found["runs"]) == ok and len(ok) == 26
    assert sorted(row[:5] for row in found["failed"]) == [
        _key(r) + [r["status"]] for r in runs if r["status"] != "ok"
    ]
    with_transfer = sorted(_key(r) for r in runs if r.get("transfer"))
    assert sorted(row[:4] for row in found["transfer"][:-1]) == with_transfer
    assert found["transfer"][-1][0] == "baseline (cnn3 on emnist)"
    assert found["title"] == "stealkit report: browser-check"


def test_every_plot_is_decoded(rendered: tuple[dict[str, Any], list[str]]) -> None:
    found, _ = rendered
    images = found["images"]
    assert [i["alt"] for i in images] == [
        "Fidelity vs budget",
        "Convergence",
        "Protection vs utility",
    ]
    for image in images:
        assert image["src"] == "data:image/png;base64,", image
        assert image["decoded"] and image["width"] > 0 and image["height"] > 0, image
        assert image["shown"], image


def test_console_shows_no_error(rendered: tuple[dict[str, Any], list[str]]) -> None:
    _, errors = rendered
    assert errors == []
