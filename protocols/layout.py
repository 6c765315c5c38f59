"""The byte layout of terminal-protocol-v1: header and payloads, tag and CRC (sections 2, 3).

Every frame (spec section 2)::

    0      2   3    4            8       10        10+N    18+N   20+N
    +------+---+----+------------+-------+---------+-------+------+
    | "SM" | 1 |type| terminal_id|   N   | payload |  tag  | crc  |
    +------+---+----+------------+-------+---------+-------+------+
    tag = first 8 bytes of HMAC-SHA256(key, bytes 0 .. 10+N)
    crc = CRC-16/CCITT-FALSE(bytes 0 .. 18+N)

The layouts are declared once, with ``construct``. A PRESSES frame carries up
to 680 records, and parsing each through construct costs about 12 us a record,
which would make the codec the gateway's bottleneck: for arrays of fixed-size
records :func:`packing_of` derives the equivalent ``struct.Struct`` from the
declaration, so ``iter_unpack`` and ``pack`` handle the bulk.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from binascii import crc_hqx

import construct as cs

from protocols import constants as c


def packing_of(layout: cs.Struct) -> struct.Struct:
    """The ``struct`` format equal to ``layout``, a Struct of big-endian fixed-size fields."""
    codes = []
    for field in layout.subcons:
        inner = field.subcon if isinstance(field, cs.Renamed) else field
        fmt = getattr(inner, "fmtstr", None)
        if not isinstance(inner, cs.FormatField) or not isinstance(fmt, str) or fmt[0] != ">":
            raise TypeError(f"field {field.name!r} is not a big-endian fixed-size number")
        codes.append(fmt[1:])
    packing = struct.Struct(">" + "".join(codes))
    if packing.size != layout.sizeof():
        raise TypeError("layout has padding or variable parts")
    return packing


HEADER = cs.Struct(
    "magic" / cs.Bytes(2),
    "version" / cs.Int8ub,
    "type" / cs.Int8ub,
    "terminal_id" / cs.Int32ub,
    "length" / cs.Int16ub,
).compile()

HELLO = cs.Struct(
    "fw_version" / cs.Int16ub,
    "boot_count" / cs.Int32ub,
    "clock" / cs.Int32ub,
    "flags" / cs.Int16ub,
    "queued" / cs.Int16ub,
).compile()

WELCOME = cs.Struct("gateway_time" / cs.Int32ub, "next_seq" / cs.Int32ub).compile()

PRESSES_HEAD = cs.Struct(
    "sent_at" / cs.Int32ub,
    "first_seq" / cs.Int32ub,
    "count" / cs.Int16ub,
    "flags" / cs.Int16ub,
).compile()
PRESSES_HEAD_SIZE = 12

RECORD = cs.Struct("ts" / cs.Int32ub, "button" / cs.Int8ub, "followup" / cs.Int8ub)
RECORD_SIZE = 6
RECORD_PACKING = packing_of(RECORD)

HEARTBEAT = cs.Struct(
    "clock" / cs.Int32ub,
    "battery_pct" / cs.Int8ub,
    "signal_dbm" / cs.Int8sb,
    "queued" / cs.Int16ub,
    "uptime_s" / cs.Int32ub,
).compile()

HOURLY_HEAD = cs.Struct(
    "batch_seq" / cs.Int32ub,
    "hour_start" / cs.Int32ub,
    "n_hours" / cs.Int8ub,
).compile()
HOURLY_HEAD_SIZE = 9
HOUR = cs.Struct(
    "button_1" / cs.Int16ub,
    "button_2" / cs.Int16ub,
    "button_3" / cs.Int16ub,
    "button_4" / cs.Int16ub,
)
HOUR_SIZE = 8
HOUR_PACKING = packing_of(HOUR)

ACK = cs.Struct(
    "acked_type" / cs.Int8ub,
    "reserved" / cs.Const(0, cs.Int8ub),
    "acked_seq" / cs.Int32ub,
    "gateway_time" / cs.Int32ub,
).compile()

NAK = cs.Struct(
    "code" / cs.Int8ub,
    "reserved" / cs.Const(0, cs.Int8ub),
    "ref_seq" / cs.Int32ub,
).compile()


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out)."""
    return crc_hqx(data, 0xFFFF)


def tag(key: bytes, data: bytes) -> bytes:
    """First 8 bytes of HMAC-SHA256(key, data)."""
    # hmac.new, not the one-shot hmac.digest: the one-shot releases the GIL for
    # any input, and with the outbox's SQLite threads busy, taking it back costs
    # many times the MAC of a frame; hmac.new keeps it for inputs under 2 KiB.
    return hmac.new(key, data, hashlib.sha256).digest()[: c.TAG_SIZE]
