"""protocols/proxy_protocol.py: the spec's examples, byte-at-a-time feeds, hypothesis.

Vectors follow HAProxy's proxy-protocol.txt: section 2.1's longest v1 lines,
the v2 layout of section 2.2 built byte by byte here (the gateway only
receives headers, so the encoder lives in this test).
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerError
from protocols.proxy_protocol import V1_MAX, V2_SIGNATURE, BadProxyHeader, ProxyHeader, parse

LONGEST_TCP4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
LONGEST_TCP6 = (
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
LONGEST_UNKNOWN = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
HELLO_BYTES = b"SM\x01\x01"  # what a terminal sends first: the start of a frame


def v2(command: int, family: int, block: bytes, *, version: int = 2) -> bytes:
    """A v2 header: signature, version and command, family and transport (STREAM), length."""
    fixed = struct.pack("!BBH", version << 4 | command, family << 4 | 1, len(block))
    return V2_SIGNATURE + fixed + block


def v2_inet(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    block = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return v2(1, 1 if s.version == 4 else 2, block)


def test_the_spec_s_longest_v1_lines() -> None:
    assert len(LONGEST_TCP6) == 104
    assert len(LONGEST_UNKNOWN) == V1_MAX
    assert parse(LONGEST_TCP4) == ProxyHeader(
        1, False, ("255.255.255.255", 65535), ("255.255.255.255", 65535), 56
    )
    six = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    assert parse(LONGEST_TCP6) == ProxyHeader(1, False, (six, 65535), (six, 65535), 104)
    assert parse(LONGEST_UNKNOWN) == ProxyHeader(1, False, None, None, 107)
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(1, False, None, None, 15)


def test_a_v1_header_is_followed_by_the_terminal_s_bytes() -> None:
    data = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 7700\r\n" + HELLO_BYTES
    header = parse(data)
    assert header == ProxyHeader(1, False, ("192.0.2.7", 56324), ("198.51.100.1", 7700), 46)
    assert data[header.length :] == HELLO_BYTES


def test_v2_proxy_inet_inet6_and_tlvs() -> None:
    header = v2_inet("192.0.2.7", 56324, "198.51.100.1", 7700, tlvs=b"\x04\x00\x01x")
    assert parse(header + HELLO_BYTES) == ProxyHeader(
        2, False, ("192.0.2.7", 56324), ("198.51.100.1", 7700), 16 + 12 + 4
    )
    header = v2_inet("2001:db8::7", 1, "2001:db8::1", 7700)
    assert parse(header) == ProxyHeader(2, False, ("2001:db8::7", 1), ("2001:db8::1", 7700), 52)


def test_v2_local_unspec_and_unix_use_the_connection_s_own_address() -> None:
    # HAProxy's health checks (check-send-proxy) send LOCAL with family UNSPEC, length 0.
    assert parse(v2(0, 0, b"")) == ProxyHeader(2, True, None, None, 16)
    assert parse(v2(0, 1, bytes(12))) == ProxyHeader(2, True, None, None, 28)
    assert parse(v2(1, 0, b"")) == ProxyHeader(2, False, None, None, 16)
    assert parse(v2(1, 3, bytes(216))) == ProxyHeader(2, False, None, None, 232)


@pytest.mark.parametrize(
    "data",
    [
        HELLO_BYTES,  # a terminal connecting past the balancer
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7  198.51.100.1 56324 7700\r\n",  # two spaces
        b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 7700\r\n",  # family mismatch
        b"PROXY TCP4 192.0.2.7 198.51.100.1 056324 7700\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 7700\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7\n",  # LF alone
        b"PROXY " + b"x" * 200,  # no CRLF within 107 bytes
        b"PROXY TCP4 \xff\r\n",
        v2(1, 1, b"", version=1),
        v2(2, 1, bytes(12)),  # command 2
        v2(1, 4, bytes(12)),  # family 4
        v2(1, 1, bytes(8)),  # INET needs 12 bytes
    ],
)
def test_what_is_no_header_is_refused_with_its_bytes(data: bytes) -> None:
    with pytest.raises(BadProxyHeader) as caught:
        parse(data)
    assert caught.value.name == "BAD_PROXY_HEADER"
    assert isinstance(caught.value, PeerError)
    assert caught.value.raw
    assert data.startswith(caught.value.raw[: len(data)])


def test_refused_as_soon_as_the_first_bytes_cannot_start_a_header() -> None:
    with pytest.raises(BadProxyHeader):
        parse(b"S")  # one byte of a frame is enough
    assert parse(b"P") is None
    assert parse(b"\r\n\r") is None


def test_bounded_a_v1_line_never_needs_more_than_107_bytes() -> None:
    prefix = b"PROXY TCP4 " + b"1" * (V1_MAX - 11 - 1)
    assert len(prefix) == V1_MAX - 1
    assert parse(prefix) is None
    with pytest.raises(BadProxyHeader):
        parse(prefix + b"1")


def fed_byte_at_a_time(data: bytes) -> ProxyHeader:
    for end in range(1, len(data)):
        assert parse(data[:end]) is None, f"a header from {end} of {len(data)} bytes"
    header = parse(data)
    assert header is not None
    return header


@pytest.mark.parametrize(
    "data",
    [
        LONGEST_TCP4,
        LONGEST_TCP6,
        LONGEST_UNKNOWN,
        v2(0, 0, b""),
        v2_inet("10.0.0.1", 2, "10.0.0.2", 3),
    ],
)
def test_byte_at_a_time_and_with_trailing_bytes(data: bytes) -> None:
    whole = parse(data)
    assert fed_byte_at_a_time(data) == whole
    assert whole is not None
    assert whole.length == len(data)
    assert parse(data + b"\x00garbage" * 50) == whole


addresses = st.one_of(
    st.ip_addresses(v=4).map(lambda a: (str(a), 4)),
    st.ip_addresses(v=6).map(lambda a: (str(a), 6)),
)
ports = st.integers(0, 65535)


@given(addresses, ports, ports, st.binary(max_size=40), st.binary(max_size=20))
def test_v2_round_trip(
    source: tuple[str, int], sport: int, dport: int, tlvs: bytes, after: bytes
) -> None:
    dst = "192.0.2.1" if source[1] == 4 else "2001:db8::1"
    data = v2_inet(source[0], sport, dst, dport, tlvs)
    header = parse(data + after)
    assert header is not None
    assert (header.version, header.local, header.length) == (2, False, len(data))
    assert header.source == (str(ipaddress.ip_address(source[0])), sport)
    assert header.destination == (dst, dport)


@given(addresses, ports, ports, st.binary(max_size=20))
def test_v1_round_trip(source: tuple[str, int], sport: int, dport: int, after: bytes) -> None:
    host, version = source
    dst = "192.0.2.1" if version == 4 else "2001:db8::1"
    line = f"PROXY TCP{version} {host} {dst} {sport} {dport}\r\n".encode()
    assert len(line) <= V1_MAX
    header = parse(line + after)
    assert header == ProxyHeader(1, False, (host, sport), (dst, dport), len(line))


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_more_or_our_own_error(data: bytes) -> None:
    try:
        header = parse(data)
    except BadProxyHeader:
        return  # our own error, the one the transport catches
    if header is None:
        # Only ever waiting on a prefix of a header, and never past the v1 bound.
        assert V2_SIGNATURE.startswith(data[:12]) or data.startswith(b"PROXY "[: len(data)])
        assert data[:6] != b"PROXY " or len(data) < V1_MAX
    else:
        assert 0 < header.length <= len(data)


@given(st.binary(min_size=1, max_size=300))
def test_bytes_after_the_v2_signature_never_raise_anything_else(rest: bytes) -> None:
    with contextlib.suppress(BadProxyHeader):
        parse(V2_SIGNATURE + rest)
