"""The query API over HTTPS (``[api] tls_cert``/``tls_key``), as the vendor's clients expect.

A test CA signs the gateway's certificate; a client that verifies against that
CA gets its answers, and a plain-HTTP request to the port gets none.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from firmware_sim.harness import free_port
from tests.conftest import GatewayHarness
from tests.test_api_in_run import stored_presses_and_token

pytestmark = pytest.mark.timeout(60)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def signed_by_test_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    cert, key, request = tmp_path / "api.crt", tmp_path / "api.key", tmp_path / "api.csr"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=smiley test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=gateway",
            "-keyout", str(key), "-out", str(request))  # fmt: skip
    extensions = tmp_path / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions),
            "-out", str(cert))  # fmt: skip
    return ca, cert, key


async def test_api_over_https_answers_a_verifying_client_and_not_plain_http(
    make_harness: Callable[..., GatewayHarness], signed_by_test_ca: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = signed_by_test_ca
    api_port = free_port()
    harness = make_harness(
        f'[api]\nlisten = "127.0.0.1:{api_port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    await harness.start()
    try:
        token = await stored_presses_and_token(harness, button=2, count=2)
        verifying = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{api_port}", verify=verifying
        ) as client:
            answer = await client.get(
                "/v2/results/button-feedbacks.json",
                params={"startDate": "2026-01-01", "endDate": "2026-01-02"},
                headers={"X-HON-API-Token": token},
            )
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            # A client that trusts only the system's CAs does not take the test CA's word.
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{api_port}") as client:
                await client.get("/openapi.json")
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
                await client.get("/openapi.json", headers={"X-HON-API-Token": token})
    finally:
        await harness.stop()
    assert answer.status_code == 200, answer.text
    assert [r["buttonIndex"] for r in answer.json()] == [1, 1]
