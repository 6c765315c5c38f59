"""``smiley-gateway web qr``: the QR code to print for a web smiley's page (segno).

The code holds the page's address with ``?ui=`` saying how people came (``qr``
for a code at the till, ``email`` for one in a receipt), so the API reports
each answer with its way in. SVG or PNG by the output's suffix.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

import segno

from gateway.errors import ConfigError
from gateway.registry.web_smileys import SLUG
from gateway.transports.web_page import UI_CHOICES

FORMATS = (".svg", ".png")


def page_address(base_url: str, slug: str, ui: str) -> str:
    """The page's address: ``<base>/w/<slug>``, with ``?ui=`` unless it is ``digital``."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError("--base-url", f"expected https://HOST[/PATH], got {base_url!r}")
    if not SLUG.fullmatch(slug):
        raise ConfigError("--slug", f"not a web smiley slug: {slug!r}")
    if ui not in UI_CHOICES:
        raise ConfigError("--ui", f"expected one of {list(UI_CHOICES)}")
    address = f"{base_url.rstrip('/')}/w/{slug}"
    return address if ui == "digital" else f"{address}?ui={ui}"


def write_qr(address: str, output: Path) -> None:
    if output.suffix.lower() not in FORMATS:
        raise ConfigError("--output", f"the file must end in {' or '.join(FORMATS)}")
    # Error correction M: a printed code still reads with a stain or a fold.
    segno.make_qr(address, error="m").save(str(output), scale=10, border=4)


def add_web_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = commands.add_parser("web", help="web smileys ([[web_smiley]] in the registry)")
    web_commands = web.add_subparsers(dest="web_command", required=True)
    qr = web_commands.add_parser("qr", help="make the QR code of a web smiley's page")
    qr.add_argument("--slug", required=True, help="the web smiley's slug (its page /w/SLUG)")
    qr.add_argument("--base-url", required=True, help="where [web] is reached, https://HOST")
    qr.add_argument("--ui", default="qr", choices=UI_CHOICES, help="how people come (default qr)")
    qr.add_argument("--output", type=Path, required=True, help="FILE.svg or FILE.png")
    qr.set_defaults(func=_qr)


def _qr(args: argparse.Namespace) -> int:
    address = page_address(args.base_url, args.slug, args.ui)
    write_qr(address, args.output)
    print(f"wrote {args.output}: {address}")
    return 0
