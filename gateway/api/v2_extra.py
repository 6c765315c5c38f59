"""The rest of the vendor's v2 lists: served, validated, and empty where terminals have nothing.

Smiley terminals have no keyboard, camera or contact form and the gateway
keeps no alerts or users, so these lists are always empty; they still check
their parameters and credentials like the others, so a client written for the
vendor runs unchanged. Question localizations give each survey's one question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from gateway.api import schemas
from gateway.api.output import csv_response, json_response, table_response
from gateway.api.routing import get_and_head
from gateway.api.rows import locale
from gateway.api.v2_params import Auth, Format, Id, Params, Separator

router = APIRouter(prefix="/v2", tags=["v2 (always empty for terminals)"])

_EMPTY_FEEDBACK = {
    "text-feedbacks": ("text", "textInEnglish", "spam", "categories", "themes"),
    "demographics": ("gender", "age"),
    "contact-details": ("name", "email", "phoneNumber"),
    "metadata": ("key", "value"),
}
_COMMON = (
    "feedbackId", "smileyId", "localTime", "surveyId", "experiencePointId", "buttonIndex",
    "misuse", "position", "smileyType",
)  # fmt: skip
_EMPTY_LISTS = {
    "company-custom-data": ("id", "label", "type", "options"),
    "follow-up-question-localizations": ("followupQuestionId", "locale", "text"),
    "follow-up-option-localizations": ("followupOptionId", "locale", "text"),
    "alert-specifications": ("alertSpecificationId", "surveyId", "experiencePointId"),
    "users": ("userId", "email", "firstName", "lastName", "rootExperiencePointId", "role"),
}
_EMPTY_WINDOWED = {
    "alerts": ("alertId", "alertSpecificationId", "surveyId", "experiencePointId", "beginTime"),
    "alert-comments": ("alertCommentId", "alertId", "userId", "time", "comment"),
}
_OK = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **schemas.ERRORS}


def _get(path: str) -> Callable[[Any], Any]:
    return get_and_head(router, path, responses=_OK)


def _empty(fmt: str, columns: tuple[str, ...], separator: str) -> Response:
    headers = {"X-More-Available": "false"}
    if fmt == "csv":
        return csv_response(columns, [], separator, headers)
    return json_response([], headers)


def _register(handler: Callable[..., Any], name: str, prefix: str = "") -> None:
    handler.__name__ = f"list_{name.replace('-', '_')}"
    _get(f"{prefix}/{name}.{{format}}")(handler)


def _feedback_route(name: str, columns: tuple[str, ...]) -> None:
    async def handler(
        format: Format,
        principal: Auth,
        q: Params,
        includeSpam: bool = True,  # noqa: N803
    ) -> Response:
        return _empty(format, columns, q.separator)

    _register(handler, name, "/results")


def _list_route(name: str, columns: tuple[str, ...]) -> None:
    async def handler(
        format: Format,
        principal: Auth,
        csvSeparator: Separator = ",",  # noqa: N803
        followupQuestionId: Id = None,  # noqa: N803
        followupOptionId: Id = None,  # noqa: N803
    ) -> Response:
        return _empty(format, columns, csvSeparator)

    _register(handler, name)


def _windowed_route(name: str, columns: tuple[str, ...]) -> None:
    async def handler(format: Format, principal: Auth, q: Params) -> Response:
        return _empty(format, columns, q.separator)

    _register(handler, name)


for _name, _columns in _EMPTY_FEEDBACK.items():
    _feedback_route(_name, _COMMON + _columns)
for _name, _columns in _EMPTY_LISTS.items():
    _list_route(_name, _columns)
for _name, _columns in _EMPTY_WINDOWED.items():
    _windowed_route(_name, _columns)


@_get("/experience-point-custom-data.{format}")
async def experience_point_custom_data(
    format: Format,
    principal: Auth,
    csvSeparator: Separator = ",",  # noqa: N803
    experiencePointId: Id = None,  # noqa: N803
    rootExperiencePointId: Id = None,  # noqa: N803
) -> Response:
    return _empty(format, ("experiencePointId", "label", "value"), csvSeparator)


@_get("/question-localizations.{format}")
async def question_localizations(
    format: Format,
    principal: Auth,
    csvSeparator: Separator = ",",  # noqa: N803
    questionId: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,  # noqa: N803
) -> Response:
    """Each survey's question in its one locale."""
    rows = [
        {"questionId": s.id, "locale": locale(s.locale), "text": s.question}
        for s in sorted(principal.view.surveys.values(), key=lambda s: s.id)
        if questionId is None or s.id == questionId
    ]
    return table_response(format, ("questionId", "locale", "text"), rows, csvSeparator)
