"""The web smiley page: one self-contained HTML document (web_page.html), filled in per survey.

Everything the page needs is in it (styles, script, faces as inline SVG), so it
loads nothing from elsewhere; the texts are HTML-escaped and the settings go
in as JSON that cannot close its script element.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources

from gateway.registry.terminals import Survey
from gateway.registry.web_smileys import WebSmiley

KIOSK_RETURN_MS = 4000
FOLLOWUP_TIMEOUT_MS = 30000
UI_CHOICES = ("digital", "qr", "link", "email")
LABELS = {
    4: ("Very dissatisfied", "Dissatisfied", "Satisfied", "Very satisfied"),
    5: ("Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"),
}
# Face colour and mouth (an SVG path: from a frown to a smile) per answer, 1 the most negative.
_FACES = {
    4: (("#d9363e", "M30 70 Q50 52 70 70"), ("#f08a4b", "M32 68 Q50 60 68 68"),
        ("#7cc46c", "M32 62 Q50 72 68 62"), ("#2e9e4f", "M30 60 Q50 80 70 60")),
    5: (("#d9363e", "M30 70 Q50 52 70 70"), ("#f08a4b", "M32 68 Q50 60 68 68"),
        ("#e8c547", "M32 65 L68 65"), ("#7cc46c", "M32 62 Q50 72 68 62"),
        ("#2e9e4f", "M30 60 Q50 80 70 60")),
}  # fmt: skip
_TEXTS = {"skip": "Skip", "thanks": "Thank you for your feedback!", "again": "Answer again"}


@cache
def _template() -> str:
    return (resources.files("gateway.transports") / "web_page.html").read_text(encoding="utf-8")


def _face(colour: str, mouth: str) -> str:
    return (
        '<svg viewBox="0 0 100 100" aria-hidden="true" focusable="false">'
        f'<circle cx="50" cy="50" r="46" fill="{colour}"/>'
        '<circle cx="35" cy="40" r="6" fill="#1d232b"/><circle cx="65" cy="40" r="6"'
        ' fill="#1d232b"/>'
        f'<path d="{mouth}" stroke="#1d232b" stroke-width="6" fill="none"'
        ' stroke-linecap="round"/></svg>'
    )


def render_page(web: WebSmiley, survey: Survey, *, ui: str, kiosk: bool) -> str:
    """The page of ``web`` asking ``survey``; ``ui`` says how the person came (qr, link...)."""
    buttons = survey.buttons
    faces = "\n".join(
        f'<button type="button" class="face" data-button="{n}" aria-label="{label}"'
        f' title="{label}">{_face(*_FACES[buttons][n - 1])}</button>'
        for n, label in enumerate(LABELS[buttons], start=1)
    )
    options = "\n".join(
        f'<button type="button" class="option" data-followup="{n}">{html.escape(text)}</button>'
        for n, text in enumerate(survey.followup_options, start=1)
    )
    settings = {
        "slug": web.slug,
        "presses_url": f"/w/{web.slug}/presses",
        "ui": ui if ui in UI_CHOICES else "digital",
        "kiosk": kiosk,
        "buttons": buttons,
        "followup_after": list(survey.followup_after) if survey.followup_question else [],
        "kiosk_return_ms": KIOSK_RETURN_MS,
        "followup_timeout_ms": FOLLOWUP_TIMEOUT_MS,
    }
    fields = {
        "lang": html.escape(survey.locale),
        "title": html.escape(web.name or survey.question),
        "question": html.escape(survey.question),
        "buttons": faces,
        "followup_question": html.escape(survey.followup_question or ""),
        "followup_buttons": options,
        "config": json.dumps(settings).replace("<", "\\u003c"),
        **_TEXTS,
    }
    page = _template()
    for name, value in fields.items():
        page = page.replace("{{" + name + "}}", value)
    return page


def not_found_page() -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Not found</title></head><body><h1>This feedback page does not exist</h1>"
        "<p>Check the address, or scan the code again.</p></body></html>"
    )
