"""Who is asking: v1 and v2 credentials checked against the token table, then rate-limited.

v1: HTTP Basic (client id, token) or ``X-HON-Client-Id`` + ``X-HON-API-Token``.
v2: ``X-HON-API-Token`` or the ``auth`` query parameter. Lookups are cached
for ``[api] refresh_s`` (CACHE_S by default), so a token created or revoked
through another instance sharing the store works, or stops working, within it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from dataclasses import dataclass

from starlette.requests import Request

from gateway.api.catalog import CatalogCache, View
from gateway.api.db import Reader
from gateway.api.errors import ApiError
from gateway.api.ratelimit import RateLimiter
from gateway.api.tokens import TokenInfo, find_token, token_hash

CACHE_S = 5.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    token: TokenInfo
    view: View


class Unauthorized(ApiError):
    def __init__(self, message: str, *, basic: bool) -> None:
        super().__init__(401, message)
        self.basic = basic


class TooManyRequests(ApiError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(429, "rate limit exceeded; see Retry-After")
        self.retry_after = max(1, math.ceil(retry_after_s))


class Authenticator:
    def __init__(
        self, db: Reader, catalog: CatalogCache, limiter: RateLimiter, *, cache_s: float = CACHE_S
    ) -> None:
        self._db = db
        self._cache_s = cache_s
        self._catalog = catalog
        self.limiter = limiter
        self._cache: dict[str, tuple[float, tuple[TokenInfo, str] | None]] = {}

    async def v1(self, request: Request) -> Principal:
        client_id, token = _v1_credentials(request)
        if client_id is None or token is None:
            raise Unauthorized(
                "credentials required: HTTP Basic or X-HON-Client-Id and X-HON-API-Token",
                basic=True,
            )
        found = await self._lookup(token)
        if found is None or not hmac.compare_digest(
            found[0].client_id.encode(), client_id.encode()
        ):
            raise Unauthorized("unknown client id or token", basic=True)
        return await self._admit(found[0], basic=True)

    async def v2(self, request: Request) -> Principal:
        token = request.headers.get("x-hon-api-token") or request.query_params.get("auth")
        if not token:
            raise Unauthorized(
                "token required: X-HON-API-Token header or auth parameter", basic=False
            )
        found = await self._lookup(token)
        if found is None:
            raise Unauthorized("unknown token", basic=False)
        return await self._admit(found[0], basic=False)

    async def _admit(self, info: TokenInfo, *, basic: bool) -> Principal:
        if not info.usable(time.time()):
            raise Unauthorized("token revoked or expired", basic=basic)
        wait = self.limiter.take(info.id)
        if wait > 0:
            raise TooManyRequests(wait)
        catalog = await self._catalog.get()
        return Principal(info, catalog.view(info.company, info.scope))

    async def _lookup(self, token: str) -> tuple[TokenInfo, str] | None:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        found = await find_token(self._db, token)
        if found is not None and not hmac.compare_digest(found[1], token_hash(token)):
            found = None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (now, found)
        return found


def _v1_credentials(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return (user, password) if sep else (None, None)
    return request.headers.get("x-hon-client-id"), request.headers.get("x-hon-api-token")
