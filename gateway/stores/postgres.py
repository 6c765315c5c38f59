"""The central store on PostgreSQL: many gateways forwarding into one database.

Selected by ``[store] url = "postgresql://user@host:5432/db"`` (``postgres://``
too). TLS follows the URL as libpq would read it: ``?sslmode=require`` (or
``verify-ca``/``verify-full`` with ``sslrootcert=...``, and ``sslcert``/
``sslkey`` for client certificates); without ``sslmode`` TLS is used when the
server offers it (``prefer``). A password may be in the URL, in ``PGPASSWORD``
or in ``~/.pgpass``.

Driver: asyncpg rather than psycopg 3. The gateway is one asyncio process, and
asyncpg is asyncio-native (psycopg's async mode wraps a libpq connection); it
speaks the binary protocol, including binary ``COPY`` from Python tuples
(``copy_records_to_table``), which is how batches come in here; and in the
published benchmarks it is the fastest Python PostgreSQL driver, which
matters on the small edge machines gateways run on. It ships wheels with no
libpq to install. Its one cost, no type information, is paid by asyncpg-stubs.

How a batch is written (:meth:`PostgresStore.write`). Several gateways write at
once; what they share is taken in one global order, so no two transactions
ever wait for each other in a cycle:

1. the months the batch touches get their ``press`` partitions if they lack
   them, in a short transaction of their own (:func:`ensure_partitions`);
2. the write transaction takes ``press_default`` in ACCESS SHARE mode first,
   so attaching a new partition (which needs it exclusively) waits for the
   writers under way, and a writer waits for that only while it holds nothing;
3. it locks the registry rows of the batch's terminals, in id order: two
   batches of one terminal take turns (its misuse walk reads its presses),
   batches of other terminals go on in parallel. Row locks live in the row,
   so a batch of 2,000 terminals costs no slots of the server's lock table;
4. the rows are ``COPY``-ed into a per-connection temporary staging table;
5. one statement claims each row's (terminal_id, seq) in ``press_key``, inserts
   only the claimed rows into ``press``, adds them to ``press_hourly`` (rows of
   its terminals only) and to a temporary table of survey deltas, and names
   the terminals whose new presses may change misuse flags;
6. the misuse flags of those terminals (usually none: presses that arrive in
   order and apart are counted) are brought up to date (``pg_misuse.py``);
7. the survey deltas go into ``press_hourly_survey``, the one rollup every
   writer of a survey shares, in one statement in key order, last but for the
   rows no other writer touches (hour counts by batch_seq, rejects by uid).

A retry after a lost commit reply finds every key claimed and changes
nothing; two gateways sending the same press take turns on its terminal, and
the second finds its key claimed.

The batch's statements: ``pg_batch.py`` (staging, step 5) and ``pg_misuse.py``
(steps 3, 6 and 7); schema migrations and partitions: ``postgres_schema.py``;
the query side's reads: ``postgres_reads.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
import asyncpg.pool

from gateway.errors import ConfigError, StoreError
from gateway.registry.terminals import Registry
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.stores.base import (
    ImportSummary,
    StoredPress,
    StoredReject,
    registry_from_rows,
    registry_rows,
    reject_values,
)
from gateway.stores.pg_batch import CREATE_STAGE, INSERT_FROM_STAGE, STAGE_COLUMNS
from gateway.stores.pg_misuse import (
    FLUSH_SURVEY_DELTAS,
    LOCK_TERMINALS,
    UPSERT_HOURS,
    hour_args,
    reflag_batch,
)
from gateway.stores.postgres_schema import (
    LOCK_NAMESPACE,
    LOCK_REGISTRY,
    ensure_partitions,
    migrate,
    migrations,
    months_of,
    partition_name,
)
from gateway.stores.schema import REGISTRY_COLUMNS

# migrations, partition_name and ensure_partitions are part of this module's face (tests, bench).
__all__ = ["PostgresStore", "ensure_partitions", "migrate", "migrations", "partition_name"]

# The first statement of every write transaction (step 2 of the docstring).
# JIT is off there: a batch's statements run in milliseconds, and compiling one
# (which the planner may ask for when it overestimates a misuse walk) costs
# tens of milliseconds.
_BEGIN_WRITE = "SET LOCAL jit = off; LOCK TABLE press_default IN ACCESS SHARE MODE"

_DB_ERRORS = (
    asyncpg.PostgresError,  # server errors, and connections lost (PostgresConnectionError)
    asyncpg.InterfaceError,  # client-side misuse detected by asyncpg, pool closing
    asyncpg.InternalClientError,
    OSError,  # refused, reset, unreachable, TLS errors (ssl.SSLError is an OSError)
    TimeoutError,  # connect or command timeout
)
# A row asyncpg cannot encode (a number out of its column's range, a wrong
# type) fails the batch like a server error does, not the forwarder.
_ROW_ERRORS = (TypeError, ValueError, OverflowError)
_CONNECT_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0  # a batch takes milliseconds; this bounds a dead connection
_CLOSE_TIMEOUT_S = 10.0
_STREAM_CHUNK = 2000


_INSERT_REJECT = (
    "INSERT INTO rejected (uid, received_at_ms, transport, peer, terminal_id, seq,"
    " reason, detail, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (uid) DO NOTHING"
)

_SELECT_PRESSES = (
    "SELECT terminal_id, seq, extract(epoch FROM occurred_at)::bigint, utc_offset_s, precision,"
    " button, followup, count, transport, clock_corrected, received_at_ms, misuse, ui FROM press"
)
_SELECT_HOURS = (
    "SELECT terminal_id, batch_seq, extract(epoch FROM hour)::bigint, utc_offset_s, 'hour',"
    " button, 0, count, transport, false, received_at_ms, false, '' FROM hourly"
)
_SELECT_REJECTED = (
    "SELECT uid, received_at_ms, transport, peer, terminal_id, seq, reason, detail, raw"
    " FROM rejected"
)

# asyncpg's classes are generic only in asyncpg-stubs, hence the quotes.
_Pool: TypeAlias = "asyncpg.pool.Pool[asyncpg.Record]"
_Connection: TypeAlias = (
    "asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
)


class PostgresStore:
    """A :class:`~gateway.stores.base.CentralStore` in a PostgreSQL database."""

    def __init__(self, pool: _Pool, where: str) -> None:
        self._pool = pool
        self._where = where
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._months: set[tuple[int, int]] = set()  # months known to have a partition

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 4, lazy: bool = False) -> PostgresStore:
        """Connect and migrate the schema; raise StoreError if the server cannot be used.

        ``lazy`` defers both to the first operation, so a gateway can start
        while the database is down (each operation then raises StoreError
        until it is back).
        """
        where = _describe(url)
        try:
            pool = asyncpg.create_pool(
                url,
                min_size=0 if lazy else 1,
                max_size=pool_size,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
                init=_init_connection,
                server_settings={"application_name": "smiley-gateway"},
            )
        except ValueError as exc:  # asyncpg's DSN parser (ClientConfigurationError too)
            raise ConfigError("store.url", f"not a usable PostgreSQL URL: {exc}") from exc
        try:
            await pool
        except _DB_ERRORS as exc:
            pool.terminate()
            raise StoreError(f"postgresql store {where}: {exc}") from exc
        store = cls(pool, where)
        if not lazy:
            try:
                await store._ensure_ready()
            except _DB_ERRORS as exc:
                await store.close()
                raise StoreError(f"postgresql store {where}: {exc}") from exc
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT_S)
        except TimeoutError:  # a connection still out (an abandoned stream): cut it
            self._pool.terminate()

    async def write(
        self,
        presses: Sequence[PressRow],
        rejects: Sequence[StoredReject],
        hours: Sequence[HourCountRow] = (),
    ) -> None:
        if not presses and not rejects and not hours:
            return
        months = months_of(presses)
        terminals = sorted({p.terminal_id for p in presses} | {h.terminal_id for h in hours})
        try:
            await self._ensure_ready()
            async with self._pool.acquire() as conn:
                if months - self._months:
                    async with conn.transaction():
                        await ensure_partitions(conn, months)
                    self._months |= months  # committed: they stay whatever the write does
                async with conn.transaction():
                    await conn.execute(_BEGIN_WRITE)
                    if terminals:
                        await conn.execute(LOCK_TERMINALS, terminals)
                    if presses:
                        await conn.copy_records_to_table(
                            "press_stage", records=presses, columns=STAGE_COLUMNS
                        )
                        walks = await conn.fetch(INSERT_FROM_STAGE)
                        if walks:
                            await reflag_batch(conn, {r[0]: (r[1], r[2]) for r in walks})
                        await conn.execute(FLUSH_SURVEY_DELTAS)
                    if hours:
                        await conn.execute(UPSERT_HOURS, *hour_args(hours))
                    if rejects:
                        await conn.executemany(_INSERT_REJECT, _reject_args(rejects))
        except (*_DB_ERRORS, *_ROW_ERRORS) as exc:
            raise StoreError(f"postgresql store {self._where}: {_explain(exc)}") from exc

    async def import_registry(self, registry: Registry) -> ImportSummary:
        entries = registry_rows(registry)
        added = changed = unchanged = 0
        try:
            await self._ensure_ready()
            async with self._pool.acquire() as conn, conn.transaction():
                # One import at a time, so gateways starting together neither
                # deadlock on the same rows nor miscount each other's work.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, LOCK_REGISTRY
                )
                for table, rows in entries.items():
                    columns = REGISTRY_COLUMNS[table]
                    names = ", ".join(columns)
                    existing = {
                        r[0]: tuple(r)
                        for r in await conn.fetch(f"SELECT {names} FROM {table}")  # noqa: S608
                    }
                    upserts = []
                    for row in rows:
                        before = existing.get(row[0])
                        if before == row:
                            unchanged += 1
                            continue
                        added += before is None
                        changed += before is not None
                        upserts.append(row)
                    if upserts:
                        upserts.sort(key=lambda row: row[0])  # one lock order for every importer
                        await conn.executemany(_upsert(table, columns), upserts)
        except (*_DB_ERRORS, *_ROW_ERRORS) as exc:
            raise StoreError(f"postgresql store {self._where}: {_explain(exc)}") from exc
        return ImportSummary(added, changed, unchanged)

    async def load_registry(self) -> Registry:
        rows: dict[str, list[Sequence[Any]]] = {}
        try:
            await self._ensure_ready()
            async with self._pool.acquire() as conn:
                for table, columns in REGISTRY_COLUMNS.items():
                    query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"  # noqa: S608
                    rows[table] = [tuple(r) for r in await conn.fetch(query)]
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store {self._where}: {_explain(exc)}") from exc
        return registry_from_rows(rows)

    async def presses(self, since: int | None, until: int | None) -> AsyncIterator[StoredPress]:
        where, args = _time_window("occurred_at", "to_timestamp({})", since, until)
        hour_where, _ = _time_window("hour", "to_timestamp({})", since, until)
        hour_where = f"{hour_where} AND count > 0" if hour_where else " WHERE count > 0"
        # Hour counts come as one row per button and hour, seq being the batch_seq.
        query = (
            f"{_SELECT_PRESSES}{where} UNION ALL {_SELECT_HOURS}{hour_where} ORDER BY 3, 1, 2, 6"
        )
        async for row in self._stream(query, args):
            yield StoredPress(*row)

    async def rejected(self, since: int | None, until: int | None) -> AsyncIterator[StoredReject]:
        where, args = _time_window("received_at_ms", "{} * 1000", since, until)
        query = f"{_SELECT_REJECTED}{where} ORDER BY received_at_ms, uid"
        async for row in self._stream(query, args):
            yield StoredReject(row[0], RejectRow(*row[1:]))

    async def _stream(self, query: str, args: list[int]) -> AsyncIterator[asyncpg.Record]:
        """Rows through a server-side cursor, a chunk at a time, from one snapshot."""
        try:
            await self._ensure_ready()
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                async for row in conn.cursor(query, *args, prefetch=_STREAM_CHUNK):
                    yield row
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store {self._where}: {_explain(exc)}") from exc

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                async with self._pool.acquire() as conn:
                    await migrate(conn)
                self._ready = True


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute(CREATE_STAGE)


# --- helpers --------------------------------------------------------------------


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def _reject_args(rejects: Sequence[StoredReject]) -> list[tuple[Any, ...]]:
    rows = [reject_values(r) for r in rejects]
    rows.sort(key=lambda row: row[0])  # one lock order for every writer
    return rows


def _time_window(
    column: str, value: str, since: int | None, until: int | None
) -> tuple[str, list[int]]:
    """A WHERE clause for since <= column < until, in seconds; an open end is left out.

    ``value`` turns a parameter in seconds into the column's type. An open end
    is left out rather than replaced by a huge value, which timestamptz could
    not hold (and the planner could not use to prune partitions).
    """
    tests, args = [], []
    for bound, operator in ((since, ">="), (until, "<")):
        if bound is not None:
            args.append(bound)
            tests.append(f"{column} {operator} {value.format(f'${len(args)}::bigint')}")
    return (" WHERE " + " AND ".join(tests) if tests else ""), args


def _describe(url: str) -> str:
    """host:port/db of a URL, for messages: never its password."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(bad URL)"
    return f"{parts.hostname or 'localhost'}{port}{parts.path or '/'}"


def _explain(exc: BaseException) -> str:
    """The error, with the one it replaced: a failed rollback hides why the write failed."""
    cause = exc.__context__
    if cause is not None and str(cause) and str(cause) != str(exc):
        return f"{exc} (after: {cause})"
    return str(exc)
