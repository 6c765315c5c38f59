"""Frames to bytes: the payload of each type, then header, tag and CRC (spec sections 2, 3)."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import construct as cs

from protocols import constants as c
from protocols.constants import NakCode
from protocols.errors import EncodeError
from protocols.frame_model import (
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Hourly,
    Nak,
    Presses,
    Welcome,
    frame_type,
)
from protocols.layout import (
    ACK,
    HEADER,
    HEARTBEAT,
    HELLO,
    HOUR_PACKING,
    HOURLY_HEAD,
    NAK,
    PRESSES_HEAD,
    RECORD_PACKING,
    WELCOME,
    crc16,
    tag,
)

_FIXED_LAYOUTS: dict[type[Frame], cs.Construct[Any, Any]] = {
    Hello: HELLO,
    Heartbeat: HEARTBEAT,
    Welcome: WELCOME,
}
"""The frames of one fixed-size payload."""


def _payload(frame: Frame) -> bytes:
    match frame:
        case Hello() | Heartbeat() | Welcome():
            # Their layouts name the fields as the dataclasses do; terminal_id is the header's.
            return _FIXED_LAYOUTS[type(frame)].build(
                {field.name: getattr(frame, field.name) for field in dataclasses.fields(frame)}
            )
        case Presses():
            if not 1 <= frame.count <= c.MAX_RECORDS:
                raise EncodeError(f"PRESSES carries 1..{c.MAX_RECORDS} records, not {frame.count}")
            if any(r.seq != frame.first_seq + i for i, r in enumerate(frame.records)):
                raise EncodeError("record i of PRESSES must have seq first_seq + i")
            head = PRESSES_HEAD.build(
                {
                    "sent_at": frame.sent_at,
                    "first_seq": frame.first_seq,
                    "count": frame.count,
                    "flags": frame.flags,
                }
            )
            pack = RECORD_PACKING.pack
            return head + b"".join(pack(r.ts, r.button, r.followup) for r in frame.records)
        case Hourly():
            if not 1 <= frame.n_hours <= c.MAX_HOURS:
                raise EncodeError(f"HOURLY carries 1..{c.MAX_HOURS} hours, not {frame.n_hours}")
            head = HOURLY_HEAD.build(
                {
                    "batch_seq": frame.batch_seq,
                    "hour_start": frame.hour_start,
                    "n_hours": frame.n_hours,
                }
            )
            return head + b"".join(HOUR_PACKING.pack(*hour) for hour in frame.counts)
        case Ack():
            return ACK.build(
                {
                    "acked_type": int(frame.acked_type),
                    "acked_seq": frame.acked_seq,
                    "gateway_time": frame.gateway_time,
                }
            )
        case Nak():
            return NAK.build({"code": int(frame.code), "ref_seq": frame.ref_seq})


def encode(frame: Frame, key: bytes | None) -> bytes:
    """Bytes of ``frame`` tagged with ``key``.

    ``key`` may be None only for a NAK UNKNOWN_TERMINAL, which carries a zero tag.
    """
    try:
        payload = _payload(frame)
        head = HEADER.build(
            {
                "magic": c.MAGIC,
                "version": c.VERSION,
                "type": frame_type(frame),
                "terminal_id": frame.terminal_id,
                "length": len(payload),
            }
        )
    except (cs.ConstructError, struct.error) as exc:
        raise EncodeError(f"cannot encode {type(frame).__name__}: {exc}") from exc
    if len(payload) > c.MAX_PAYLOAD:
        raise EncodeError(f"payload of {len(payload)} bytes exceeds {c.MAX_PAYLOAD}")
    body = head + payload
    if key is None:
        if not (isinstance(frame, Nak) and frame.code is NakCode.UNKNOWN_TERMINAL):
            raise EncodeError("only a NAK UNKNOWN_TERMINAL is sent without a key")
        body += c.ZERO_TAG
    else:
        body += tag(key, body)
    return body + crc16(body).to_bytes(2, "big")
