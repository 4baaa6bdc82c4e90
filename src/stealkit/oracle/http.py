"""An oracle for a victim served over HTTP (``stealkit serve`` or any API speaking its protocol).

``HttpOracle`` reads ``/v1/info`` for the input spec, the output kind and the limits, and then
answers like any oracle: attacks cannot tell it from a local one. On the way it

- keeps a local answer cache (SQLite, keyed by the endpoint, the key's id and each input's hash):
  an input answered once is never bought again, so an interrupted attack that is run again buys
  none of the queries it already bought;
- sends each batch of cache misses with an ``Idempotency-Key`` (with a cache: the body's hash,
  so even a batch bought just before the process died is replayed, not bought, on resume), so a
  retry after a dropped connection or a killed server is answered from the server's stored
  answer and charged once;
- honours ``Retry-After`` on 429, retries transient failures (connection errors, 502/503/504)
  with backoff, and turns 402 (quota), 401/403 (key) and 4xx (bad input) into stealkit errors.

Its ``ledger`` counts what the attack consumed (cache hits included, so a resumed run spends the
same budget as an uninterrupted one); ``bought`` counts the inputs the server charged for, which
is what ``/v1/usage`` reports for the key; ``replayed`` those it had charged before (a retry, or
a batch a killed run bought but never cached) and answered again for free.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch import Tensor

from stealkit.errors import BudgetExceeded, QueryError, QueryRefused, StealkitError
from stealkit.oracle.base import Oracle
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.probs import can_reduce, reduce
from stealkit.oracle.response import OutputKind, Response
from stealkit.oracle.spec import InputSpec
from stealkit.oracle.wire import encode_npy, response_from_body

log = logging.getLogger(__name__)

_TRANSIENT = {500, 502, 503, 504}


class RemoteError(StealkitError):
    """The served API could not be reached or answered an error that retrying will not fix."""


def row_hashes(x: Tensor) -> list[str]:
    """A SHA-256 per input of a float32 batch (its shape and bytes)."""
    a = x.detach().to(torch.float32).contiguous().numpy()
    shape = ",".join(map(str, a.shape[1:])).encode()
    return [hashlib.sha256(shape + b"|" + row.tobytes()).hexdigest() for row in a]


class AnswerCache:
    """Answers already bought, per (scope, input hash), in an SQLite file; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (scope TEXT, input TEXT, kind TEXT, "
            "value BLOB, PRIMARY KEY (scope, input))"
        )
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, scope: str, hashes: list[str]) -> dict[str, tuple[str, np.ndarray]]:
        found: dict[str, tuple[str, np.ndarray]] = {}
        with self._lock:
            for i in range(0, len(hashes), 500):
                chunk = hashes[i : i + 500]
                rows = self._db.execute(
                    f"SELECT input, kind, value FROM answers WHERE scope = ? AND input IN "
                    f"({','.join('?' * len(chunk))})",
                    [scope, *chunk],
                ).fetchall()
                for h, kind, blob in rows:
                    found[h] = (kind, np.frombuffer(blob, dtype=_dtype(kind)))
        return found

    def put(self, scope: str, hashes: list[str], response: Response) -> None:
        values = response.values.cpu().numpy().astype(_dtype(response.kind.value))
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                [
                    (scope, h, response.kind.value, np.ascontiguousarray(v).tobytes())
                    for h, v in zip(hashes, values, strict=True)
                ],
            )
            self._db.commit()

    def count(self, scope: str) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM answers WHERE scope = ?", [scope]
                ).fetchone()[0]
            )

    def close(self) -> None:
        self._db.close()


def _dtype(kind: str) -> Any:
    return np.int64 if kind == OutputKind.LABEL.value else np.float32


def default_cache() -> Path:
    return Path("~/.cache/stealkit/http-answers.sqlite").expanduser()


