"""Central stores: where forwarded presses live and the query side reads.

Each backend keeps its writes (``sqlite.py``, ``postgres.py``), its schema
(``sqlite_schema.py``, ``postgres_schema.py``) and its reads
(``sqlite_reads.py``, ``postgres_reads.py``) side by side; ``schema.py`` names
the tables they share. :func:`open_store` opens the writer, :func:`open_reader`
the query side's reader.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError
from gateway.stores.base import CentralStore, ImportSummary, StoredPress, StoredReject
from gateway.stores.reads import StoreReader
from gateway.stores.sqlite import SqliteStore
from gateway.stores.sqlite_reads import SqliteReader

__all__ = [
    "CentralStore",
    "ImportSummary",
    "StoreReader",
    "StoredPress",
    "StoredReject",
    "open_reader",
    "open_store",
]

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


async def open_reader(url: str) -> StoreReader:
    """The query side's reader for ``[store] url`` (an absolute ``sqlite:///PATH`` or
    ``postgresql://``); it reads the schema as it is and migrates nothing."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return await SqliteReader.open(Path(url[len(prefix) - 1 :]))
    if url.startswith(POSTGRES_SCHEMES):
        from gateway.stores.postgres_reads import PgReader  # noqa: PLC0415 (asyncpg only if used)

        return await PgReader.open(url)
    raise ConfigError("store.url", f"unsupported store URL {url!r}")
