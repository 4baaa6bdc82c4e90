"""The HTTP API against a real uvicorn server: keys (401/403), quotas (402, nothing charged),
rates (429 with Retry-After), idempotent replays, and a JSON 4xx naming the field for every kind
of bad input, with the server still answering afterwards."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from torch import Tensor

from stealkit.defenses import Defense, build_defense
from stealkit.errors import QueryRefused
from stealkit.oracle import OutputKind, Response
from stealkit.oracle.wire import encode_npy, encode_png
from stealkit.serve.service import Limits

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _query(live, token: str, body: dict | None = None, **headers: str) -> httpx.Response:
    body = body if body is not None else {"inputs": X.tolist()}
    return httpx.post(live.url + "/v1/query", json=body, headers=live.headers(token, **headers))


def _usage(live, token: str) -> dict:
    return httpx.get(live.url + "/v1/usage", headers=live.headers(token)).json()


def test_info_says_what_the_api_takes_gives_and_costs(live_server) -> None:
    live = live_server(defenses=[build_defense("reverse_sigmoid")])
    token = live.key(budget=50, price_per_1k=3.0, rate=100.0)
    info = httpx.get(live.url + "/v1/info", headers=live.headers(token)).json()
    assert info["input"]["shape"] == [1, 8, 8] and info["output"] == "probabilities"
    assert info["num_classes"] == 4 and info["embedding_dim"] is None
    assert info["price_per_1k"] == 3.0
    assert info["limits"]["budget_left"] == 50 and info["limits"]["rate"] == 100.0
    assert info["defenses"] == ["ReverseSigmoid(beta=0.7, gamma=0.4)"]
    assert httpx.get(live.url + "/healthz").json() == {"status": "ok"}
    schema = httpx.get(live.url + "/openapi.json").json()
    assert {"/v1/query", "/v1/info", "/v1/usage", "/healthz"} <= set(schema["paths"])


def test_answers_match_the_victim_through_the_same_defence(live_server) -> None:
    live = live_server(defenses=[build_defense("reverse_sigmoid")])
    token = live.key()
    r = _query(live, token, {"npy": encode_npy(X.numpy()), "encoding": "npy"})
    assert r.status_code == 200, r.text
    got = np.load(io.BytesIO(base64.b64decode(r.json()["npy"])))
    from stealkit.defenses import DefendedOracle
    from stealkit.oracle import LocalOracle
    from toys import RowBands

    local = DefendedOracle(
        LocalOracle(RowBands(), live.service.spec), build_defense("reverse_sigmoid")
    )
    assert np.array_equal(got, local.query(X).values.numpy())  # bit for bit
    as_json = _query(live, token).json()
    assert np.allclose(np.array(as_json["values"]), got, atol=1e-6)
    labels = _query(live, token, {"inputs": X.tolist(), "output": "label"}).json()
    assert labels["output"] == "label" and labels["values"] == got.argmax(1).tolist()
    png = _query(live, token, {"png": encode_png(X)})
    assert png.status_code == 200 and png.json()["n"] == 8
    assert _usage(live, token)["inputs_answered"] == 32


def test_missing_unknown_and_revoked_keys_get_401_and_403(live_server) -> None:
    live = live_server()
    token = live.key()
    assert httpx.post(live.url + "/v1/query", json={"inputs": X.tolist()}).status_code == 401
    unknown = _query(live, "sk_00000000_" + "A" * 43)
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "unauthorized"
    assert httpx.get(live.url + "/v1/usage", headers={"X-API-Key": token}).status_code == 200
    live.ledger.revoke(token.split("_")[1])
    revoked = _query(live, token)
    assert revoked.status_code == 403 and "revoked" in revoked.json()["error"]["message"]


def test_a_batch_over_the_quota_gets_402_and_is_not_charged(live_server) -> None:
    live = live_server()
    token = live.key(budget=12)
    assert _query(live, token).status_code == 200
    r = _query(live, token)
    assert r.status_code == 402
    assert r.json()["left"] == 4 and "4 left" in r.json()["error"]["message"]
    u = _usage(live, token)
    assert (u["inputs_answered"], u["inputs_refused"], u["budget_left"]) == (8, 8, 4)
    assert _query(live, token, {"inputs": X[:4].tolist()}).status_code == 200


def test_over_the_rate_gets_429_with_retry_after(live_server) -> None:
    live = live_server()
    token = live.key(rate=4.0, burst=8.0)
    assert _query(live, token).status_code == 200  # the full burst
    r = _query(live, token)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1 and 0 < r.json()["retry_after"] <= 2.0
    assert _usage(live, token)["inputs_answered"] == 8
    too_big = _query(live, token, {"inputs": torch.rand(9, 1, 8, 8).tolist()})
    assert too_big.status_code == 422 and "at most 8" in too_big.json()["error"]["message"]


def test_an_idempotent_retry_returns_the_first_answer_and_is_charged_once(live_server) -> None:
    live = live_server(defenses=[build_defense("gaussian_noise", sigma=0.1)])  # answers vary
    token = live.key(budget=100)
    body = {"inputs": X.tolist()}
    first = _query(live, token, body, **{"Idempotency-Key": "req-1"})
    again = _query(live, token, body, **{"Idempotency-Key": "req-1"})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert _usage(live, token)["inputs_answered"] == 8
    other = _query(live, token, {"inputs": X[:2].tolist()}, **{"Idempotency-Key": "req-1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    fresh = _query(live, token, body)
    assert fresh.json()["values"] != first.json()["values"]  # no key: a new (noisy) answer
    assert _usage(live, token)["inputs_answered"] == 16


def _npy(a: np.ndarray) -> str:
    return encode_npy(a)


def _png_of(size: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size), dtype=np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


BAD: list[tuple[str, object, int, str]] = [
    ("wrong shape", {"inputs": torch.rand(2, 1, 8, 7).tolist()}, 422, "inputs"),
    ("not 4-d", {"inputs": [[0.1, 0.2]]}, 422, "inputs"),
    ("ragged", {"inputs": [[[[0.1] * 8] * 8], [[[0.1] * 7] * 8]]}, 422, "inputs"),
    ("a string", {"inputs": "abc"}, 422, "inputs"),
    ("out of range", {"inputs": (X[:2] * 3).tolist()}, 422, "inputs"),
    ("NaN in npy", {"npy": _npy(np.full((1, 1, 8, 8), np.nan, np.float32))}, 422, "npy"),
    ("int dtype", {"npy": _npy(np.zeros((1, 1, 8, 8), np.int32))}, 422, "npy"),
    ("junk base64", {"npy": "%%%not base64%%%"}, 422, "npy"),
    ("base64, not npy", {"npy": base64.b64encode(b"hello").decode()}, 422, "npy"),
    ("junk png", {"png": [base64.b64encode(b"GIF89a").decode()]}, 422, "png.0"),
    ("png of another size", {"png": [_png_of(9)]}, 422, "png.0"),
    ("two forms", {"inputs": X.tolist(), "npy": _npy(X.numpy())}, 422, "inputs"),
    ("no batch", {}, 422, "inputs"),
    ("unknown output", {"inputs": X.tolist(), "output": "everything"}, 422, "output"),
    ("output it cannot give", {"inputs": X.tolist(), "output": "embedding"}, 422, "output"),
    ("unknown field", {"inputs": X.tolist(), "budget": 10**9}, 422, "budget"),
    ("batch over the limit", {"inputs": torch.rand(5, 1, 8, 8).tolist()}, 413, "inputs"),
]


@pytest.mark.parametrize(("what", "body", "status", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_naming_the_field_and_charges_nothing(
    live_server, what: str, body: dict, status: int, field: str
) -> None:
    live = live_server(limits=Limits(max_batch=4, max_body_bytes=64 * 1024))
    token = live.key(budget=100)
    r = _query(live, token, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] and "Traceback" not in r.text
    assert _usage(live, token)["inputs_answered"] == 0
    ok = _query(live, token, {"inputs": X[:2].tolist()})  # the server still answers
    assert ok.status_code == 200


def test_malformed_json_and_oversized_bodies_get_400_and_413(live_server) -> None:
    live = live_server(limits=Limits(max_batch=4, max_body_bytes=4096))
    token = live.key()
    h = live.headers(token, **{"Content-Type": "application/json"})
    junk = httpx.post(live.url + "/v1/query", content=b'{"inputs": [[[', headers=h)
    assert junk.status_code == 400 and junk.json()["error"]["field"] == "body"
    big = httpx.post(live.url + "/v1/query", content=b" " * 10_000, headers=h)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(10):
            yield b" " * 1000

    streamed = httpx.post(live.url + "/v1/query", content=chunks(), headers=h)
    assert streamed.status_code == 413
    assert httpx.get(live.url + "/nowhere").status_code == 404
    assert httpx.get(live.url + "/healthz").status_code == 200


class PerClient(Defense):
    """Counts inputs per client and refuses a client's batch past ``limit`` of them."""

    needs = None
    gives = None

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, {}

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        total = self.seen.get(client, 0) + len(x)
        if total > self.limit:
            raise QueryRefused(f"client {client} is over {self.limit} inputs")
        self.seen[client] = total
        return response

    def apply(self, response: Response) -> Response:
        return response

    def reset(self) -> None:
        self.seen = {}


