"""Version 2 of the vendor API: lists as ``.json`` or ``.csv``, feedback paged or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import schemas
from gateway.api.auth import Principal
from gateway.api.catalog import View
from gateway.api.feedback import Feedback, Selection
from gateway.api.metrics import happy_index
from gateway.api.output import csv_response, csv_stream, json_response, table_response
from gateway.api.routing import get_and_head
from gateway.api.rows import (
    BUTTON_COLUMNS,
    FOLLOWUP_COLUMNS,
    FOLLOWUP_OPTIONS,
    SURVEY_COLUMNS,
    button_row,
    followup_row,
    locale,
    option_id,
    survey_row,
)
from gateway.api.state import api_state
from gateway.api.v2_params import Auth, FeedbackQuery, Format, Id, Params, Separator

DEFAULT_LIMIT = 1000

router = APIRouter(prefix="/v2", tags=["v2"])


def _get(path: str, **kwargs: Any) -> Callable[[Any], Any]:
    return get_and_head(router, path, **kwargs)


@_get("/token/introspect", responses=schemas.ok(schemas.TokenIntrospection))
async def token_introspect(principal: Auth) -> Response:
    """The credential's id, name and scopes (``company:ID``, ``location:ID`` when scoped)."""
    token = principal.token
    scopes = ["read", f"company:{token.company}"]
    if token.scope is not None:
        scopes.append(f"location:{token.scope}")
    return json_response({"token_id": token.id, "token_name": token.name, "scopes": scopes})


@_get("/experience-points.{format}", responses=schemas.ok_list(schemas.ExperiencePoint))
async def experience_points(
    format: Format,
    principal: Auth,
    csvSeparator: Separator = ",",  # noqa: N803 (the vendor's parameter names)
    rootExperiencePointId: Id = None,  # noqa: N803
    type: Literal["GROUP", "EXPERIENCE_POINT", "EXPERIENCE-POINT"] | None = None,
) -> Response:
    """Groups and experience points the token sees, each with its parent, depth first."""
    view = principal.view
    roots = view.roots if rootExperiencePointId is None else [rootExperiencePointId]
    rows = []
    for root in roots:
        for loc in view.subtree(root):
            kind = "EXPERIENCE-POINT" if loc.is_experience_point else "GROUP"
            if type is not None and kind != type.replace("_", "-"):
                continue
            row: dict[str, Any] = {"experiencePointId": loc.id, "name": loc.name, "type": kind}
            if loc.parent is not None and loc.parent in view.locations:
                row["parent"] = loc.parent
            if loc.timezone is not None:
                row["timeZone"] = loc.timezone
            rows.append(row)
    columns = ("experiencePointId", "name", "parent", "type", "timeZone")
    return table_response(format, columns, rows, csvSeparator)


@_get("/surveys.{format}", responses=schemas.ok_list(schemas.Survey))
async def surveys(format: Format, principal: Auth, csvSeparator: Separator = ",") -> Response:  # noqa: N803
    rows = [survey_row(s) for s in sorted(principal.view.surveys.values(), key=lambda s: s.id)]
    return table_response(format, SURVEY_COLUMNS, rows, csvSeparator)


@_get("/questions.{format}", responses=schemas.ok_list(schemas.Question))
async def questions(format: Format, principal: Auth, csvSeparator: Separator = ",") -> Response:  # noqa: N803
    """One question per survey; its id is the survey's."""
    rows = [
        {
            "questionId": s.id,
            "defaultLocale": locale(s.locale),
            "questionTextInDefaultLocale": s.question,
        }
        for s in sorted(principal.view.surveys.values(), key=lambda s: s.id)
    ]
    columns = ("questionId", "defaultLocale", "questionTextInDefaultLocale")
    return table_response(format, columns, rows, csvSeparator)


@_get("/follow-up-questions.{format}", responses=schemas.ok_list(schemas.FollowupQuestion))
async def followup_questions(
    format: Format,
    principal: Auth,
    csvSeparator: Separator = ",",  # noqa: N803
) -> Response:
    """One follow-up question per survey (its id is the survey's); terminals do not say its text."""
    rows = [
        {"followupQuestionId": s.id, "surveyId": s.id, "positive": False,
         "questionTextInDefaultLocale": ""}
        for s in sorted(principal.view.surveys.values(), key=lambda s: s.id)
    ]  # fmt: skip
    columns = ("followupQuestionId", "surveyId", "positive", "questionTextInDefaultLocale")
    return table_response(format, columns, rows, csvSeparator)


@_get("/follow-up-options.{format}", responses=schemas.ok_list(schemas.FollowupOption))
async def followup_options(
    format: Format,
    principal: Auth,
    csvSeparator: Separator = ",",  # noqa: N803
) -> Response:
    """Options 1..16 of each survey's follow-up question: id = surveyId * 100 + option."""
    rows = [
        {"followupOptionId": option_id(s.id, n), "followupQuestionId": s.id,
         "optionTextInDefaultLocale": f"option {n}", "option": n}
        for s in sorted(principal.view.surveys.values(), key=lambda s: s.id)
        for n in range(1, FOLLOWUP_OPTIONS + 1)
    ]  # fmt: skip
    columns = ("followupOptionId", "followupQuestionId", "optionTextInDefaultLocale", "option")
    return table_response(format, columns, rows, csvSeparator)


