"""``smiley-gateway web qr``: the printed code reads back (zxing-cpp) as the page's address."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import zxingcpp

SCRIPT = str(Path(sys.executable).parent / "smiley-gateway")


def qr(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "web", "qr", *map(str, args)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def grey_pixels(png: bytes) -> tuple[bytes, int, int]:
    """The pixels of a 1-bit greyscale PNG (what segno writes), one byte each, 0 or 255."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        chunks[kind] = chunks.get(kind, b"") + png[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (1, 0)
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = (width + 7) // 8
    previous = bytearray(stride)
    pixels = bytearray()
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):  # the PNG filters, one byte a pixel step at depth 1
            left = line[x - 1] if x else 0
            up, corner = previous[x], previous[x - 1] if x else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                near = min((abs(p - left), left), (abs(p - up), up), (abs(p - corner), corner),
                           key=lambda c: c[0])  # fmt: skip
                line[x] = (line[x] + near[1]) & 0xFF
        previous = line
        pixels += bytes(255 if line[x // 8] >> (7 - x % 8) & 1 else 0 for x in range(width))
    return bytes(pixels), width, height


def test_png_and_svg_codes_hold_the_page_address(tmp_path: Path) -> None:
    png = tmp_path / "till.png"
    made = qr("--slug", "helsinki-exit", "--base-url", "https://feedback.example.com/",
              "--output", png)  # fmt: skip
    assert made.returncode == 0, made.stderr
    address = "https://feedback.example.com/w/helsinki-exit?ui=qr"
    assert address in made.stdout
    pixels, width, height = grey_pixels(png.read_bytes())
    image = memoryview(pixels).cast("B", (height, width))
    assert [code.text for code in zxingcpp.read_barcodes(image)] == [address]

    svg = tmp_path / "receipt.svg"
    made = qr("--slug", "helsinki-exit", "--base-url", "https://feedback.example.com",
              "--ui", "email", "--output", svg)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert "?ui=email" in made.stdout


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    for args, key in (
        (("--slug", "Bad Slug", "--base-url", "https://x.example", "--output", "a.png"), "--slug"),
        (("--slug", "ok", "--base-url", "ftp://x", "--output", "a.png"), "--base-url"),
        (("--slug", "ok", "--base-url", "https://x.example", "--output", "a.gif"), "--output"),
    ):
        result = qr(*args[:-1], tmp_path / args[-1])
        assert result.returncode == 2
        assert f"{key}:" in result.stderr
