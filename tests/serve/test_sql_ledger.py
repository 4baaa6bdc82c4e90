"""The SQL ledger, on SQLite and on PostgreSQL: keys as salted hashes, quotas that refuse whole
batches and charge nothing, a token-bucket rate, idempotent charges, and exact counts when many
threads charge one key at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stealkit.errors import ConfigError
from stealkit.serve import keys as K
from stealkit.serve.ledger import (
    AuthError,
    Charged,
    KeyRow,
    Refused,
    Replay,
    SqlLedger,
    bucket,
    decide,
)


def test_a_token_is_shown_once_and_only_its_salted_hash_is_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    ledger = SqlLedger(url)
    token, row = ledger.create_key(name="alice")
    key_id, secret = K.split_token(token) or ("", "")
    assert key_id == row.id and len(secret) == 43
    ledger.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in stored and token.encode() not in stored
    again = SqlLedger(url)
    assert again.authenticate(token).id == row.id
    other_token, other = again.create_key()
    assert other.id != row.id  # each key its own salt and id
    with pytest.raises(AuthError) as e:
        again.authenticate(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert e.value.status == 401


def test_verify_compares_digests_of_the_same_salt() -> None:
    new = K.make_key()
    _, secret = K.split_token(new.token) or ("", "")
    assert K.verify(secret, new.salt, new.digest)
    assert not K.verify(secret, b"x" * 16, new.digest)  # another salt, another digest
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not K.verify(wrong, new.salt, new.digest)
    assert K.split_token("sk_zz_short") is None and K.split_token("Bearer abc") is None


def test_missing_unknown_and_revoked_keys(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    token, row = ledger.create_key()
    for bad in (None, "", "not-a-key", "sk_00000000_" + "A" * 43):
        with pytest.raises(AuthError) as e:
            ledger.authenticate(bad)
        assert e.value.status == 401
    ledger.revoke(row.id)
    with pytest.raises(AuthError) as e:
        ledger.authenticate(token)
    assert e.value.status == 403 and row.id in str(e.value)
    with pytest.raises(ConfigError, match="no key with id"):
        ledger.revoke("ffffffff")


def test_a_batch_over_the_quota_is_refused_whole_and_charges_nothing(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    _, row = ledger.create_key(budget=10, price_per_1k=2.0)
    assert isinstance(ledger.charge(row.id, 6, response=b"a"), Charged)
    out = ledger.charge(row.id, 5, response=b"b")
    assert isinstance(out, Refused) and out.status == 402 and out.left == 4
    after = ledger.get(row.id)
    assert (after.spent, after.refused_inputs, after.refused_requests) == (6, 5, 1)
    assert after.money == pytest.approx(6 * 2.0 / 1000)
    assert isinstance(ledger.charge(row.id, 4, response=b"c"), Charged)  # exactly to the quota
    assert ledger.get(row.id).left == 0
    assert ledger.billed(row.id) == (10, 2)


def test_an_idempotent_retry_replays_the_stored_answer_charged_once(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    _, row = ledger.create_key(budget=100)
    first = ledger.charge(row.id, 8, response=b"answer", idempotency_key="k1", body_hash="h")
    again = ledger.charge(row.id, 8, response=b"other", idempotency_key="k1", body_hash="h")
    assert isinstance(first, Charged) and isinstance(again, Replay)
    assert again.response == b"answer"
    assert ledger.get(row.id).spent == 8
    assert isinstance(ledger.stored(row.id, "k1", "h"), Replay)
    reused = ledger.charge(row.id, 8, response=b"x", idempotency_key="k1", body_hash="other")
    assert isinstance(reused, Refused) and reused.status == 422
    assert ledger.stored(row.id, "k2", "h") is None
    assert ledger.get(row.id).spent == 8


def _row(**kw: object) -> KeyRow:
    base: dict[str, object] = dict(
        id="k",
        name="",
        budget=None,
        price_per_1k=0.0,
        rate=None,
        burst=None,
        trusted=False,
        spent=0,
        requests=0,
        refused_inputs=0,
        refused_requests=0,
        created_at=0.0,
        revoked_at=None,
    )
    base.update(kw)
    return KeyRow(**base)  # type: ignore[arg-type]


def test_the_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    row = _row(rate=10.0, burst=20.0, tokens=4.0, tokens_at=100.0)
    assert bucket(row, 100.0) == 4.0
    assert bucket(row, 101.0) == pytest.approx(14.0)
    assert bucket(row, 200.0) == 20.0  # capped
    late = decide(row, 8, 100.0)
    assert late is not None and late.status == 429 and late.retry_after == pytest.approx(0.4)
    assert decide(row, 8, 100.5) is None
    never = decide(row, 21, 500.0)
    assert never is not None and never.status == 422 and "at most 20" in never.message


def test_rate_limited_charges_spend_tokens_in_the_database(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    _, row = ledger.create_key(rate=2.0, burst=10.0)
    t0 = row.created_at + 1000.0  # a bucket full since long
    assert isinstance(ledger.charge(row.id, 10, response=b"", now=t0), Charged)
    refused = ledger.charge(row.id, 4, response=b"", now=t0 + 1.0)  # 2 tokens back
    assert isinstance(refused, Refused) and refused.status == 429
    assert refused.retry_after == pytest.approx(1.0)
    assert isinstance(ledger.charge(row.id, 4, response=b"", now=t0 + 2.0), Charged)
    assert ledger.get(row.id).spent == 14


def test_threads_charging_one_key_never_cross_its_quota(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    _, row = ledger.create_key(budget=100)
    charged: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(15):
            out = ledger.charge(row.id, 3, response=b"", idempotency_key=f"{i}-{j}", body_hash="h")
            if isinstance(out, Charged):
                with lock:
                    charged.append(3)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = ledger.get(row.id)
    assert sum(charged) == after.spent == 99  # 33 batches of 3 fit in 100; no over-spend
    assert after.refused_requests == 6 * 15 - 33
    assert ledger.billed(row.id) == (99, 33)


def test_key_settings_are_checked(sqlite_url: str) -> None:
    ledger = SqlLedger(sqlite_url)
    for bad, match in (
        ({"budget": -1}, "--budget"),
        ({"price_per_1k": float("nan")}, "--price-per-1k"),
        ({"rate": 0.0}, "--rate"),
        ({"burst": 5.0}, "--burst needs --rate"),
    ):
        with pytest.raises(ConfigError, match=match):
            ledger.create_key(**bad)  # type: ignore[arg-type]


def test_a_bad_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot open the ledger database"):
        SqlLedger("nosuchdb://x")


def test_a_clock_read_before_the_lock_never_rewinds_the_bucket(ledger_url: str) -> None:
    """Four server processes read their clocks, then wait for the key's lock: a late writer with
    an earlier time must not credit the same seconds twice."""
    ledger = SqlLedger(ledger_url)
    _, row = ledger.create_key(rate=1.0, burst=10.0)
    t = row.created_at + 1000.0
    assert isinstance(ledger.charge(row.id, 10, response=b"", now=t), Charged)
    assert isinstance(ledger.charge(row.id, 2, response=b"", now=t + 5), Charged)  # 5 back
    assert isinstance(ledger.charge(row.id, 3, response=b"", now=t + 3), Charged)  # stale clock
    late = ledger.charge(row.id, 2, response=b"", now=t + 5)
    assert isinstance(late, Refused) and late.status == 429  # 10 + 1/s x 5 s = 15, all spent
    assert ledger.get(row.id).spent == 15
