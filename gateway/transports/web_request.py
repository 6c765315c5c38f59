"""A web smiley's ``POST /w/{slug}/presses`` body: checked whole, then placed in time.

The body (issue #17)::

    {"client": "<id the page keeps>", "sent_at": "<browser clock, ISO 8601>",
     "presses": [{"seq": 0, "at": "<ISO 8601>", "button": 1, "followup": 0, "ui": "qr"}]}

Any fault refuses the whole request (WebPressRefused, with the status and the
quarantine reason), so a browser never has half a request taken.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import WebPressRefused
from gateway.intake.web_ledger import WebPress
from gateway.registry.terminals import Survey
from gateway.rows import PressRow
from gateway.timekeeping import UtcOffsets, browser_clock_offset

MAX_PRESSES = 100
UIS = ("digital", "qr", "link", "email")
CLIENT = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_SEQ = 2**53  # what a page's JavaScript counts exactly

MALFORMED = "WEB_MALFORMED"
TOO_MANY = "WEB_TOO_MANY_PRESSES"
BUTTON = "WEB_BUTTON_OUT_OF_RANGE"
FOLLOWUP_UNKNOWN = "WEB_FOLLOWUP_UNKNOWN"
FOLLOWUP_NOT_ASKED = "WEB_FOLLOWUP_NOT_ASKED"
REASONS = (MALFORMED, TOO_MANY, BUTTON, FOLLOWUP_UNKNOWN, FOLLOWUP_NOT_ASKED)


@dataclass(frozen=True, slots=True)
class BrowserPress:
    seq: int
    at: float
    button: int
    followup: int
    ui: str


@dataclass(frozen=True, slots=True)
class BrowserRequest:
    client: str
    sent_at: float
    presses: tuple[BrowserPress, ...]


def parse_request(body: bytes, survey: Survey) -> BrowserRequest:
    """The request, checked against the survey; raise WebPressRefused saying what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebPressRefused(400, MALFORMED, "the body is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"client", "sent_at", "presses"}:
        raise WebPressRefused(400, MALFORMED, "expected an object of client, sent_at, presses")
    client = data["client"]
    if not isinstance(client, str) or not CLIENT.fullmatch(client):
        raise WebPressRefused(400, MALFORMED, "client must be 8-64 of A-Z, a-z, 0-9, _ and -")
    sent_at = _instant("sent_at", data["sent_at"])
    presses = data["presses"]
    if not isinstance(presses, list) or not presses:
        raise WebPressRefused(400, MALFORMED, "presses must be a non-empty list")
    if len(presses) > MAX_PRESSES:
        raise WebPressRefused(
            413, TOO_MANY, f"at most {MAX_PRESSES} presses a request, got {len(presses)}"
        )
    return BrowserRequest(client, sent_at, tuple(_press(p, survey) for p in presses))


def _press(item: Any, survey: Survey) -> BrowserPress:
    if not isinstance(item, dict) or not {"seq", "at", "button"} <= set(item) or set(item) - {
        "seq", "at", "button", "followup", "ui"
    }:  # fmt: skip
        raise WebPressRefused(400, MALFORMED, "a press is {seq, at, button[, followup, ui]}")
    seq, button, followup = item["seq"], item["button"], item.get("followup", 0)
    for name, value in (("seq", seq), ("button", button), ("followup", followup)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_SEQ:
            raise WebPressRefused(400, MALFORMED, f"{name} must be a whole number >= 0")
    ui = item.get("ui", "digital")
    if ui not in UIS:
        raise WebPressRefused(400, MALFORMED, f"ui must be one of {list(UIS)}")
    if not 1 <= button <= survey.buttons:
        raise WebPressRefused(422, BUTTON, f"button {button} is not 1..{survey.buttons}")
    if followup:
        if followup > len(survey.followup_options):
            raise WebPressRefused(
                422, FOLLOWUP_UNKNOWN,
                f"follow-up option {followup} is not one of the survey's"
                f" {len(survey.followup_options)}",
            )  # fmt: skip
        if not survey.asks_followup(button):
            raise WebPressRefused(
                422, FOLLOWUP_NOT_ASKED, f"the survey asks no follow-up after button {button}"
            )
    return BrowserPress(seq, _instant("at", item["at"]), button, followup, ui)


def _instant(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            seconds = moment.timestamp()
            if math.isfinite(seconds):
                return seconds
    raise WebPressRefused(400, MALFORMED, f"{name} must be ISO 8601 with a time zone")


def place(
    request: BrowserRequest, web_smiley_id: int, offsets: UtcOffsets, received_at: float
) -> list[WebPress]:
    """The request's presses as rows placed in time (spec section 6, for a browser's clock)."""
    shift = browser_clock_offset(request.sent_at, [p.at for p in request.presses], received_at)
    received_ms = int(received_at * 1000)
    placed = []
    for p in request.presses:
        at = math.floor(p.at) + (shift or 0)  # precision second
        row = PressRow(
            web_smiley_id, -1, at, offsets(at), p.button, p.followup, shift is not None,
            "web", received_ms, p.ui,
        )  # fmt: skip
        placed.append(WebPress(p.seq, row))
    return placed
