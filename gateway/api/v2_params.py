"""The parameters v2 lists share, validated as the vendor documents them (400 naming one)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query

from gateway.api.auth import Principal
from gateway.api.state import v2_principal
from gateway.api.timeutil import PERIOD_PATTERN, v2_window

MAX_LIMIT = 10000

Auth = Annotated[Principal, Depends(v2_principal)]
Format = Annotated[Literal["json", "csv"], Path(description="json or csv")]
Separator = Annotated[
    str, Query(min_length=1, max_length=1, description="CSV field separator (CSV only)")
]
Id = Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)]


def DateQuery(description: str) -> Any:  # noqa: N802 (reads as the Query it is)
    return Query(
        description=f"YYYY-MM-DD, a day at each experience point; {description}. At most one"
        " year from startDate to endDate, else 400.",
        json_schema_extra={"format": "date"},
    )


class FeedbackQuery:
    """The filter and paging parameters every feedback list takes."""

    def __init__(  # noqa: PLR0917 (FastAPI reads the parameters from the signature)
        self,
        csvSeparator: Separator = ",",  # noqa: N803
        surveyId: Id = None,  # noqa: N803
        experiencePointId: Id = None,  # noqa: N803
        period: Annotated[
            str | None,
            Query(
                description="today, yesterday, this-week, last-week, this-month,"
                " last-month, this-year, last-year, YYYY, YYYY-MM or YYYY-qN (UTC dates; weeks"
                " start on Monday). startDate/endDate take precedence.",
                json_schema_extra={"pattern": PERIOD_PATTERN},
            ),
        ] = None,
        startDate: Annotated[str | None, DateQuery("inclusive; default today")] = None,  # noqa: N803
        endDate: Annotated[str | None, DateQuery("exclusive; default tomorrow")] = None,  # noqa: N803
        includeMisuse: bool = False,  # noqa: N803
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_LIMIT,
                description="default 1000; a CSV without limit is the whole selection, streamed",
            ),
        ] = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> None:
        self.separator = csvSeparator
        self.survey = surveyId
        self.point = experiencePointId
        self.window = v2_window(period, startDate, endDate)
        self.include_misuse = includeMisuse
        self.offset = offset
        self.limit = limit
        self.descending = order == "desc"


Params = Annotated[FeedbackQuery, Depends()]
