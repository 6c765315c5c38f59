"""Numbers fixed by terminal-protocol-v1 (sections 1 to 5)."""

from __future__ import annotations

import enum

MAGIC = b"SM"
VERSION = 1
HEADER_SIZE = 10
TAG_SIZE = 8
CRC_SIZE = 2
OVERHEAD = HEADER_SIZE + TAG_SIZE + CRC_SIZE
MAX_PAYLOAD = 4096
MAX_FRAME = OVERHEAD + MAX_PAYLOAD
MAX_RECORDS = 680
MAX_HOURS = 168
MAX_FOLLOWUP = 16
BUTTONS = range(1, 5)
CLOCK_UNSYNCED = 0x0001
MAINS_POWERED = 255
ZERO_TAG = bytes(TAG_SIZE)


class FrameType(enum.IntEnum):
    HELLO = 0x01
    PRESSES = 0x02
    HEARTBEAT = 0x03
    HOURLY = 0x10
    WELCOME = 0x81
    ACK = 0x82
    NAK = 0x83


class NakCode(enum.IntEnum):
    BAD_CRC = 1
    BAD_TAG = 2
    UNKNOWN_TERMINAL = 3
    MALFORMED = 4
    BUSY = 5
    UNSUPPORTED = 6
    NOT_HELLO = 7
