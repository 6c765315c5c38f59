"""Response schemas for our OpenAPI document (the vendor's, plus our extensions).

Handlers build their answers directly (pydantic is not on the hot path); these
models only describe them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


def ok(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}, **ERRORS}


def ok_list(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": list[model],  # type: ignore[valid-type]
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "headers": {
                "X-More-Available": {"schema": {"type": "string", "enum": ["true", "false"]}},
                "Link": {"schema": {"type": "string"}, "description": 'rel="next" when more'},
            },
        },
        **ERRORS,
    }


class Error(BaseModel):
    status: int
    error: str
    parameter: str | None = Field(None, description="the query parameter at fault")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "a parameter is malformed or out of range; named"},
    401: {"model": Error, "description": "missing or wrong credentials"},
    404: {"model": Error, "description": "absent, or outside the token's scope"},
    429: {
        "model": Error,
        "description": "the token's rate limit ([api] rate_limit) is used up",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

_EXTENSIONS_DOC = "Extension: "


class ButtonFeedback(BaseModel):
    feedbackId: str = Field(  # noqa: N815 (the vendor's field names)
        description="UUID, stable: uuid5 of terminal_id:seq, or terminal_id:hour:button:n"
        " for the n-th press of an hour count",
        json_schema_extra={"format": "uuid"},
    )
    smileyId: int  # noqa: N815
    localTime: str = Field(  # noqa: N815
        description="Wall-clock time at the experience point with its offset. For an hour"
        " count (timePrecision hour) the start of the hour: minutes and seconds are not known",
        json_schema_extra={"format": "date-time"},
    )
    surveyId: int  # noqa: N815
    experiencePointId: int  # noqa: N815
    buttonIndex: int = Field(ge=0, le=10)  # noqa: N815
    misuse: bool
    position: int = Field(ge=0)
    ui: Literal["physical"]
    smileyType: Literal["SMILEY_TERMINAL"]  # noqa: N815
    utcTime: str = Field(  # noqa: N815
        description=_EXTENSIONS_DOC + "the same instant in UTC",
        json_schema_extra={"format": "date-time"},
    )
    timePrecision: Literal["second", "hour"] = Field(  # noqa: N815
        description=_EXTENSIONS_DOC + "second (uploaded over a data connection) or hour"
        " (an hourly count sent by SMS)"
    )
    transport: str = Field(description=_EXTENSIONS_DOC + "tcp, mqtt or sms")
    clockCorrected: bool = Field(  # noqa: N815
        description=_EXTENSIONS_DOC + "the time was corrected for a wrong terminal clock"
    )


class FollowupFeedback(ButtonFeedback):
    followupQuestionId: int  # noqa: N815
    followupOptionId: int  # noqa: N815


class TokenIntrospection(BaseModel):
    token_id: int
    token_name: str
    scopes: list[str]


class ExperiencePoint(BaseModel):
    experiencePointId: int  # noqa: N815
    name: str
    parent: int | None = None
    type: Literal["GROUP", "EXPERIENCE-POINT"]
    timeZone: str | None = Field(None, description=_EXTENSIONS_DOC + "IANA zone")  # noqa: N815


class Survey(BaseModel):
    surveyId: int  # noqa: N815
    questionId: int  # noqa: N815
    defaultLocale: str  # noqa: N815
    questionTextInDefaultLocale: str  # noqa: N815
    surveyType: Literal["CUSTOMER"]  # noqa: N815
    feedbackScale: Literal["four", "five"]  # noqa: N815
    indexType: Literal["HAPPY"]  # noqa: N815
    state: Literal["active"]
    misuseIntervalSeconds: int = Field(description=_EXTENSIONS_DOC + "misuse interval")  # noqa: N815


class Question(BaseModel):
    questionId: int  # noqa: N815
    defaultLocale: str  # noqa: N815
    questionTextInDefaultLocale: str  # noqa: N815


class FollowupQuestion(BaseModel):
    followupQuestionId: int  # noqa: N815
    surveyId: int  # noqa: N815
    positive: bool
    questionTextInDefaultLocale: str  # noqa: N815


class FollowupOption(BaseModel):
    followupOptionId: int  # noqa: N815
    followupQuestionId: int  # noqa: N815
    optionTextInDefaultLocale: str  # noqa: N815
    option: int = Field(description=_EXTENSIONS_DOC + "the option number 1..16 terminals send")


class Smiley(BaseModel):
    smileyId: int  # noqa: N815
    name: str
    serialNumber: str  # noqa: N815
    smileyType: Literal["SMILEY_TERMINAL"]  # noqa: N815
    experiencePointId: int  # noqa: N815
    surveyId: int  # noqa: N815


class HappyIndex(BaseModel):
    surveyId: int  # noqa: N815
    responses: int
    buttonCounts: list[int] = Field(description="most negative first")  # noqa: N815
    happyIndex: int | None = Field(  # noqa: N815
        description="0..100: buttons weighted evenly from 0 to 100, mean, rounded half up;"
        " null without responses"
    )


class Folder(BaseModel):
    key: int | str
    name: str
    folders: list[Folder] | None = None
    surveys: list[V1Survey] | None = None


class Question1(BaseModel):
    key: int
    name: str
    locale: str


class FolderRef(BaseModel):
    key: int | str
    name: str


class V1Survey(BaseModel):
    key: str = Field(description="LOCATION-SURVEY; a bare survey id names every point it runs at")
    question: Question1
    folder: FolderRef
    timeZone: str  # noqa: N815
    activePeriods: list[dict[str, str | None]]  # noqa: N815
    surveyType: Literal["TERMINAL"]  # noqa: N815
    indexType: Literal["HAPPY"]  # noqa: N815
    feedbackScale: Literal["FOUR", "FIVE"]  # noqa: N815


class Bucket(BaseModel):
    ts: str = Field(description="bucket start, yyyy-MM-ddTHH:mm:ss.SSS with ±HHmm or Z")
    data: list[int] = Field(description="counts per button, most negative first")
    happyIndex: int | None = Field(description=_EXTENSIONS_DOC + "Happy Index of the bucket")  # noqa: N815


class RawResult(BaseModel):
    feedbackId: str  # noqa: N815
    ts: str
    utcTime: str  # noqa: N815
    timePrecision: Literal["second", "hour"]  # noqa: N815
    buttonIndex: int  # noqa: N815
    misuse: bool
    smileyId: int  # noqa: N815
    followup: int
    transport: str
    clockCorrected: bool  # noqa: N815


class FollowupAnswer(BaseModel):
    feedbackId: str  # noqa: N815
    ts: str
    utcTime: str  # noqa: N815
    buttonIndex: int  # noqa: N815
    option: int
    followupOptionId: int  # noqa: N815
    misuse: bool
    smileyId: int  # noqa: N815


Folder.model_rebuild()
