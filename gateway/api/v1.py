"""Version 1 of the vendor API: folders (the location tree) and surveys, JSON only.

A v1 survey is a survey at one experience point; its key is
``LOCATION-SURVEY`` (e.g. ``11-100``). A bare survey id (``100``) names the
survey at every experience point the token sees where it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import schemas
from gateway.api.auth import Principal
from gateway.api.catalog import View
from gateway.api.errors import NotFound
from gateway.api.feedback import Selection, feedback_id
from gateway.api.metrics import buckets
from gateway.api.output import json_response, json_stream
from gateway.api.routing import get_and_head
from gateway.api.rows import option_id
from gateway.api.state import api_state, v1_principal
from gateway.api.timeutil import format_utc, format_v1, v1_window
from gateway.registry.terminals import Location, Survey

router = APIRouter(prefix="/v1", tags=["v1"])
Auth = Annotated[Principal, Depends(v1_principal)]
Truncate = Literal["hour", "day", "week", "month", "quarter", "year"]


def _get(path: str, **kwargs: Any) -> Callable[[Any], Any]:
    return get_and_head(router, path, **kwargs)


@dataclass(frozen=True, slots=True)
class V1Survey:
    key: str
    survey: Survey
    points: list[Location]
    terminals: list[int]

    def describe(self, first_seen: dict[int, int]) -> dict[str, Any]:
        """As the vendor gives a survey; its active period runs from its first press on."""
        s, point = self.survey, self.points[0]
        zone = ZoneInfo(point.timezone or "UTC")
        starts = [first_seen[t] for t in self.terminals if t in first_seen]
        periods = []
        if starts:
            offset = datetime.fromtimestamp(min(starts), zone).utcoffset()
            seconds = int(offset.total_seconds()) if offset is not None else 0
            periods.append({"start": format_v1(min(starts), seconds), "end": None})
        return {
            "key": self.key,
            "question": {"key": s.id, "name": s.question, "locale": s.locale},
            "folder": {"key": point.id, "name": point.name},
            "timeZone": point.timezone or "UTC",
            "activePeriods": periods,
            "surveyType": "TERMINAL",
            "indexType": "HAPPY",
            "feedbackScale": "FIVE" if s.scale == "five" else "FOUR",
        }


def _number(text: str) -> bool:
    """Digits that int() reads (str.isdigit() also takes superscripts and other scripts)."""
    return text.isascii() and text.isdigit() and len(text) < 20


def _resolve_survey(view: View, key: str) -> V1Survey:
    location_part, sep, survey_part = key.partition("-")
    if not sep:
        location_part, survey_part = "", key
    if not _number(survey_part) or (sep and not _number(location_part)):
        raise NotFound(f"survey {key!r}")
    survey = view.surveys.get(int(survey_part))
    if survey is None:
        raise NotFound(f"survey {key!r}")
    if sep:
        point = view.locations.get(int(location_part))
        if point is None or not point.is_experience_point:
            raise NotFound(f"survey {key!r}")
        terminals = view.select_terminals(survey.id, point.id)
        points = [point]
    else:
        terminals = view.select_terminals(survey.id)
        points = sorted({view.locations[t.location] for t in terminals}, key=lambda x: x.id)
    if not terminals:
        raise NotFound(f"survey {key!r}")
    return V1Survey(key, survey, points, sorted(t.id for t in terminals))


def _folder(
    view: View, loc: Location, seen: dict[int, int] | None, *, nested: bool
) -> dict[str, Any]:
    """A folder; with ``seen`` (first presses), an experience point lists its surveys."""
    folder: dict[str, Any] = {"key": loc.id, "name": loc.name}
    children = view.children(loc.id)
    if nested and children:
        folder["folders"] = [_folder(view, c, seen, nested=True) for c in children]
    if seen is not None and loc.is_experience_point:
        folder["surveys"] = [
            _resolve_survey(view, f"{loc.id}-{s.id}").describe(seen)
            for s in view.surveys_at(loc.id)
        ]
    return folder


def _root(view: View, seen: dict[int, int] | None) -> dict[str, Any]:
    return {
        "key": view.company,
        "name": view.company_name,
        "folders": [_folder(view, view.locations[r], seen, nested=True) for r in view.roots],
    }


async def _seen(request: Request, view: View, wanted: bool) -> dict[int, int] | None:
    if not wanted:
        return None
    return await api_state(request).db.first_seen(sorted(view.terminals))


SurveysFlag = Annotated[bool, Query(description="true: leaf folders list their surveys")]


@_get("/folders", responses=schemas.ok(schemas.Folder))
async def folders(request: Request, principal: Auth, surveys: SurveysFlag = False) -> Response:
    """The root folder (the company) with every folder the token sees nested under it."""
    return json_response(_root(principal.view, await _seen(request, principal.view, surveys)))


def _find_folder(view: View, key: str) -> Location | None:
    """None for the root (the company); NotFound for anything not seen."""
    if key == view.company:
        return None
    if _number(key) and int(key) in view.locations:
        return view.locations[int(key)]
    raise NotFound(f"folder {key!r}")


@_get("/folders/{key}", responses=schemas.ok(schemas.Folder))
async def folder(
    request: Request, key: str, principal: Auth, surveys: SurveysFlag = False
) -> Response:
    view = principal.view
    loc = _find_folder(view, key)
    seen = await _seen(request, view, surveys)
    if loc is None:
        return json_response(_root(view, seen))
    return json_response(_folder(view, loc, seen, nested=True))


@_get("/folders/{key}/children", responses=schemas.ok(list[schemas.FolderRef]))  # type: ignore[arg-type]
async def children(
    request: Request, key: str, principal: Auth, surveys: SurveysFlag = False
) -> Response:
    """The folder's direct children (each without its own subtree)."""
    view = principal.view
    loc = _find_folder(view, key)
    below = [view.locations[r] for r in view.roots] if loc is None else view.children(loc.id)
    seen = await _seen(request, view, surveys)
    return json_response([_folder(view, c, seen, nested=False) for c in below])