class HttpOracle(Oracle):
    """A served victim as an oracle.

    Args:
        url: the API's base URL (``http://127.0.0.1:8000``).
        api_key: the key queries are charged to.
        ledger: where the attack's queries are counted (cache hits included).
        cache: the answer cache's SQLite file; ``None`` for no cache.
        batch: inputs per request (split further to the server's ``max_batch``).
        timeout: seconds per request.
        retries: attempts per request for transient failures and rate limits.
        concurrency: requests in flight at once when a query spans several (their answers are
            put back in order); 1 sends them one by one.
        client: who is asking (for logs; the server knows the key).
        transport: an httpx transport (tests); default: real HTTP.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        ledger: Ledger | None = None,
        cache: str | Path | None = None,
        batch: int = 64,
        timeout: float = 30.0,
        retries: int = 8,
        concurrency: int = 2,
        client: str = "thief",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1 input per request, got {batch}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 request in flight, got {concurrency}")
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self.url = url.rstrip("/")
        self.ledger = ledger if ledger is not None else Ledger()
        self.client = client
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self.info = self._get("/v1/info")
        self.input_spec = InputSpec(
            channels=self.info["input"]["shape"][0],
            height=self.info["input"]["shape"][1],
            width=self.info["input"]["shape"][2],
            value_range=tuple(self.info["input"]["value_range"]),  # type: ignore[arg-type]
        )
        self.output = OutputKind(self.info["output"])
        self.batch = min(batch, int(self.info["limits"]["max_batch"]))
        key_id = (
            api_key.split("_")[1]
            if api_key.count("_") >= 2
            else hashlib.sha256(api_key.encode()).hexdigest()[:8]
        )
        self.scope = f"{self.url}|{key_id}"
        self.cache = AnswerCache(cache) if cache is not None else None
        self.bought = 0
        self.cache_hits = 0
        self.replayed = 0  # inputs answered from the server's store of earlier answers
        self.retried = 0
        self.waited_seconds = 0.0
        self.latencies: list[float] = []
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="http-oracle")
        return self._executor

    @property
    def output_dim(self) -> int:
        d = (
            self.info["num_classes"]
            if self.info["kind"] == "classifier"
            else self.info["embedding_dim"]
        )
        return int(d)

    # --- HTTP ------------------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any]:
        try:
            r = self._http.get(path)
        except httpx.HTTPError as e:
            raise RemoteError(
                f"cannot reach the served victim at {self.url}{path} ({type(e).__name__}: {e}); "
                "is `stealkit serve` running there?"
            ) from None
        if r.status_code != 200:
            raise RemoteError(f"{self.url}{path} answered {r.status_code}: {_message(r)}")
        return dict(r.json())

    def usage(self) -> dict[str, Any]:
        """The server's ``/v1/usage`` for this key."""
        return self._get("/v1/usage")

    def _post(self, body: bytes, key: str, n: int) -> dict[str, Any]:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        delay = 0.1
        lost = False  # an earlier attempt may have been answered (and charged) unseen
        for attempt in range(1, self.retries + 1):
            t = time.perf_counter()
            try:
                r = self._http.post("/v1/query", content=body, headers=headers)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise RemoteError(
                        f"{self.url} failed {attempt} times ({type(e).__name__}: {e}); the answers "
                        "already bought are cached: run again to resume"
                    ) from None
                lost = True
                log.warning("query failed (%s); retry %d with the same Idempotency-Key", e, attempt)
                with self._lock:
                    self.retried += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if r.status_code == 200:
                answer = dict(r.json())
                replayed = r.headers.get("Idempotent-Replayed") == "true"
                with self._lock:
                    self.latencies.append(time.perf_counter() - t)
                    # A replay after a lost attempt was charged for that attempt: bought here.
                    # A replay at the first attempt was bought before (by a run that died
                    # before caching it), and costs nothing now.
                    if replayed and not lost:
                        self.replayed += n
                    else:
                        self.bought += n
                return answer
            if r.status_code == 429 and attempt < self.retries:
                wait = _retry_after(r)
                with self._lock:
                    self.waited_seconds += wait
                time.sleep(wait)
                continue
            if r.status_code in _TRANSIENT and attempt < self.retries:
                lost = True
                with self._lock:
                    self.retried += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise self._error(r, n)
        raise RemoteError(f"{self.url} refused {self.retries} attempts")  # pragma: no cover

    def _error(self, r: httpx.Response, n: int) -> StealkitError:
        msg = _message(r)
        if r.status_code == 402:
            return BudgetExceeded(f"the server refused a batch of {n}: {msg}")
        if r.status_code in (401, 403):
            code = _code(r)
            if code == "refused_by_defense":
                return QueryRefused(f"the server's defence refused the batch: {msg}")
            return RemoteError(f"the server refused the key ({r.status_code}): {msg}")
        if 400 <= r.status_code < 500:
            return QueryError(f"the server refused the batch ({r.status_code}): {msg}")
        return RemoteError(f"the server failed ({r.status_code}): {msg}")

    # --- answering -------------------------------------------------------------------------------
    def _answer(self, x: Tensor) -> Response:
        x = x.detach().to(torch.float32).cpu().contiguous()
        if self.cache is None:  # every input is bought, in request-sized slices
            slices = [x[i : i + self.batch] for i in range(0, len(x), self.batch)]
            answers = self._buy_all(slices, [None] * len(slices))
            return self._joined(answers)
        hashes = row_hashes(x)
        have = self.cache.get(self.scope, hashes)
        first: dict[str, int] = {}  # each missing input once, at its first position
        for i, h in enumerate(hashes):
            if h not in have and h not in first:
                first[h] = i
        with self._lock:
            self.cache_hits += sum(h in have for h in hashes)
        todo = list(first.items())
        chunks = [todo[i : i + self.batch] for i in range(0, len(todo), self.batch)]
        rows = [x[torch.tensor([i for _, i in c])] for c in chunks]
        answers = self._buy_all(rows, [[h for h, _ in c] for c in chunks])
        for chunk, answer in zip(chunks, answers, strict=True):
            for (h, _), v in zip(chunk, answer.values.numpy(), strict=True):
                have[h] = (answer.kind.value, v)
        kind = OutputKind(have[hashes[0]][0])
        if kind is not self.output:
            raise RemoteError(f"{self.url} answered {kind.value}, but its info says {self.output}")
        vals = [np.asarray(have[h][1]) for h in hashes]
        values = (
            np.concatenate([v.reshape(-1) for v in vals])
            if kind is OutputKind.LABEL
            else np.stack(vals)
        )
        return Response(kind, torch.from_numpy(values.copy()), self.info["num_classes"])

    def _buy_all(self, batches: list[Tensor], hashes: list[list[str] | None]) -> list[Response]:
        """Buy each batch (one request each, ``concurrency`` in flight), caching the answers."""
        if self.concurrency > 1 and len(batches) > 1:  # in flight together: overlap the server
            return list(self._pool().map(self._buy, batches, hashes))
        return [self._buy(b, h) for b, h in zip(batches, hashes, strict=True)]

    def _buy(self, rows: Tensor, hashes: list[str] | None) -> Response:
        # base64 needs no JSON escaping: the body is spliced, not scanned by json.dumps
        body = b'{"npy":"' + encode_npy(rows.numpy()).encode("ascii") + b'","encoding":"npy"}'
        # With the cache, the key is the body's hash: a batch bought by a run that died before
        # caching its answer is replayed, not bought again, when the run resumes. Without it,
        # every request is a new purchase (fresh answers from a noisy defence, say).
        idem = (
            hashlib.sha256(self.scope.encode() + b"|" + body).hexdigest()
            if self.cache is not None
            else uuid.uuid4().hex
        )
        answer = response_from_body(self._post(body, idem, len(rows)))
        if len(answer) != len(rows):
            raise RemoteError(f"{self.url} answered {len(answer)} rows for {len(rows)} inputs")
        answer = Response(
            answer.kind, answer.values, answer.num_classes or self.info["num_classes"]
        )
        if self.cache is not None and hashes is not None:
            self.cache.put(self.scope, hashes, answer)
        return answer

    def _joined(self, answers: list[Response]) -> Response:
        kind = answers[0].kind
        if kind is not self.output:
            raise RemoteError(f"{self.url} answered {kind.value}, but its info says {self.output}")
        values = torch.cat([a.values for a in answers])
        return Response(kind, values, self.info["num_classes"])

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float | None:
            return lat[min(int(p * len(lat)), len(lat) - 1)] if lat else None

        return {
            "url": self.url,
            "bought": self.bought,
            "cache_hits": self.cache_hits,
            "replayed": self.replayed,
            "retried": self.retried,
            "waited_seconds": self.waited_seconds,
            "money_paid": self.bought * float(self.info.get("price_per_1k", 0.0)) / 1000.0,
            "latency_p50_s": q(0.5),
            "latency_p99_s": q(0.99),
        }

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
        self._http.close()
        if self.cache is not None:
            self.cache.close()

    def __repr__(self) -> str:
        return (
            f"HttpOracle(url={self.url!r}, output={self.output.value}, "
            f"spec={self.input_spec.shape}, ledger={self.ledger!r})"
        )


