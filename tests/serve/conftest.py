"""A real uvicorn server on an ephemeral loopback port, in front of the toy RowBands victim, with
its ledger on SQLite and (where this machine has PostgreSQL) on a real PostgreSQL server.

PostgreSQL comes from ``$STEALKIT_TEST_POSTGRES_URL`` (``.ci/run`` starts a throw-away cluster
and sets it) or, failing that, from ``scripts/postgres.sh`` started here; where neither works the
PostgreSQL cases skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stealkit.defenses import Defense
from stealkit.oracle import InputSpec
from stealkit.serve.app import asgi
from stealkit.serve.ledger import SqlLedger
from stealkit.serve.live import serving
from stealkit.serve.service import Limits, Service
from stealkit.victims.base import Victim
from toys import RowBands

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server for the whole session, or a skip naming why there is none."""
    url = os.environ.get("STEALKIT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    where = tmp_path_factory.mktemp("pg") / "cluster"
    try:
        started = subprocess.run(
            ["bash", str(ROOT / "scripts/postgres.sh"), "start", str(where)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"PostgreSQL ledger tests need a server; scripts/postgres.sh failed: {e}")
    if started.returncode != 0:
        pytest.skip(
            "PostgreSQL ledger tests need a server; scripts/postgres.sh could not start one: "
            + (started.stderr.strip().splitlines() or ["no message"])[-1]
        )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", str(where)], timeout=60)


def fresh_postgres_db(server_url: str) -> str:
    """A new empty database on the server, so each test sees only its own keys."""
    from sqlalchemy import create_engine, text

    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger database: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return fresh_postgres_db(request.getfixturevalue("postgres_server"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def toy_victim() -> Victim:
    return Victim("rowbands", RowBands(), InputSpec(channels=1, height=8, width=8))


@dataclass
class Live:
    url: str
    ledger: SqlLedger
    service: Service

    def key(self, **kw: Any) -> str:
        return self.ledger.create_key(**kw)[0]

    def headers(self, token: str, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **more}


@pytest.fixture
def live_server(sqlite_url: str) -> Iterator[Callable[..., Live]]:
    """``live_server(output=..., defenses=[...], limits=..., url=...)``: RowBands served for real."""
    stack: list[Any] = []

    def start(
        *,
        output: str = "probabilities",
        defenses: list[Defense] | None = None,
        limits: Limits | None = None,
        url: str | None = None,
    ) -> Live:
        service = Service(toy_victim(), output=output, defenses=defenses, limits=limits)
        ledger = SqlLedger(url or sqlite_url)
        ctx = serving(asgi(service, ledger))
        base = ctx.__enter__()
        stack.append((ctx, ledger))
        return Live(base, ledger, service)

    yield start
    for ctx, ledger in reversed(stack):
        ctx.__exit__(None, None, None)
        ledger.close()
