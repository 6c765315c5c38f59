"""Central stores: where forwarded presses live and the query side reads."""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.stores.base import CentralStore, ImportSummary, StoredPress, StoredReject
from gateway.stores.sqlite import SqliteStore

__all__ = ["CentralStore", "ImportSummary", "StoredPress", "StoredReject", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def open_store(url: str, *, lazy: bool = False) -> CentralStore:
    """Open the store a URL names: ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``.

    ``lazy`` lets a server store be down at open: it connects on first use.
    """
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return await SqliteStore.open(
            url[len(prefix) - 1 :] if url.startswith(prefix + "/") else url[len(prefix) :]
        )
    if url.startswith(POSTGRES_SCHEMES):
        from gateway.stores.postgres import PostgresStore  # noqa: PLC0415 (asyncpg only if used)

        return await PostgresStore.open(url, lazy=lazy)
    raise ConfigError("store.url", f"unsupported store URL {url!r}")
