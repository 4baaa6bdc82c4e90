"""``stealkit serve`` and ``stealkit keys`` as a user types them: a real server process."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from stealkit.cli import main

if importlib.util.find_spec("digit_recognizer") is None:  # its weights; it imports torchvision
    pytest.skip(
        "digit-recognizer-py is not installed (scripts/setup.sh installs it)",
        allow_module_level=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_keys_create_list_usage_revoke(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite'}"
    assert (
        main(
            [
                "keys",
                "--db",
                db,
                "create",
                "--budget",
                "100",
                "--price-per-1k",
                "2",
                "--rate",
                "10",
                "--name",
                "alice",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("sk_") and "shown once" in out.err
    key_id = token.split("_")[1]
    assert main(["keys", "--db", db, "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "alice" in listing and token not in listing
    assert main(["keys", "--db", db, "usage", key_id]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert usage["budget"] == 100 and usage["rate"] == 10.0 and usage["price_per_1k"] == 2.0
    assert main(["keys", "--db", db, "revoke", key_id]) == 0
    capsys.readouterr()
    assert main(["keys", "--db", db, "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "--db", db, "usage", "ffffffff"]) == 2
    assert "no key with id" in capsys.readouterr().err
    assert main(["keys", "--db", db, "create", "--burst", "3"]) == 2
    assert "--burst needs --rate" in capsys.readouterr().err


def test_serve_refuses_a_bad_setting_before_opening_a_port(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite'}"
    assert main(["serve", "--db", db, "--defense", "nosuch"]) == 2
    assert "'nosuch' is not a preset" in capsys.readouterr().err
    assert main(["serve", "--db", "nosuchdb://x"]) == 2
    assert "cannot open the ledger database" in capsys.readouterr().err
    assert main(["serve", "--db", db, "--output", "embedding"]) == 2
    assert "output" in capsys.readouterr().err


def test_a_served_process_answers_meters_and_stops_cleanly(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite'}"
    assert main(["keys", "--db", db, "create", "--budget", "16"]) == 0
    token = capsys.readouterr().out.strip()
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stealkit",
            "serve",
            "--db",
            db,
            "--port",
            str(port),
            "--defense",
            "reverse-sigmoid",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        h = {"Authorization": f"Bearer {token}"}
        info = httpx.get(url + "/v1/info", headers=h).json()
        assert info["input"]["shape"] == [1, 28, 28] and info["num_classes"] == 10
        x = torch.rand(8, 1, 28, 28)
        r = httpx.post(url + "/v1/query", headers=h, json={"inputs": x.tolist()})
        assert r.status_code == 200 and r.json()["n"] == 8
        assert (
            httpx.post(
                url + "/v1/query", headers=h, json={"inputs": torch.rand(9, 1, 28, 28).tolist()}
            ).status_code
            == 402
        )
        assert httpx.get(url + "/docs").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert "digit-recognizer answering probabilities behind ReverseSigmoid" in err
    assert main(["keys", "--db", db, "usage", token.split("_")[1]]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert (usage["inputs_answered"], usage["inputs_refused"]) == (8, 9)
