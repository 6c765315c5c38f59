"""Answers as JSON or CSV; feedback lists paged (bounded memory) or streamed (CSV export)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from starlette.responses import Response, StreamingResponse

from gateway.api.errors import BadParameter

CSV_CHUNK_ROWS = 500
JSON_CHUNK_ROWS = 500


def json_response(body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        media_type="application/json",
        headers=dict(headers or {}),
    )


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def csv_writer(out: io.StringIO, separator: str) -> Any:
    if len(separator) != 1:
        raise BadParameter("csvSeparator", "must be exactly one character")
    quote = "'" if separator == '"' else '"'  # a separator of " quotes with '
    try:
        return csv.writer(out, delimiter=separator, quotechar=quote, lineterminator="\r\n")
    except (TypeError, ValueError, csv.Error) as exc:
        raise BadParameter("csvSeparator", f"not usable: {exc}") from None


def csv_response(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    separator: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    out = io.StringIO()
    writer = csv_writer(out, separator)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return Response(out.getvalue(), media_type="text/csv", headers=dict(headers or {}))


def table_response(
    fmt: str, columns: Sequence[str], rows: list[dict[str, Any]], separator: str
) -> Response:
    """A whole (small) list as ``.json`` or ``.csv``."""
    if fmt == "csv":
        return csv_response(columns, rows, separator)
    return json_response(rows)


def csv_stream(
    columns: Sequence[str],
    rows: AsyncIterator[Mapping[str, Any]],
    separator: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Rows written as they are read, a chunk at a time: constant memory for any size."""
    out = io.StringIO()
    writer = csv_writer(out, separator)  # a bad separator fails before the answer starts

    async def body() -> AsyncIterator[str]:
        writer.writerow(columns)
        pending = 1
        async for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
            pending += 1
            if pending >= CSV_CHUNK_ROWS:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
                pending = 0
        yield out.getvalue()

    return StreamingResponse(body(), media_type="text/csv", headers=dict(headers or {}))


def json_stream(rows: AsyncIterator[Any]) -> Response:
    """A JSON array written as it is read."""

    async def body() -> AsyncIterator[str]:
        yield "["
        first = True
        chunk: list[str] = []
        async for row in rows:
            chunk.append(("" if first else ",") + json.dumps(row, ensure_ascii=False))
            first = False
            if len(chunk) >= JSON_CHUNK_ROWS:
                yield "".join(chunk)
                chunk.clear()
        yield "".join(chunk) + "]"

    return StreamingResponse(body(), media_type="application/json")
