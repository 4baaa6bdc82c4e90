"""The server's ledger in SQL: keys, their quotas and rate limits, and every answered request.

One database (an SQLite file, or PostgreSQL by URL) is the only place counts live, so several
server processes, or machines, share quotas and rate limits exactly. Each decision about a key
(charge, refuse for the quota, refuse for the rate) is taken inside one transaction that holds the
key's row: ``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (one writer at a time) on
SQLite. An answered request is charged in the same transaction that records it, so after a crash
a request is either billed and recorded (with its stored answer, when it carried an
``Idempotency-Key``) or neither.

The rate limit is a token bucket over inputs: a key with ``rate`` r and ``burst`` b holds at most b
tokens, gains r per second, and a batch of n inputs takes n tokens or is refused with the seconds
to wait (``Retry-After``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError as SAArgumentError
from sqlalchemy.exc import IntegrityError, OperationalError

from stealkit.errors import ConfigError, StealkitError
from stealkit.serve import keys as K

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("salt", LargeBinary(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("budget", BigInteger, nullable=True),  # inputs; NULL: no quota
    Column("price_per_1k", Float, nullable=False),
    Column("rate", Float, nullable=True),  # inputs per second; NULL: no rate limit
    Column("burst", Float, nullable=True),
    Column("tokens", Float, nullable=True),
    Column("tokens_at", Float, nullable=True),
    Column("trusted", Boolean, nullable=False),  # the owner's evaluation key: no defences
    Column("spent", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("refused_inputs", BigInteger, nullable=False),
    Column("refused_requests", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

requests = Table(
    "requests",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("key_id", String(16), ForeignKey("api_keys.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("cost", Float, nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("body_hash", String(64), nullable=True),
    Column("response", LargeBinary, nullable=True),  # kept only for idempotent replays
    UniqueConstraint("key_id", "idempotency_key", name="one_answer_per_idempotency_key"),
)


class AuthError(StealkitError):
    """A key is missing, unknown (401) or revoked (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    budget: int | None
    price_per_1k: float
    rate: float | None
    burst: float | None
    trusted: bool
    spent: int
    requests: int
    refused_inputs: int
    refused_requests: int
    created_at: float
    revoked_at: float | None
    tokens: float | None = None
    tokens_at: float | None = None

    @property
    def left(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.spent, 0)

    @property
    def money(self) -> float:
        return self.spent * self.price_per_1k / 1000.0

    def usage(self) -> dict[str, Any]:
        """What ``GET /v1/usage`` and ``stealkit keys usage`` say of this key."""
        return {
            "key_id": self.id,
            "name": self.name,
            "inputs_answered": self.spent,
            "requests_answered": self.requests,
            "inputs_refused": self.refused_inputs,
            "requests_refused": self.refused_requests,
            "budget": self.budget,
            "budget_left": self.left,
            "price_per_1k": self.price_per_1k,
            "money_spent": self.money,
            "rate": self.rate,
            "burst": self.burst,
            "trusted": self.trusted,
            "revoked": self.revoked_at is not None,
        }


def _row(r: Any) -> KeyRow:
    return KeyRow(
        id=r.id,
        name=r.name,
        budget=r.budget,
        price_per_1k=r.price_per_1k,
        rate=r.rate,
        burst=r.burst,
        trusted=bool(r.trusted),
        spent=int(r.spent),
        requests=int(r.requests),
        refused_inputs=int(r.refused_inputs),
        refused_requests=int(r.refused_requests),
        created_at=r.created_at,
        revoked_at=r.revoked_at,
        tokens=r.tokens,
        tokens_at=r.tokens_at,
    )


@dataclass(frozen=True)
class Charged:
    request_id: int
    row: KeyRow  # the key after the charge


@dataclass(frozen=True)
class Replay:
    """A request with this Idempotency-Key and body was answered before: its stored answer."""

    response: bytes


@dataclass(frozen=True)
class Refused:
    """The batch was refused whole and nothing was charged: 402 (quota), 429 (rate), 422."""

    status: int
    code: str
    message: str
    left: int | None = None
    retry_after: float | None = None


Outcome = Charged | Replay | Refused


def bucket(row: KeyRow, now: float) -> float:
    """The tokens a rate-limited key holds at ``now``: what it had, plus ``rate`` per second
    since, capped at ``burst``."""
    assert row.rate is not None and row.burst is not None
    held = row.burst if row.tokens is None or row.tokens_at is None else row.tokens
    since = max(now - (row.tokens_at or now), 0.0)
    return min(row.burst, held + since * row.rate)


def decide(row: KeyRow, n: int, now: float) -> Refused | None:
    """Whether a batch of ``n`` inputs may be answered for ``row`` at ``now`` (None) or why not.

    The quota is checked first (a refused batch would not fit later either), then the rate.
    """
    if row.budget is not None and row.spent + n > row.budget:
        return Refused(
            402,
            "quota_exceeded",
            f"a batch of {n} inputs would exceed this key's quota: {row.spent} of {row.budget} "
            f"answered, {row.left} left; nothing was charged. Send at most {row.left} inputs, or "
            "ask for a larger quota.",
            left=row.left,
        )
    if row.rate is not None and row.burst is not None:
        if n > row.burst:
            return Refused(
                422,
                "batch_over_burst",
                f"a batch of {n} inputs can never pass this key's rate limit of {row.rate:g} "
                f"inputs/s with bursts of {row.burst:g}; send batches of at most "
                f"{int(row.burst)} inputs",
            )
        tokens = bucket(row, now)
        if tokens < n:
            wait = (n - tokens) / row.rate
            return Refused(
                429,
                "rate_limited",
                f"this key may send {row.rate:g} inputs per second (bursts of {row.burst:g}); a "
                f"batch of {n} must wait {wait:.2f} s. Nothing was charged; retry after the "
                "Retry-After header's seconds.",
                retry_after=wait,
            )
    return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # the driver's own BEGIN is off: see _sqlite_begin
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: survives a killed process, not power loss
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock now: decisions serialise


def connect(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///file.db`` or ``postgresql+psycopg://...``) with the
    tables created; ConfigError naming the URL when it cannot be used."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        metadata.create_all(engine)
    except (SAArgumentError, OperationalError, ModuleNotFoundError) as e:
        raise ConfigError(
            f"cannot open the ledger database {url!r}: {str(e).splitlines()[0]}; give --db "
            "sqlite:///path/ledger.sqlite or postgresql+psycopg://user@host:port/db"
        ) from None
    return engine


class SqlLedger:
    """Keys and their counts in one database; every method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = connect(url)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as c:
            yield c

    def _locked(self, c: Connection, key_id: str) -> KeyRow | None:
        q = select(api_keys).where(api_keys.c.id == key_id)
        if self.engine.dialect.name != "sqlite":
            q = q.with_for_update()  # SQLite's BEGIN IMMEDIATE already holds the only write lock
        r = c.execute(q).first()
        return _row(r) if r is not None else None

    # --- keys ------------------------------------------------------------------------------------
    def create_key(
        self,
        *,
        name: str = "",
        budget: int | None = None,
        price_per_1k: float = 0.0,
        rate: float | None = None,
        burst: float | None = None,
        trusted: bool = False,
    ) -> tuple[str, KeyRow]:
        """A new key: its token (shown once, never stored) and its row."""
        if budget is not None and budget < 0:
            raise ConfigError(f"--budget must be >= 0 inputs, got {budget}")
        if not math.isfinite(price_per_1k) or price_per_1k < 0:
            raise ConfigError(f"--price-per-1k must be a finite number >= 0, got {price_per_1k}")
        if rate is not None and (not math.isfinite(rate) or rate <= 0):
            raise ConfigError(f"--rate must be a positive number of inputs per second, got {rate}")
        if burst is not None and rate is None:
            raise ConfigError("--burst needs --rate (a burst is part of a rate limit)")
        if burst is not None and (not math.isfinite(burst) or burst < 1):
            raise ConfigError(f"--burst must be at least 1 input, got {burst}")
        if rate is not None and burst is None:
            burst = max(rate, 1.0)  # one second's worth
        new = K.make_key()
        now = time.time()
        with self._tx() as c:
            c.execute(
                insert(api_keys).values(
                    id=new.id,
                    name=name,
                    salt=new.salt,
                    digest=new.digest,
                    budget=budget,
                    price_per_1k=float(price_per_1k),
                    rate=rate,
                    burst=burst,
                    tokens=burst,
                    tokens_at=now,
                    trusted=trusted,
                    spent=0,
                    requests=0,
                    refused_inputs=0,
                    refused_requests=0,
                    created_at=now,
                    revoked_at=None,
                )
            )
            row = self._locked(c, new.id)
        assert row is not None
        return new.token, row

    def keys(self) -> list[KeyRow]:
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def get(self, key_id: str) -> KeyRow:
        with self.engine.connect() as c:
            r = c.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if r is None:
            raise ConfigError(f"no key with id {key_id!r}; `stealkit keys list` shows the ids")
        return _row(r)

    def revoke(self, key_id: str) -> KeyRow:
        with self._tx() as c:
            row = self._locked(c, key_id)
            if row is None:
                raise ConfigError(f"no key with id {key_id!r}; `stealkit keys list` shows the ids")
            if row.revoked_at is None:
                c.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=time.time())
                )
        return self.get(key_id)

    def authenticate(self, token: str | None) -> KeyRow:
        """The key a request presents; AuthError 401 (missing, malformed, unknown) or 403."""
        if not token:
            raise AuthError(
                401,
                "no API key: send 'Authorization: Bearer sk_...' (or 'X-API-Key: sk_...'); "
                "`stealkit keys create` makes one",
            )
        parts = K.split_token(token)
        if parts is None:
            raise AuthError(401, "this is not a stealkit API key (they read sk_<id>_<secret>)")
        key_id, secret = parts
        with self.engine.connect() as c:
            r = c.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if r is None or not K.verify(secret, r.salt, r.digest):
            raise AuthError(401, "unknown API key")
        row = _row(r)
        if row.revoked_at is not None:
            raise AuthError(403, f"API key {key_id} was revoked; ask the owner for a new one")
        return row

    # --- requests --------------------------------------------------------------------------------
    def stored(self, key_id: str, idempotency_key: str, body_hash: str) -> Outcome | None:
        """The stored answer of an earlier request with this key and Idempotency-Key (Replay),
        a Refused 422 when that request had another body, or None when there was none."""
        with self.engine.connect() as c:
            r = _stored(c, key_id, idempotency_key)
        return None if r is None else _replay(r, idempotency_key, body_hash)

    def refuse(self, key_id: str, n: int) -> None:
        """Count a refused batch of ``n`` inputs (nothing charged)."""
        with self._tx() as c:
            _count_refusal(c, key_id, n)

    def charge(
        self,
        key_id: str,
        n: int,
        *,
        response: bytes,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        now: float | None = None,
    ) -> Outcome:
        """Charge an answered batch of ``n`` inputs and record it, in one transaction.

        The quota and rate are decided again here, under the key's lock: another process may
        have spent them since this one looked. A replay (same Idempotency-Key and body) returns
        the stored answer and charges nothing.

        Several machines sharing one ledger should keep their clocks in sync (NTP): the rate is
        measured on each server's clock.
        """
        try:
            with self._tx() as c:
                row = self._locked(c, key_id)
                # The time is read once the key's row is held, and never goes back: a process
                # that read its clock before waiting for the lock must not rewind the bucket.
                if now is None:
                    now = time.time()
                if row is not None and row.tokens_at is not None:
                    now = max(now, row.tokens_at)
                if row is None or row.revoked_at is not None:
                    return Refused(
                        403, "revoked", f"API key {key_id} was revoked during the request"
                    )
                if idempotency_key is not None:
                    r = _stored(c, key_id, idempotency_key)
                    if r is not None:
                        return _replay(r, idempotency_key, body_hash or "")
                refusal = decide(row, n, now)
                if refusal is not None:
                    _count_refusal(c, key_id, n)
                    return refusal
                values: dict[str, Any] = {
                    "spent": api_keys.c.spent + n,
                    "requests": api_keys.c.requests + 1,
                }
                if row.rate is not None:
                    values.update(tokens=bucket(row, now) - n, tokens_at=now)
                c.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
                rid = c.execute(
                    insert(requests)
                    .values(
                        key_id=key_id,
                        at=now,
                        n=n,
                        cost=n * row.price_per_1k / 1000.0,
                        idempotency_key=idempotency_key,
                        body_hash=body_hash,
                        response=response if idempotency_key is not None else None,
                    )
                    .returning(requests.c.id)
                ).scalar_one()
                after = replace(
                    row,
                    spent=row.spent + n,
                    requests=row.requests + 1,
                    tokens=values.get("tokens", row.tokens),
                    tokens_at=values.get("tokens_at", row.tokens_at),
                )
        except IntegrityError:  # a concurrent retry with the same key committed first
            assert idempotency_key is not None
            again = self.stored(key_id, idempotency_key, body_hash or "")
            if again is None:
                raise
            return again
        return Charged(int(rid), after)

    def billed(self, key_id: str) -> tuple[int, int]:
        """(inputs, requests) recorded for ``key_id`` in the request log: what the key's
        counters must equal."""
        from sqlalchemy import func

        with self.engine.connect() as c:
            r = c.execute(
                select(func.coalesce(func.sum(requests.c.n), 0), func.count()).where(
                    requests.c.key_id == key_id
                )
            ).one()
        return int(r[0]), int(r[1])

    def close(self) -> None:
        self.engine.dispose()


def _count_refusal(c: Connection, key_id: str, n: int) -> None:
    c.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(
            refused_inputs=api_keys.c.refused_inputs + n,
            refused_requests=api_keys.c.refused_requests + 1,
        )
    )


def _stored(c: Connection, key_id: str, idempotency_key: str) -> Any:
    """The (body_hash, response) row of an earlier request with this key and Idempotency-Key."""
    return c.execute(
        select(requests.c.body_hash, requests.c.response).where(
            requests.c.key_id == key_id, requests.c.idempotency_key == idempotency_key
        )
    ).first()


def _replay(r: Any, idempotency_key: str, body_hash: str) -> Outcome:
    if r.body_hash != body_hash:
        return Refused(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {idempotency_key!r} was used before with a different body; use a "
            "new key for a new request",
        )
    return Replay(r.response)
