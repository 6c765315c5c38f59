"""Feedback and registry entries as the vendor's v2 rows, with our extensions at the end."""

from __future__ import annotations

from typing import Any

from gateway.api.catalog import View
from gateway.api.feedback import Feedback, feedback_id
from gateway.api.timeutil import format_local, format_utc
from gateway.registry.terminals import Survey

FOLLOWUP_OPTIONS = 16  # a terminal's follow-up answers are options 1..16
EXTENSIONS = ("utcTime", "timePrecision", "transport", "clockCorrected")
BUTTON_COLUMNS = (
    "feedbackId", "smileyId", "localTime", "surveyId", "experiencePointId", "buttonIndex",
    "misuse", "position", "ui", "smileyType", *EXTENSIONS,
)  # fmt: skip
FOLLOWUP_COLUMNS = (
    "feedbackId", "smileyId", "localTime", "surveyId", "experiencePointId", "buttonIndex",
    "misuse", "position", "ui", "smileyType", "followupQuestionId", "followupOptionId",
    *EXTENSIONS,
)  # fmt: skip


def option_id(survey: int, option: int) -> int:
    """The follow-up option id of a survey's option 1..16."""
    return survey * 100 + option


def button_row(f: Feedback, view: View) -> dict[str, Any]:
    terminal = view.terminals[f.terminal_id]
    return {
        "feedbackId": feedback_id(f),
        "smileyId": f.terminal_id,
        "localTime": format_local(f.utc, f.utc_offset_s),
        "surveyId": terminal.survey,
        "experiencePointId": terminal.location,
        "buttonIndex": max(0, f.button - 1),
        "misuse": f.misuse,
        "position": 0,
        "ui": "physical",
        "smileyType": "SMILEY_TERMINAL",
        "utcTime": format_utc(f.utc),
        "timePrecision": "hour" if f.precision == "hour" else "second",
        "transport": f.transport,
        "clockCorrected": f.clock_corrected,
    }


def followup_row(f: Feedback, view: View) -> dict[str, Any]:
    row = button_row(f, view)
    survey = row["surveyId"]
    extensions = {k: row.pop(k) for k in EXTENSIONS}
    row["position"] = 1
    row["followupQuestionId"] = survey
    row["followupOptionId"] = option_id(survey, f.followup)
    row.update(extensions)
    return row


def locale(value: str) -> str:
    """``en-US`` as the vendor writes it (``en_US``); anything unusable as ``en_US``."""
    language, _, country = value.replace("-", "_").partition("_")
    if len(language) == 2 and language.isalpha() and language.isascii():
        if not country:
            return language.lower()
        if len(country) == 2 and country.isalpha() and country.isascii():
            return f"{language.lower()}_{country.upper()}"
    return "en_US"


def survey_row(s: Survey) -> dict[str, Any]:
    return {
        "surveyId": s.id,
        "questionId": s.id,
        "defaultLocale": locale(s.locale),
        "questionTextInDefaultLocale": s.question,
        "surveyType": "CUSTOMER",
        "feedbackScale": s.scale,
        "indexType": "HAPPY",
        "state": "active",
        "misuseIntervalSeconds": s.misuse_interval_s,
    }


SURVEY_COLUMNS = (
    "surveyId", "questionId", "defaultLocale", "questionTextInDefaultLocale", "surveyType",
    "feedbackScale", "indexType", "state", "misuseIntervalSeconds",
)  # fmt: skip
