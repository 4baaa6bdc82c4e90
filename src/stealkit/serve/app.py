"""The HTTP API: ``POST /v1/query``, ``GET /v1/info``, ``GET /v1/usage``, ``GET /healthz``.

Every error is a JSON body ``{"error": {"code", "message", "field"}}`` with a 4xx status naming
what to fix; the server answers 5xx only for its own faults (a victim answering NaN: 502; the
ledger database unreachable: 503), never for what a client sent.

A query is answered in this order: the key (401/403), the Idempotency-Key (a replay returns the
stored answer, charged once; the same key with another body is 422), the batch (413 over the
limits, 422 for a wrong shape, dtype, range or NaN), the quota (402) and rate (429 with
``Retry-After``) as last seen, the answer, and then the charge, which decides the quota and rate
again under the key's lock and records the request in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.responses import Response as HttpResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stealkit.errors import QueryError, QueryRefused, VictimError
from stealkit.oracle.response import OutputKind
from stealkit.oracle.wire import WireError, answer_body, batch_from_body
from stealkit.serve.ledger import AuthError, Charged, KeyRow, Refused, Replay, SqlLedger, decide
from stealkit.serve.service import Service, can_reduce, reduce

log = logging.getLogger(__name__)
API_VERSION = "v1"

Finite = Annotated[float, Field(allow_inf_nan=False)]


class QueryBody(BaseModel):
    """A batch of N inputs of the API's shape (C, H, W), in exactly one of three forms."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[list[list[list[Finite]]]] | None = Field(
        default=None, description="the batch as nested numbers, shape (N, C, H, W)"
    )
    npy: str | None = Field(default=None, description="base64 of a float32/float64 .npy array")
    png: list[str] | None = Field(default=None, description="base64 PNG images, 8-bit")
    output: OutputKind | None = Field(
        default=None,
        description="a kind of answer to reduce the API's answer to (labels from probabilities, "
        "say); default: the API's own",
    )
    encoding: Literal["json", "npy"] = Field(
        default="json", description="how the answer's values travel: nested numbers or .npy"
    )


def body_model(service: Service) -> type[QueryBody]:
    """``QueryBody`` with this API's own shape, value range and output kinds in its schema, so
    the documentation (and a fuzzer) knows what a valid batch is."""
    c, h, w = service.spec.shape
    lo, hi = service.spec.value_range
    value = Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)]
    row = Annotated[list[value], Field(min_length=w, max_length=w)]  # type: ignore[valid-type]
    plane = Annotated[list[row], Field(min_length=h, max_length=h)]  # type: ignore[valid-type]
    image = Annotated[list[plane], Field(min_length=c, max_length=c)]  # type: ignore[valid-type]
    outputs = tuple(k.value for k in OutputKind if can_reduce(service.output, k))
    return create_model(
        "QueryBody",
        __base__=QueryBody,
        __doc__=QueryBody.__doc__,
        inputs=(
            Annotated[list[image], Field(min_length=1)] | None,  # type: ignore[valid-type]
            Field(
                default=None,
                description=f"the batch as nested numbers, shape (N, {c}, {h}, {w}), in [{lo}, {hi}]",
            ),
        ),
        output=(
            Literal[outputs] | None,  # type: ignore[valid-type]
            Field(
                default=None, description="reduce the answer to this kind (default: the API's own)"
            ),
        ),
    )


class QueryAnswer(BaseModel):
    output: OutputKind
    n: int
    num_classes: int | None
    dim: int | None
    values: list[list[float]] | list[int] | None
    npy: str | None
    charged: int = Field(description="inputs this request was charged (once, even if replayed)")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    left: int | None = Field(default=None, description="inputs left on the quota (402)")
    retry_after: float | None = Field(default=None, description="seconds to wait (429)")


class InputInfo(BaseModel):
    shape: list[int]
    value_range: list[float]
    dtype: str
    forms: list[str]


class ApiLimits(BaseModel):
    max_batch: int
    max_body_bytes: int
    rate: float | None
    burst: float | None
    budget: int | None
    budget_left: int | None


class Info(BaseModel):
    api_version: str
    victim: str
    kind: str
    input: InputInfo
    output: OutputKind
    k: int | None
    num_classes: int | None
    embedding_dim: int | None
    classes: list[str] | None
    defenses: list[str]
    price_per_1k: float
    limits: ApiLimits