@_get("/surveys/{key}", responses=schemas.ok(schemas.V1Survey))
async def survey(request: Request, key: str, principal: Auth) -> Response:
    target = _resolve_survey(principal.view, key)
    seen = await api_state(request).db.first_seen(target.terminals)
    return json_response(target.describe(seen))


DateParam = Annotated[
    str | None,
    Query(description="yyyy-MM-dd (local time at the survey) or yyyy-MM-ddTHH:mm:ss[.SSS]Z|±HHmm"),
]


@_get("/surveys/{key}/results", responses=schemas.ok(list[schemas.Bucket]))  # type: ignore[arg-type]
async def results(
    request: Request,
    *,
    key: str,
    principal: Auth,
    date_start: DateParam = None,
    date_end: Annotated[str | None, Query(description="exclusive; as date_start")] = None,
    truncate: Annotated[Truncate, Query(description="bucket size; default day")] = "day",
    includeMisuse: bool = False,  # noqa: N803
) -> Response:
    """Counts per bucket and button, misuse left out unless asked for; all time by default."""
    target = _resolve_survey(principal.view, key)
    window = v1_window(date_start, date_end)
    everywhere = principal.view.catalog.terminals_of(target.survey.id)
    found = await api_state(request).db.counts(
        target.terminals, [target.survey.id], window,
        include_misuse=includeMisuse, grain="hour" if truncate == "hour" else "day",
        whole_survey=set(target.terminals) == everywhere,
    )  # fmt: skip
    zone = ZoneInfo(target.points[0].timezone or "UTC")
    return json_response(buckets(found, truncate, target.survey.buttons, zone))


@_get("/surveys/{key}/rawresults", responses=schemas.ok(list[schemas.RawResult]))  # type: ignore[arg-type]
async def rawresults(
    request: Request,
    key: str,
    principal: Auth,
    date_start: DateParam = None,
    date_end: Annotated[str | None, Query(description="exclusive; as date_start")] = None,
) -> Response:
    """Every press, misuse included and flagged; to the second, or to the hour for SMS counts."""
    target = _resolve_survey(principal.view, key)
    selection = Selection(target.terminals, v1_window(date_start, date_end), include_misuse=True)

    async def rows() -> AsyncIterator[dict[str, Any]]:
        async for f in api_state(request).db.feedback(selection):
            yield {
                "feedbackId": feedback_id(f),
                "ts": format_v1(f.utc, f.utc_offset_s),
                "utcTime": format_utc(f.utc),
                "timePrecision": "hour" if f.precision == "hour" else "second",
                "buttonIndex": max(0, f.button - 1),
                "misuse": f.misuse,
                "smileyId": f.terminal_id,
                "followup": f.followup,
                "transport": f.transport,
                "clockCorrected": f.clock_corrected,
            }

    return json_stream(rows())


@_get("/surveys/{key}/followup", responses=schemas.ok(list[schemas.FollowupAnswer]))  # type: ignore[arg-type]
async def followup(
    request: Request,
    *,
    key: str,
    principal: Auth,
    date_start: DateParam = None,
    date_end: Annotated[str | None, Query(description="exclusive; as date_start")] = None,
    includeMisuse: bool = False,  # noqa: N803
) -> Response:
    """Follow-up answers (option 1..16 after the press), misuse left out unless asked for."""
    target = _resolve_survey(principal.view, key)
    selection = Selection(
        target.terminals, v1_window(date_start, date_end), includeMisuse, followups_only=True
    )

    async def rows() -> AsyncIterator[dict[str, Any]]:
        async for f in api_state(request).db.feedback(selection):
            yield {
                "feedbackId": feedback_id(f),
                "ts": format_v1(f.utc, f.utc_offset_s),
                "utcTime": format_utc(f.utc),
                "buttonIndex": max(0, f.button - 1),
                "option": f.followup,
                "followupOptionId": option_id(target.survey.id, f.followup),
                "misuse": f.misuse,
                "smileyId": f.terminal_id,
            }

    return json_stream(rows())


@_get("/surveys/{key}/openfeedback", responses=schemas.ok(list[dict[str, Any]]))  # type: ignore[arg-type]
async def openfeedback(key: str, principal: Auth) -> Response:
    """Free-text feedback: terminals have no keyboard, so always empty."""
    _resolve_survey(principal.view, key)
    return json_response([])