@_get("/smileys.{format}", responses=schemas.ok_list(schemas.Smiley))
async def smileys(format: Format, principal: Auth, csvSeparator: Separator = ",") -> Response:  # noqa: N803
    """The terminals standing in the token's part of the tree (never their keys)."""
    rows = [
        {"smileyId": t.id, "name": t.name or f"terminal {t.id}", "serialNumber": str(t.id),
         "smileyType": "SMILEY_TERMINAL", "experiencePointId": t.location, "surveyId": t.survey}
        for t in sorted(principal.view.terminals.values(), key=lambda t: t.id)
    ]  # fmt: skip
    columns = ("smileyId", "name", "serialNumber", "smileyType", "experiencePointId", "surveyId")
    return table_response(format, columns, rows, csvSeparator)


def _terminals(view: View, survey: int | None, point: int | None) -> list[int]:
    if survey is not None and survey not in view.surveys:
        return []
    if point is not None and point not in view.locations:
        return []
    return sorted(t.id for t in view.select_terminals(survey, point))


async def _feedback_list(
    request: Request,
    fmt: str,
    principal: Principal,
    q: FeedbackQuery,
    *,
    followups: bool,
) -> Response:
    view = principal.view
    db = api_state(request).db
    selection = Selection(
        _terminals(view, q.survey, q.point), q.window, q.include_misuse, followups, q.descending
    )
    to_row = followup_row if followups else button_row
    columns = FOLLOWUP_COLUMNS if followups else BUTTON_COLUMNS
    if fmt == "csv" and q.limit is None:
        rows = _rows(db.feedback(selection, None, q.offset), view, to_row)
        return csv_stream(columns, rows, q.separator, {"X-More-Available": "false"})
    limit = DEFAULT_LIMIT if q.limit is None else q.limit
    page = [r async for r in _rows(db.feedback(selection, limit + 1, q.offset), view, to_row)]
    more = len(page) > limit
    headers = {"X-More-Available": "true" if more else "false"}
    if more:
        page.pop()
        following = request.url.include_query_params(offset=q.offset + limit, limit=limit)
        headers["Link"] = f'<{following}>; rel="next"'
    if fmt == "csv":
        return csv_response(columns, page, q.separator, headers)
    return json_response(page, headers)


async def _rows(
    items: AsyncIterator[Feedback], view: View, to_row: Callable[[Feedback, View], dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    async for item in items:
        yield to_row(item, view)


@_get("/results/button-feedbacks.{format}", responses=schemas.ok_list(schemas.ButtonFeedback))
async def button_feedbacks(
    request: Request, format: Format, principal: Auth, q: Params
) -> Response:
    """Every press, misuse left out unless ``includeMisuse``; hour counts as one row per press."""
    return await _feedback_list(request, format, principal, q, followups=False)


@_get("/results/follow-up-feedbacks.{format}", responses=schemas.ok_list(schemas.FollowupFeedback))
async def followup_feedbacks(
    request: Request, format: Format, principal: Auth, q: Params
) -> Response:
    """Presses that answered a follow-up question (never hour counts: SMS carries none)."""
    return await _feedback_list(request, format, principal, q, followups=True)


@_get("/results/happy-index.{format}", responses=schemas.ok_list(schemas.HappyIndex))
async def happy_index_list(
    request: Request, format: Format, principal: Auth, q: Params
) -> Response:
    """Extension: per survey, counts per button and the Happy Index over the selection."""
    view = principal.view
    terminal_ids = _terminals(view, q.survey, q.point)
    survey_of = {t: view.terminals[t].survey for t in terminal_ids}
    found = await api_state(request).db.counts(
        terminal_ids, sorted(set(survey_of.values())), q.window,
        include_misuse=q.include_misuse,
    )  # fmt: skip
    per_survey: dict[int, list[int]] = {}
    for c in found:
        survey = view.surveys.get(survey_of.get(c.terminal_id, -1))
        if survey is None or not 1 <= c.button <= survey.buttons:
            continue
        per_survey.setdefault(survey.id, [0] * survey.buttons)[c.button - 1] += c.count
    rows: list[dict[str, Any]] = [
        {
            "surveyId": s,
            "responses": sum(data),
            "buttonCounts": data,
            "happyIndex": happy_index(data),
        }
        for s, data in sorted(per_survey.items())
    ]
    if format == "csv":
        flat = [
            {**{k: v for k, v in r.items() if k != "buttonCounts"},
             **{f"button{i}": n for i, n in enumerate(r["buttonCounts"])}}
            for r in rows
        ]  # fmt: skip
        columns = ("surveyId", "responses", "happyIndex", *(f"button{i}" for i in range(5)))
        return table_response(format, columns, flat, q.separator)
    return json_response(rows)