class Usage(BaseModel):
    key_id: str
    name: str
    inputs_answered: int
    requests_answered: int
    inputs_refused: int
    requests_refused: int
    budget: int | None
    budget_left: int | None
    price_per_1k: float
    money_spent: float
    rate: float | None
    burst: float | None
    trusted: bool
    revoked: bool


class Health(BaseModel):
    status: str


def error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers)


def _refusal(r: Refused) -> JSONResponse:
    headers = None
    if r.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(r.retry_after)))}
    return error(
        r.status, r.code, r.message, headers=headers, left=r.left, retry_after=r.retry_after
    )


BODY_SHA256 = "stealkit.body_sha256"


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, by Content-Length before reading and
    by counting what arrives for bodies sent without one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = self._too_big(self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    over = int(value) > self.max_bytes
                except ValueError:
                    over = False
                if over:
                    await too_big(scope, receive, send)
                    return
        seen = 0
        over = False
        digest = hashlib.sha256()

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request" and not over:
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                digest.update(chunk)
                if not message.get("more_body", False):
                    scope[BODY_SHA256] = digest.hexdigest()  # what Idempotency-Key compares
            return message

        started = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                if not started and message["type"] == "http.response.start":
                    started = True
                    await too_big(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counted, guarded)

    @staticmethod
    def _too_big(limit: int) -> ASGIApp:
        return error(
            413,
            "body_too_large",
            f"the request body is over this API's limit of {limit} bytes; send smaller batches",
            "body",
        )


bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer sk_<id>_<secret>")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
Creds = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
ApiKey = Annotated[str | None, Security(api_key_header)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in {
        400: "the body is not JSON",
        401: "no key, or an unknown one",
        403: "a revoked key, or a batch refused by a defence",
        413: "a body or batch over the limits",
        422: "a field that cannot be used (named in error.field)",
        503: "the ledger database is unreachable; nothing was charged",
    }.items()
}


def create_app(service: Service, ledger: SqlLedger) -> FastAPI:
    """The API of ``service``, metered by ``ledger``."""
    app = FastAPI(
        title=f"stealkit: {service.victim.name}",
        version=API_VERSION,
        description="A victim model served as a paid API: every input is metered per key "
        "(quotas, rate limits, idempotent retries) in a SQL ledger. Send the key as "
        "'Authorization: Bearer sk_...' or 'X-API-Key: sk_...'.",
        responses=_ERRORS,
    )
    spec = service.spec

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error(
                400, "malformed_json", f"the body is not valid JSON: {first['msg']}", "body"
            )
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "header", "query")]
        field = ".".join(loc[:1]) if loc and loc[0] in QueryBody.model_fields else ".".join(loc)
        more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
        where = ".".join(loc) or "body"
        return error(422, "invalid_field", f"{where}: {first['msg']}{more}", field or "body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def _db(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("ledger database error: %s", exc)
        return error(503, "ledger_unavailable", "the ledger database cannot be reached; retry")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error(
            500, "internal_error", "the server failed on this request; nothing was charged"
        )

    def key_of(
        credentials: HTTPAuthorizationCredentials | None, api_key: str | None
    ) -> KeyRow | JSONResponse:
        token = credentials.credentials if credentials is not None else api_key
        try:
            return ledger.authenticate(token)
        except AuthError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return error(
                e.status,
                "unauthorized" if e.status == 401 else "revoked",
                str(e),
                "Authorization",
                headers=headers,
            )

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, str]:
        """Whether the server is up (no key needed)."""
        return {"status": "ok"}

    @app.get("/v1/info", response_model=Info, tags=["api"])
    def info(creds: Creds, api_key: ApiKey) -> Any:
        """What the API's documentation says: the input it takes, the answer it gives, its
        classes or embedding size, this key's price and limits."""
        key = key_of(creds, api_key)
        if isinstance(key, JSONResponse):
            return key
        body = service.info()
        body["api_version"] = API_VERSION
        body["price_per_1k"] = key.price_per_1k
        body["limits"].update(
            rate=key.rate, burst=key.burst, budget=key.budget, budget_left=key.left
        )
        return body

    @app.get("/v1/usage", response_model=Usage, tags=["api"])
    def usage(creds: Creds, api_key: ApiKey) -> Any:
        """This key's inputs answered and refused, the budget left and the money spent."""
        key = key_of(creds, api_key)
        if isinstance(key, JSONResponse):
            return key
        return key.usage()

    def query(
        request: Request,
        body: QueryBody,
        creds: Creds,
        api_key: ApiKey,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=255,
                description="retries with the same key and body return the first answer, "
                "charged once",
            ),
        ] = None,
    ) -> Any:
        """Answer a batch; every input is charged to the key, once."""
        key = key_of(creds, api_key)
        if isinstance(key, JSONResponse):
            return key
        body_hash = None
        if idempotency_key is not None:
            body_hash = (
                request.scope.get(BODY_SHA256)
                or hashlib.sha256(body.model_dump_json().encode()).hexdigest()
            )
            before = ledger.stored(key.id, idempotency_key, body_hash)
            if isinstance(before, Replay):
                return _replayed(before)
            if isinstance(before, Refused):
                return _refusal(before)
        want = OutputKind(body.output) if body.output is not None else None
        if want is not None and not can_reduce(service.output, want):
            return error(
                422,
                "invalid_field",
                f"this API answers {service.output.value}, which cannot become "
                f"{want.value}; leave 'output' out or ask for a reduction of it",
                "output",
            )
        try:
            x, field = batch_from_body(body.model_dump(), size=(spec.width, spec.height))
        except WireError as e:
            return error(422, "invalid_input", e.message, e.field)
        n = int(x.shape[0])
        if n > service.limits.max_batch:
            return error(
                413,
                "batch_too_large",
                f"a batch of {n} inputs is over this API's limit of {service.limits.max_batch}; "
                "split it",
                field,
            )
        try:
            spec.check(x)
        except QueryError as e:
            return error(422, "invalid_input", str(e), field)
        seen = decide(key, n, time.time())  # as last seen: refuse early without computing
        if seen is not None:
            ledger.refuse(key.id, n)
            return _refusal(seen)
        try:
            response = service.answer(x, key.id, trusted=key.trusted)
        except QueryRefused as e:
            ledger.refuse(key.id, n)
            return error(403, "refused_by_defense", f"{e}; nothing was charged")
        except VictimError as e:
            return error(502, "victim_error", str(e))
        if want is not None:
            response = reduce(response, want, service.k)
        payload = answer_body(response, encoding=body.encoding)
        payload["charged"] = n
        content = json.dumps(payload, separators=(",", ":")).encode()
        outcome = ledger.charge(
            key.id, n, response=content, idempotency_key=idempotency_key, body_hash=body_hash
        )
        if isinstance(outcome, Replay):
            return _replayed(outcome)
        if isinstance(outcome, Refused):
            return _refusal(outcome)
        assert isinstance(outcome, Charged)
        headers = {"X-Request-Id": str(outcome.request_id)}
        if outcome.row.left is not None:
            headers["X-Budget-Left"] = str(outcome.row.left)
        return HttpResponse(content, media_type="application/json", headers=headers)

    query.__annotations__["body"] = body_model(service)  # the schema says this API's shape
    app.post(
        "/v1/query",
        response_model=QueryAnswer,
        tags=["api"],
        responses={
            402: {"model": ErrorBody, "description": "the batch would cross the key's quota"},
            429: {"model": ErrorBody, "description": "over the key's rate; see Retry-After"},
            502: {"model": ErrorBody, "description": "the victim answered NaN; not charged"},
        },
    )(query)

    app.state.service, app.state.ledger = service, ledger
    return app


def _replayed(r: Replay) -> HttpResponse:
    return HttpResponse(
        r.response, media_type="application/json", headers={"Idempotent-Replayed": "true"}
    )


def asgi(service: Service, ledger: SqlLedger) -> ASGIApp:
    """``create_app`` behind the body limit: what uvicorn serves."""
    return BodyLimit(create_app(service, ledger), service.limits.max_body_bytes)


def app_from_env() -> ASGIApp:
    """The app a uvicorn worker builds from ``STEALKIT_SERVE_CONFIG`` (JSON of a ServeConfig):
    how ``stealkit serve --workers N`` starts N processes sharing one ledger."""
    from stealkit.serve.config import ServeConfig, build

    cfg = ServeConfig.model_validate_json(os.environ["STEALKIT_SERVE_CONFIG"])
    service, ledger = build(cfg)
    return asgi(service, ledger)
