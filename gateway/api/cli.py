"""``smiley-gateway tokens``: create, list and revoke query API credentials."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from gateway.api.catalog import load_catalog
from gateway.api.db import Reader
from gateway.api.server import open_api_reader
from gateway.api.tokens import create_token, list_tokens, revoke_token
from gateway.errors import ConfigError
from gateway.registry.config import Config

T = TypeVar("T")


def _with_reader(config: Config, work: Callable[[Reader], Awaitable[T]]) -> T:
    async def go() -> T:
        db = await open_api_reader(config)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


def parse_expiry(value: str | None) -> int | None:
    """YYYY-MM-DD: 00:00 UTC that day; or an ISO 8601 time (UTC without a zone)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            "--expires", f"expected YYYY-MM-DD or an ISO 8601 time, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        return calendar.timegm(moment.timetuple())
    return int(moment.astimezone(UTC).timestamp())


def _time(seconds: int | None) -> str:
    return (
        "-"
        if seconds is None
        else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def create(
    config: Config, company: str, scope: int | None, name: str | None, expires: str | None
) -> int:
    expires_at = parse_expiry(expires)

    async def work(db: Reader) -> int:
        catalog = await load_catalog(db)
        if company not in catalog.companies:
            raise ConfigError("--company", f"no company {company!r} in the store's registry")
        if scope is not None:
            loc = catalog.locations.get(scope)
            if loc is None or loc.company != company:
                raise ConfigError("--scope", f"no location {scope} of company {company!r}")
        info, token = await create_token(db, company, scope, name, expires_at)
        print(f"client id: {info.client_id}")
        print(f"token:     {token}")
        print("The token is shown only now; it is stored hashed.")
        return 0

    return _with_reader(config, work)


def list_all(config: Config) -> int:
    async def work(db: Reader) -> int:
        print("id\tclient id\tcompany\tscope\tname\tcreated\texpires\trevoked")
        for t in await list_tokens(db):
            scope = "-" if t.scope is None else str(t.scope)
            print(
                f"{t.id}\t{t.client_id}\t{t.company}\t{scope}\t{t.name}\t{_time(t.created_at)}"
                f"\t{_time(t.expires_at)}\t{_time(t.revoked_at)}"
            )
        return 0

    return _with_reader(config, work)


def revoke(config: Config, client_id: str) -> int:
    async def work(db: Reader) -> int:
        if not await revoke_token(db, client_id):
            print(f"no active credential {client_id!r}")
            return 1
        print(f"revoked {client_id}")
        return 0

    return _with_reader(config, work)
