"""Checks every endpoint applies to its query string before anything else."""

from __future__ import annotations

from starlette.requests import Request

from gateway.api.errors import BadParameter

KNOWN = frozenset({
    "auth", "csvSeparator", "surveyId", "experiencePointId", "period", "startDate", "endDate",
    "includeMisuse", "includeSpam", "offset", "limit", "order", "rootExperiencePointId", "type",
    "questionId", "followupQuestionId", "followupOptionId", "surveys", "date_start", "date_end",
    "truncate",
})  # fmt: skip
"""Every query parameter the API reads; others are ignored, as the vendor does."""


async def single_values(request: Request) -> None:
    """400 for a parameter given twice: which one was meant is not ours to guess."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen and name in KNOWN:
            raise BadParameter(name, "given more than once")
        seen.add(name)
