"""A registry with web smileys, and helpers the web smiley tests share."""

from __future__ import annotations

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
