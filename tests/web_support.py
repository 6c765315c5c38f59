"""A registry with web smileys, and helpers the web smiley tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support import REGISTRY_TOML

FOLLOWUP = """followup_question = "What could we do better?"
followup_options = ["Queue", "Staff", "Cleanliness", "Prices"]
followup_after = [1, 2]
"""
WEB_SMILEYS = """
[[web_smiley]]
id = 5001
slug = "helsinki-exit"
location = 11
survey = 100
name = "Receipt QR code"
[[web_smiley]]
id = 5002
slug = "helsinki-counter"
location = 11
survey = 100
name = "Counter tablet"
"""
# Survey 100 asks the follow-up after buttons 1 and 2; the web smileys stand beside 1001.
WEB_REGISTRY_TOML = (
    REGISTRY_TOML.replace('scale = "four"\n', 'scale = "four"\n' + FOLLOWUP, 1) + WEB_SMILEYS
)


def web_section(port: int, rate_limit: str = "600/minute") -> str:
    return f'[web]\nlisten = "127.0.0.1:{port}"\nrate_limit = "{rate_limit}"\n'


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def body(
    client: str, sent_at: float, presses: list[dict[str, Any]] | None = None, **press: Any
) -> dict[str, Any]:
    """A request body; ``press`` fields make one press (seq 0, button 3, now) by default."""
    if presses is None:
        presses = [{"seq": 0, "at": iso(sent_at), "button": 3, "followup": 0, "ui": "qr"} | press]
    return {"client": client, "sent_at": iso(sent_at), "presses": presses}