def _code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _message(r: httpx.Response) -> str:
    try:
        e = r.json()["error"]
        return f"{e['message']}" + (f" (field {e['field']})" if e.get("field") else "")
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


def _retry_after(r: httpx.Response) -> float:
    """Seconds to wait: the body's exact ``retry_after`` when given, else the header's."""
    try:
        exact = r.json().get("retry_after")
        if exact is not None:
            return max(float(exact), 0.01)
    except (ValueError, AttributeError, TypeError):
        pass
    try:
        return max(float(r.headers.get("Retry-After", "1")), 0.01)
    except ValueError:
        return 1.0


class ReducedOracle(Oracle):
    """``inner``'s answers reduced to kind ``output`` on the client (labels from probabilities,
    say: what a thief who wants less can always do); charged once, to ``inner``'s ledger."""

    def __init__(self, inner: Oracle, output: OutputKind, k: int = 1) -> None:
        if not can_reduce(inner.output, output):
            raise ValueError(
                f"{inner!r} answers {inner.output.value}, which cannot become {output}"
            )
        self.inner, self.output, self.k = inner, output, k
        self.input_spec, self.ledger, self.client = inner.input_spec, inner.ledger, inner.client

    @property
    def output_dim(self) -> int:
        return self.inner.output_dim

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def _answer(self, x: Tensor) -> Response:
        return reduce(self.inner._answer(x), self.output, self.k)

    def __repr__(self) -> str:
        return f"ReducedOracle({self.inner!r}, output={self.output.value})"
