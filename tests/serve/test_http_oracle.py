"""HttpOracle against a live server: the same answers and counts as in-process, Retry-After
honoured, retries that are charged once, and a cache from which a repeated run buys nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch

from stealkit.defenses import DefendedOracle, build_defense
from stealkit.errors import BudgetExceeded, QueryError
from stealkit.oracle import Ledger, LocalOracle, OutputKind
from stealkit.oracle.http import AnswerCache, HttpOracle, RemoteError
from toys import RowBands

X = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_it_reads_the_api_and_answers_like_the_local_oracle(live_server) -> None:
    live = live_server(defenses=[build_defense("reverse_sigmoid")])
    token = live.key(price_per_1k=2.0)
    oracle = HttpOracle(live.url, api_key=token, ledger=Ledger(budget=100), batch=16)
    assert oracle.input_spec.shape == (1, 8, 8) and oracle.output is OutputKind.PROBABILITIES
    assert oracle.num_classes == 4
    local = DefendedOracle(
        LocalOracle(RowBands(), oracle.input_spec), build_defense("reverse_sigmoid")
    )
    got = oracle.query(X)
    assert torch.equal(got.values, local.query(X).values)
    assert oracle.ledger.spent == 40 == oracle.bought  # three requests of <= 16
    usage = oracle.usage()
    assert usage["inputs_answered"] == 40 and usage["requests_answered"] == 3
    assert oracle.stats()["money_paid"] == pytest.approx(usage["money_spent"])
    with pytest.raises(BudgetExceeded):
        oracle.query(torch.rand(61, 1, 8, 8))  # the local ledger refuses before any request
    assert oracle.usage()["inputs_answered"] == 40


def test_a_repeated_run_buys_nothing_from_a_warm_cache(live_server, tmp_path: Path) -> None:
    live = live_server()
    token = live.key(budget=60)
    cache = tmp_path / "answers.sqlite"
    first = HttpOracle(live.url, api_key=token, cache=cache)
    a = first.query(X[:30])
    first.close()
    again = HttpOracle(live.url, api_key=token, cache=cache, ledger=Ledger(budget=40))
    b = again.query(X)  # 30 known, 10 new
    assert torch.equal(b.values[:30], a.values)
    assert again.bought == 10 and again.cache_hits == 30 and again.ledger.spent == 40
    assert again.usage()["inputs_answered"] == 40
    other_key = live.key()
    third = HttpOracle(live.url, api_key=other_key, cache=cache)
    third.query(X[:5])
    assert third.bought == 5  # the cache is per key: another key pays for its own answers


def test_a_labels_answer_round_trips_through_the_cache(live_server, tmp_path: Path) -> None:
    live = live_server(output="label")
    token = live.key()
    cache = tmp_path / "c.sqlite"
    first = HttpOracle(live.url, api_key=token, cache=cache).query(X[:7])
    again = HttpOracle(live.url, api_key=token, cache=cache)
    second = again.query(X[:7])
    assert again.bought == 0 and second.kind is OutputKind.LABEL
    assert torch.equal(first.values, second.values) and second.values.dtype == torch.long
    assert torch.equal(second.values, RowBands()(X[:7]).argmax(1))


def test_it_waits_out_429s_and_is_charged_exactly(live_server) -> None:
    live = live_server()
    token = live.key(rate=40.0, burst=8.0)
    oracle = HttpOracle(live.url, api_key=token, batch=8)
    oracle.query(X[:32])
    assert oracle.waited_seconds > 0.3  # 24 inputs beyond the burst at 40/s
    assert oracle.usage()["inputs_answered"] == 32 == oracle.bought


class DropFirstAnswer(httpx.HTTPTransport):
    """Forwards requests for real, but loses the first query's answer after the server sent it
    (and charged it): a connection dropped on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/v1/query" and self.dropped == 0:
            response.read()
            self.dropped += 1
            raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_retry_after_a_lost_answer_is_replayed_and_charged_once(live_server) -> None:
    live = live_server(defenses=[build_defense("gaussian_noise", sigma=0.05)])
    token = live.key(budget=100)
    transport = DropFirstAnswer()
    oracle = HttpOracle(live.url, api_key=token, transport=transport, batch=16)
    oracle.query(X[:16])
    assert transport.dropped == 1 and oracle.retried == 1
    assert oracle.bought == 16 and oracle.replayed == 0  # the lost attempt's charge is ours
    assert oracle.usage()["inputs_answered"] == 16  # charged once, not twice


def test_a_batch_bought_but_never_cached_is_replayed_free_on_resume(
    live_server, tmp_path: Path
) -> None:
    """A run killed after the server charged a batch but before the cache kept it: the run
    again sends the same body under the same Idempotency-Key and is not charged again."""
    live = live_server()
    token = live.key(budget=16)
    cache = tmp_path / "c.sqlite"
    first = HttpOracle(live.url, api_key=token, cache=cache, batch=16)

    def die(*_: object) -> None:
        raise KeyboardInterrupt  # killed between the server's answer and the cache

    first.cache.put = die  # type: ignore[method-assign, union-attr]
    with pytest.raises(KeyboardInterrupt):
        first.query(X[:16])
    assert first.usage()["inputs_answered"] == 16 and AnswerCache(cache).count(first.scope) == 0
    again = HttpOracle(live.url, api_key=token, cache=cache, batch=16)
    answer = again.query(X[:16])  # the key's whole quota is spent: only a replay can answer
    assert again.replayed == 16 and again.bought == 0
    assert again.usage()["inputs_answered"] == 16 and len(answer) == 16


def test_server_refusals_become_stealkit_errors(live_server) -> None:
    live = live_server()
    small = HttpOracle(live.url, api_key=live.key(budget=5))
    with pytest.raises(BudgetExceeded, match="quota"):
        small.query(X[:8])
    with pytest.raises(RemoteError, match="401"):
        HttpOracle(live.url, api_key="sk_00000000_" + "A" * 43)
    with pytest.raises(RemoteError, match="cannot reach"):
        HttpOracle("http://127.0.0.1:9", api_key="x", retries=1)
    oracle = HttpOracle(live.url, api_key=live.key())
    with pytest.raises(QueryError, match="shape"):
        oracle.query(torch.rand(2, 1, 8, 9))  # refused locally, from the spec /v1/info gave
    assert oracle.usage()["inputs_answered"] == 0


def test_an_encoder_is_served_as_embeddings(sqlite_url: str) -> None:
    from torch import nn

    from stealkit.oracle import InputSpec
    from stealkit.serve.app import asgi
    from stealkit.serve.ledger import SqlLedger
    from stealkit.serve.live import serving
    from stealkit.serve.service import Service
    from stealkit.victims.base import Victim

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12))
    victim = Victim("enc", net, InputSpec(1, 8, 8), kind="encoder")
    ledger = SqlLedger(sqlite_url)
    token = ledger.create_key()[0]
    service = Service(victim, output="embedding", defenses=[build_defense("embedding_noise", sigma=0.0)])
    with serving(asgi(service, ledger)) as url:
        oracle = HttpOracle(url, api_key=token)
        assert oracle.output is OutputKind.EMBEDDING and oracle.output_dim == 12
        got = oracle.query(X[:5])
        with torch.inference_mode():
            want = net(X[:5])
        assert got.kind is OutputKind.EMBEDDING and torch.allclose(got.values, want, atol=1e-6)
        with pytest.raises(TypeError, match="no classes"):
            _ = oracle.num_classes
