"""The ASGI app: both API versions, errors as JSON, our OpenAPI document at /openapi.json."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.api import v1, v2, v2_extra
from gateway.api.auth import Authenticator, TooManyRequests, Unauthorized
from gateway.api.catalog import CACHE_S, CatalogCache
from gateway.api.db import Reader
from gateway.api.errors import ApiError
from gateway.api.params import single_values
from gateway.api.ratelimit import RateLimiter
from gateway.api.state import ApiState
from gateway.errors import StoreError

DESCRIPTION = """
Read-only query API over the smiley-gateway central store, compatible with the
HappyOrNot customer API versions 1 and 2: a client switches by changing its
base URL and credentials.

**Authentication.** v1: HTTP Basic (client id, token) or the headers
`X-HON-Client-Id` and `X-HON-API-Token`. v2: the header `X-HON-API-Token` or
the query parameter `auth`. Credentials come from `smiley-gateway tokens
create`. A token sees its company only, and only the subtree of its scope
location if it has one; anything else answers 404 (or is absent from lists)
exactly as if it did not exist. Only GET and HEAD: other methods get 405.

**Rate limit.** Per token, `[api] rate_limit` (default 600/minute), as a token
bucket allowing bursts of that size. Over it: 429 with `Retry-After` (seconds).

**Errors.** JSON `{"status", "error", "parameter"}`; a 400 names the query
parameter at fault (malformed dates, unknown periods, `limit` over 10000,
intervals over one year).

**Beyond the vendor.**
- Every feedback row has `utcTime`, `timePrecision` (`second`, or `hour` for
  counts that arrived by SMS), `transport` and `clockCorrected`; in CSV these
  are the last columns. An hour-precision press has `localTime` at the start
  of its hour (the time is known to the hour only, never to the minute).
  Hour counts are expanded into one row per press, with ids
  `uuid5(NS, "terminal:hour:button:n")` that stay stable when a later SMS
  raises the count. A press's id is `uuid5(NS, "terminal:seq")`.
- `GET /v2/results/happy-index.{format}` and `happyIndex` on each v1 result
  bucket: the Happy Index, 0..100, buttons weighted evenly from 0 (most
  negative) to 100, the mean rounded half up (17/16/60/126 gives 78).
- A `.csv` feedback list without `limit` is the whole selection (at most a
  year), streamed in constant memory; `X-More-Available` is then false.
- Misuse: a press within its survey's misuse interval after the last counted
  press of the same terminal. Left out of results and feedback lists unless
  `includeMisuse=true`; v1 `rawresults` includes it, flagged.
"""


def create_app(db: Reader, rate_limit: tuple[int, float], *, refresh_s: float = CACHE_S) -> FastAPI:
    """The API over ``db``; tokens and the registry are read again after ``refresh_s``."""
    app = FastAPI(
        dependencies=[Depends(single_values)],
        title="smiley-gateway query API",
        version="1.0",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    limiter = RateLimiter(*rate_limit)
    auth = Authenticator(db, CatalogCache(db, refresh_s), limiter, cache_s=refresh_s)
    app.state.api = ApiState(db, auth)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.include_router(v2_extra.router)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _store_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            _add_security(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _body(status: int, message: str, parameter: str | None = None) -> dict[str, Any]:
    return {"status": status, "error": message, "parameter": parameter}


async def _api_error(request: Request, exc: ApiError) -> Response:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = (
            'Basic realm="smiley-gateway"'
            if exc.basic
            else 'X-HON-API-Token realm="smiley-gateway"'
        )
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(_body(exc.status, exc.message, exc.parameter), exc.status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = first.get("loc", ())
    parameter = str(location[-1]) if location else None
    message = f"{parameter}: {first.get('msg', 'invalid')}" if parameter else "invalid request"
    return JSONResponse(_body(400, message, parameter), 400)


async def _store_error(request: Request, exc: StoreError) -> Response:
    return JSONResponse(
        _body(503, "the central store is not reachable"), 503, headers={"Retry-After": "5"}
    )


async def _http_error(request: Request, exc: HTTPException) -> Response:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = "GET, HEAD"
    return JSONResponse(_body(exc.status_code, str(exc.detail)), exc.status_code, headers=headers)


def _add_security(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "ApiTokenAuth": {"type": "apiKey", "in": "header", "name": "X-HON-API-Token"},
        "ApiTokenViaQueryStringAuth": {"type": "apiKey", "in": "query", "name": "auth"},
        "ClientIdHeader": {"type": "apiKey", "in": "header", "name": "X-HON-Client-Id"},
        "BasicAuth": {"type": "http", "scheme": "basic"},
    }
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if path.startswith("/v1/"):
                operation["security"] = [
                    {"BasicAuth": []},
                    {"ClientIdHeader": [], "ApiTokenAuth": []},
                ]
            else:
                operation["security"] = [{"ApiTokenAuth": []}, {"ApiTokenViaQueryStringAuth": []}]
