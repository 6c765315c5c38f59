"""What the query side reads from a central store: the reader protocol and its rows.

Each backend has its reader beside its writer (``sqlite_reads.py``,
``postgres_reads.py``); both answer the same query methods, written once in
``sql_reader.py`` over the few SQL differences a :class:`Dialect` names. Times
cross this boundary as Unix seconds: the SQLite store keeps INTEGER seconds,
PostgreSQL keeps timestamptz.

The optional parts of the schema (``press.misuse``, the ``hourly`` table of
hour-precision counts) are probed once at open, so a reader works on a store
that does not have them yet: misuse reads as false, hour counts as none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias

Row: TypeAlias = Sequence[Any]
Query: TypeAlias = tuple[str, Sequence[Any]]

STREAM_CHUNK = 2000
WIDEST_UTC_OFFSET_S = 14 * 3600  # of any zone: local times lie within this of UTC


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that differs between the two stores."""

    name: str  # "sqlite" or "postgres"
    has_misuse: bool
    has_hourly: bool
    has_rollup: bool  # press_hourly: always on PostgreSQL, on SQLite once the store keeps one
    has_survey_rollup: bool = False  # press_hourly_survey: one row per survey and hour

    def epoch(self, column: str) -> str:
        """``column`` (a stored time) as Unix seconds."""
        if self.name == "postgres":
            return f"extract(epoch FROM {column})::bigint"
        return column

    def time_arg(self, seconds: int) -> Any:
        """A bound compared with a stored time column."""
        if self.name == "postgres":
            return datetime.fromtimestamp(seconds, UTC)
        return seconds

    def shifted(self, column: str, offset: str) -> str:
        """A stored time moved by ``offset`` seconds, still comparable with time_arg()."""
        if self.name == "postgres":
            return f"({column} + {offset} * interval '1 second')"
        return f"({column} + {offset})"

    def misuse(self, alias: str) -> str:
        """The press's misuse flag (false where the store does not keep one yet)."""
        if not self.has_misuse:
            return "false" if self.name == "postgres" else "0"
        return f"{alias}.misuse"

    def not_misuse(self, alias: str) -> str:
        if not self.has_misuse:
            return "true" if self.name == "postgres" else "1"
        return f"NOT {alias}.misuse" if self.name == "postgres" else f"{alias}.misuse = 0"

    def in_list(self, column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
        """``column IN values`` with the values bound as one parameter."""
        if self.name == "postgres":
            return f"{column} = ANY(?::bigint[])", [list(values)]
        within = f"{column} IN (SELECT value FROM json_each(?))"  # noqa: S608 (a column name)
        return within, [json.dumps(list(values))]

    def each_value(self, values: Sequence[int]) -> tuple[str, Any]:
        """A table ``t`` of one ``value`` column holding ``values``, and its one argument."""
        if self.name == "postgres":
            return "unnest(?::bigint[]) AS t(value)", list(values)
        return "json_each(?) AS t", json.dumps(list(values))


@dataclass(frozen=True, slots=True)
class Window:
    """start <= t < end, in Unix seconds; ``local``: t is the wall-clock time read as UTC."""

    start: int
    end: int
    local: bool


@dataclass(frozen=True, slots=True)
class Selection:
    """Which feedback to read: these terminals' presses within a window."""

    terminals: Sequence[int]
    window: Window | None
    include_misuse: bool = False
    followups_only: bool = False
    descending: bool = False


@dataclass(slots=True)  # not frozen: a page makes 10,000, and frozen __init__ is slower
class Feedback:
    """One press: to the second (``precision`` "second") or to the hour ("hour")."""

    utc: int  # Unix seconds; for an hour count, the start of its hour
    kind: int  # 0 press, 1 expanded hour count (the tie-break after time)
    terminal_id: int
    key: int  # seq, or the button of an hour count
    n: int  # 1..count within an hour count; 0 for a press
    utc_offset_s: int
    button: int  # 1-based, as stored
    followup: int
    misuse: bool
    precision: str
    transport: str
    clock_corrected: bool

    def sort_key(self) -> tuple[int, int, int, int, int]:
        return (self.utc, self.kind, self.terminal_id, self.key, self.n)


@dataclass(frozen=True, slots=True)
class Count:
    """``count`` presses of ``button`` (1-based) in one group.

    ``local`` is the group's start in wall-clock seconds (hour or day grain),
    ``offset`` the UTC offset of an hour group; ``terminal_id`` for no grain.
    """

    local: int
    offset: int
    terminal_id: int
    button: int
    count: int


@dataclass(frozen=True, slots=True)
class CatalogRows:
    """The registry as stored, without terminal keys (the query side never needs them)."""

    companies: list[Row]  # id, name
    locations: list[Row]  # id, company, name, parent, timezone
    surveys: list[Row]  # id, company, question, locale, scale, misuse_interval_s
    terminals: list[Row]  # id, location, survey, name


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One API credential, without its secret."""

    id: int
    client_id: str
    company: str
    scope: int | None
    name: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class NewToken:
    client_id: str
    token_sha256: str
    company: str
    scope: int | None
    name: str
    created_at: int
    expires_at: int | None


class StoreReader(Protocol):
    """A read-only view of the central store (plus the API's own token table)."""

    dialect: Dialect

    async def catalog(self) -> CatalogRows: ...

    async def counts(
        self,
        terminals: Sequence[int],
        surveys: Sequence[int],
        window: Window | None,
        *,
        include_misuse: bool = False,
        grain: str | None = None,
        whole_survey: bool = False,
    ) -> list[Count]:
        """Every non-empty group's count per button; ``grain`` "hour", "day" or None (terminal).

        ``whole_survey``: ``terminals`` are every terminal of ``surveys``, so a
        per-survey rollup may answer instead of one per terminal.
        """

    async def max_seq(self, terminal_id: int) -> int | None:
        """The highest seq the store holds for the terminal, None if it holds none."""

    async def first_seen(self, terminals: Sequence[int]) -> dict[int, int]:
        """Each terminal's earliest press or hour count (Unix seconds)."""

    def feedback(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> AsyncIterator[Feedback]:
        """The selected feedback in time order, from ``offset``, at most ``limit``; streamed."""

    async def ensure_token_table(self) -> None: ...
    async def add_token(self, token: NewToken) -> None: ...
    async def tokens(self) -> list[TokenInfo]: ...
    async def token_of_client(self, client_id: str) -> TokenInfo | None: ...
    async def token_by_hash(self, token_sha256: str) -> tuple[TokenInfo, str] | None:
        """The credential with this token hash, and the hash as stored."""

    async def revoke_token(self, client_id: str, at: int) -> bool:
        """Revoke by client id; False if there is no such (unrevoked) credential."""

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Any read, with ``?`` placeholders (diagnostics and benchmarks)."""

    def streams(
        self, queries: Sequence[Query]
    ) -> AbstractAsyncContextManager[list[AsyncIterator[Row]]]:
        """Several queries read side by side, each streamed in chunks.

        Their connections are taken together, under one lock, so concurrent
        readers of several streams never each hold part of what they need.
        """

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a writing statement (token management only); the number of rows it changed."""

    async def close(self) -> None: ...