def test_a_stateful_defence_keeps_state_per_key_and_trusted_keys_bypass_it(live_server) -> None:
    monitor = PerClient(limit=10)
    live = live_server(defenses=[monitor])
    thief, honest, judge = live.key(), live.key(), live.key(trusted=True)
    assert _query(live, thief).status_code == 200
    blocked = _query(live, thief)
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "refused_by_defense"
    assert _usage(live, thief)["inputs_answered"] == 8  # the refusal charged nothing
    assert _query(live, honest).status_code == 200  # another key, its own count
    for _ in range(3):
        assert _query(live, judge).status_code == 200
    assert set(monitor.seen) == {thief.split("_")[1], honest.split("_")[1]}
    assert OutputKind(_query(live, judge).json()["output"]) is OutputKind.PROBABILITIES


def test_the_usage_is_what_the_ledger_holds(live_server) -> None:
    live = live_server()
    token = live.key(budget=20, price_per_1k=5.0)
    _query(live, token)
    _query(live, token, {"inputs": X[:2].tolist()})
    u = _usage(live, token)
    assert u["inputs_answered"] == 10 and u["requests_answered"] == 2
    assert u["money_spent"] == pytest.approx(10 * 5.0 / 1000) and u["budget_left"] == 10
    assert live.ledger.billed(token.split("_")[1]) == (10, 2)
    assert json.loads(json.dumps(u)) == u


def test_a_defence_that_changes_the_kind_decides_what_the_api_answers(live_server) -> None:
    live = live_server(defenses=[build_defense("topk", k=2)])
    token = live.key()
    info = httpx.get(live.url + "/v1/info", headers=live.headers(token)).json()
    assert info["output"] == "topk"
    values = torch.tensor(_query(live, token).json()["values"])
    assert ((values > 0).sum(1) == 2).all()  # two classes revealed per row, as in-process
    labels = live_server(output="label", defenses=[build_defense("topk", k=2)])
    assert labels.service.output is OutputKind.LABEL  # a reduction of top-k is kept
