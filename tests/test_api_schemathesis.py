"""schemathesis against a live server: our /openapi.json and the vendor's v2 document.

Every operation of both documents, with valid and invalid inputs: no server
errors, and every answer conforms (status, content type, schema, headers).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.api.app import create_app
from gateway.api.db import Reader
from tests.support import SHARED
from tests.test_api_support import (
    ApiProcess,
    Seeded,
    drop_sync,
    running,
    seed_sync,
    shared_postgres_available,
)

pytestmark = pytest.mark.timeout(300)

VENDOR_DOCUMENT = SHARED / "reference" / "vendor-api-v2.openapi.yml"
EXAMPLES = int(os.environ.get("SMILEY_SCHEMATHESIS_EXAMPLES", "25"))
INTERVAL_PARAMETERS = ("startDate", "endDate", "date_start", "date_end", "period")  # year 0000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, Seeded]]:
    if request.param == "postgres" and not shared_postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    seeded = seed_sync(request.param, tmp_path_factory.mktemp("schemathesis"))
    try:
        with running(seeded) as server:
            yield server, seeded
    finally:
        drop_sync(seeded)


def _document_of_our_app() -> dict[str, Any]:
    """Our OpenAPI document as the server publishes it (the app needs no store for that)."""
    return create_app(cast(Reader, None), (1, 1.0)).openapi()


def _configure(schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    return schema


ours = _configure(schemathesis.openapi.from_dict(_document_of_our_app()))
vendor = _configure(schemathesis.openapi.from_path(VENDOR_DOCUMENT))
_settings = settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip


def _credentials(seeded: Seeded) -> dict[str, str]:
    client, token, _ = seeded.tokens["acme"]
    basic = base64.b64encode(f"{client}:{token}".encode()).decode()
    return {"X-HON-API-Token": token, "Authorization": f"Basic {basic}"}


def _call(case: schemathesis.Case[Any], base_url: str, seeded: Seeded) -> None:
    """Every check, except that a schema-valid request may get the one documented 400.

    Both documents allow any two dates, but an interval that is empty or over a
    year is refused (the vendor's own rule); anything else schema-valid must pass.
    """
    response = case.call_and_validate(
        base_url=base_url, headers=_credentials(seeded), timeout=30,
        excluded_checks=[positive_data_acceptance],
    )  # fmt: skip
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive:
        assert response.status_code < 500, response.text
        if response.status_code == 400:
            assert response.json()["parameter"] in INTERVAL_PARAMETERS, response.text


@ours.parametrize()
@_settings
def test_our_document(case: schemathesis.Case[Any], live: tuple[ApiProcess, Seeded]) -> None:
    server, seeded = live
    _call(case, server.base, seeded)


@vendor.parametrize()
@_settings
def test_vendor_document(case: schemathesis.Case[Any], live: tuple[ApiProcess, Seeded]) -> None:
    server, seeded = live
    _call(case, f"{server.base}/v2", seeded)
