"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), receiver side.

A load balancer in TCP mode opens its own connection to the gateway; the
PROXY header it sends first names the terminal's real address. Sans-I/O:
:func:`parse` takes the bytes received so far and says whether they hold a
whole header (and how many bytes it took), need more, or cannot be one.

Version 1 (section 2.1), one line of at most 107 bytes::

    PROXY TCP4 192.0.2.7 198.51.100.1 56324 7700\\r\\n
    PROXY TCP6 2001:db8::7 2001:db8::1 56324 7700\\r\\n
    PROXY UNKNOWN[ anything]\\r\\n           (the connection's own addresses apply)

Version 2 (section 2.2), binary, 16 bytes then ``length`` bytes::

    +---------------------------+--------+--------+---------+-----------------+
    | signature (12 bytes)      | ver|cmd| fam|tr | length  | addresses, TLVs |
    | 0D0A0D0A000D0A515549540A  | 0x2 0/1| 1|2  1 | (BE u16)| length bytes    |
    +---------------------------+--------+--------+---------+-----------------+

    cmd 0 LOCAL: the balancer's own connection (a health check); addresses ignored
    cmd 1 PROXY: relayed; fam 1 (INET): src 4, dst 4, sport 2, dport 2 bytes;
                 fam 2 (INET6): 16, 16, 2, 2; fam 0 (UNSPEC) or 3 (UNIX): the
                 connection's own addresses apply. TLVs after the addresses are skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from protocols.errors import PeerError

V1_PREFIX = b"PROXY "
V1_MAX = 107  # section 2.1: "PROXY TCP6" + two full IPv6 addresses, two ports, CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
V2_MAX = V2_FIXED + 0xFFFF
_V2_FIXED = struct.Struct("!12sBBH")
_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_PORT_MAX = 65535


class BadProxyHeader(PeerError):
    """What a connection sent first is no PROXY header (or a broken one): refuse it."""

    closes = True

    @property
    def name(self) -> str:
        return "BAD_PROXY_HEADER"


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A whole header: ``source`` is the terminal's (host, port), or None when the
    connection's own address applies (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX)."""

    version: int
    local: bool
    """v2 LOCAL: the balancer's own connection (a health check), relaying nothing."""
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int
    """Bytes the header took; what follows is the relayed connection's."""


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None if more bytes are needed.

    Raises :class:`BadProxyHeader` (with the bytes seen) as soon as ``data``
    cannot start a header, so a peer sending anything else is refused at once.
    """
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data) if len(data) >= V2_FIXED else None
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    raise _bad("neither a PROXY v1 line nor the v2 signature", data)


def _bad(reason: str, data: bytes) -> BadProxyHeader:
    return BadProxyHeader(reason, raw=bytes(data[:V2_MAX]))


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise _bad(f"no CRLF within {V1_MAX} bytes", data)
        if b"\n" in data or b"\r" in data[:-1]:
            raise _bad("a line ending other than CRLF", data)
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise _bad("a v1 line that is not ASCII", data[: end + 2]) from None
    fields = text.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1, False, None, None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise _bad(f"a v1 line of {len(fields)} fields or an unknown protocol", data[: end + 2])
    version = 4 if fields[1] == "TCP4" else 6
    source = _v1_address(fields[2], fields[4], version, data[: end + 2])
    destination = _v1_address(fields[3], fields[5], version, data[: end + 2])
    return ProxyHeader(1, False, source, destination, end + 2)


def _v1_address(host: str, port: str, version: int, line: bytes) -> tuple[str, int]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _bad(f"not an IP address: {host!r}", line) from None
    if address.version != version:
        raise _bad(f"{host!r} is not an IPv{version} address", line)
    # Section 2.1: a port is a number in 0..65535 without leading zeroes.
    if not port.isascii() or not port.isdigit() or (len(port) > 1 and port[0] == "0"):
        raise _bad(f"not a port: {port!r}", line)
    if int(port) > _PORT_MAX:
        raise _bad(f"port {port} out of range", line)
    return str(address), int(port)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    _, version_command, family_transport, length = _V2_FIXED.unpack_from(data)
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise _bad(f"v2 signature with version {version}", data[:V2_FIXED])
    if command not in (_LOCAL, _PROXY):
        raise _bad(f"v2 command {command} is neither LOCAL nor PROXY", data[:V2_FIXED])
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if command == _LOCAL:  # section 2.2: addresses ignored, the connection's own apply
        return ProxyHeader(2, True, None, None, total)
    family = family_transport >> 4
    block = data[V2_FIXED:total]
    if family == _AF_INET:
        layout, kind = _INET, ipaddress.IPv4Address
    elif family == _AF_INET6:
        layout, kind = _INET6, ipaddress.IPv6Address  # type: ignore[assignment]
    elif family in (_UNSPEC, _AF_UNIX):
        return ProxyHeader(2, False, None, None, total)
    else:
        raise _bad(f"v2 address family {family}", data[:total])
    if length < layout.size:
        raise _bad(f"v2 addresses need {layout.size} bytes, length is {length}", data[:total])
    src, dst, src_port, dst_port = layout.unpack_from(block)
    return ProxyHeader(2, False, (str(kind(src)), src_port), (str(kind(dst)), dst_port), total)
