"""Frames of terminal-protocol-v1: the names the rest of the project uses, in one place.

The codec is split by job: :mod:`protocols.frame_model` (the typed frames),
:mod:`protocols.frame_encoder` (frames to bytes), :mod:`protocols.frame_decoder`
(bytes to frames, with the checks of spec section 2 in their order) and
:mod:`protocols.layout` (header and payload layouts, tag and CRC). Code outside
``protocols/`` imports from here, so the split stays an inside matter.
"""

from __future__ import annotations

from protocols.frame_decoder import (
    Header,
    KeyLookup,
    decode,
    decode_header,
    guess_ref_seq,
)
from protocols.frame_encoder import encode
from protocols.frame_model import (
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Hourly,
    Nak,
    Presses,
    PressRecord,
    Welcome,
    all_countable,
    frame_type,
)
from protocols.layout import HEADER, crc16, tag

__all__ = [
    "HEADER",
    "Ack",
    "Frame",
    "Header",
    "Heartbeat",
    "Hello",
    "Hourly",
    "KeyLookup",
    "Nak",
    "PressRecord",
    "Presses",
    "Welcome",
    "all_countable",
    "crc16",
    "decode",
    "decode_header",
    "encode",
    "frame_type",
    "guess_ref_seq",
    "tag",
]
