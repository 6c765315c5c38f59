"""The query API against a live server (``smiley-gateway api``) on SQLite and on PostgreSQL.

Figures are checked against hand-computed examples (the vendor's 17/16/60/126
-> 78, a misuse burst) and against the store read directly.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.test_api_support import (
    GATEWAY,
    SMS_COUNTS,
    ApiProcess,
    Seeded,
    drop_sync,
    running,
    seed_sync,
    set_sms_count,
    shared_postgres_available,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    if request.param == "postgres" and not shared_postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    store = seed_sync(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield store
    finally:
        drop_sync(store)


@pytest.fixture(scope="module")
def server(seeded: Seeded) -> Iterator[ApiProcess]:
    with running(seeded) as process:
        yield process


def v2(
    server: ApiProcess, seeded: Seeded, path: str, *, token: str = "acme", **params: Any
) -> httpx.Response:
    return httpx.get(
        f"{server.base}/v2/{path}", params=params,
        headers={"X-HON-API-Token": seeded.tokens[token][1]}, timeout=30,
    )  # fmt: skip


def v1(
    server: ApiProcess, seeded: Seeded, path: str, *, token: str = "acme", **params: Any
) -> httpx.Response:
    client, secret, _ = seeded.tokens[token]
    return httpx.get(f"{server.base}/v1/{path}", params=params, auth=(client, secret), timeout=30)


# --- Happy Index and misuse -------------------------------------------------------------


def test_v1_survey_as_the_vendor_describes_it(server: ApiProcess, seeded: Seeded) -> None:
    survey = v1(server, seeded, "surveys/12-100").json()
    assert survey == {
        "key": "12-100",
        "question": {"key": 100, "name": "How was your visit today?", "locale": "en-US"},
        "folder": {"key": 12, "name": "Tampere store"},
        "timeZone": "Europe/Helsinki",
        "activePeriods": [{"start": "2026-03-01T01:30:00.000+0200", "end": None}],
        "surveyType": "TERMINAL",
        "indexType": "HAPPY",
        "feedbackScale": "FOUR",
    }
    tree = v1(server, seeded, "folders", surveys="true").json()
    tampere = tree["folders"][0]["folders"][1]
    assert tampere["surveys"] == [survey]
    assert v1(server, seeded, "surveys/14-101").json()["feedbackScale"] == "FIVE"
    children = v1(server, seeded, "folders/10/children").json()
    assert children == [{"key": 11, "name": "Helsinki store"}, {"key": 12, "name": "Tampere store"}]


def test_vendor_happy_index_example_gives_78(server: ApiProcess, seeded: Seeded) -> None:
    results = v1(server, seeded, "surveys/12-100/results", date_start="2026-03-02",
                 date_end="2026-03-03").json()  # fmt: skip
    assert results == [{"ts": "2026-03-02T00:00:00.000+0200", "data": [17, 16, 60, 126],
                        "happyIndex": 78}]  # fmt: skip
    summary = v2(server, seeded, "results/happy-index.json", experiencePointId=12,
                 startDate="2026-03-02", endDate="2026-03-03").json()  # fmt: skip
    assert summary == [{"surveyId": 100, "responses": 219, "buttonCounts": [17, 16, 60, 126],
                        "happyIndex": 78}]  # fmt: skip


def test_misuse_left_out_of_results_unless_asked(server: ApiProcess, seeded: Seeded) -> None:
    window: dict[str, Any] = {
        "date_start": "2026-03-01T11:00:00+0200",
        "date_end": "2026-03-01T12:00:00+0200",
    }
    plain = v1(server, seeded, "surveys/11-100/results", truncate="hour", **window).json()
    # The burst: +0, +6, +20 counted (button 4); +2, +4, +8 misuse (button 1).
    assert plain == [
        {"ts": "2026-03-01T11:00:00.000+0200", "data": [0, 0, 0, 3], "happyIndex": 100}
    ]
    both = v1(server, seeded, "surveys/11-100/results", truncate="hour", includeMisuse="true",
              **window).json()  # fmt: skip
    assert both == [{"ts": "2026-03-01T11:00:00.000+0200", "data": [3, 0, 0, 3], "happyIndex": 50}]


def test_rawresults_include_misuse_flagged(server: ApiProcess, seeded: Seeded) -> None:
    raw = v1(server, seeded, "surveys/11-100/rawresults", date_start="2026-03-01T09:00:00Z",
             date_end="2026-03-01T09:01:00Z").json()  # fmt: skip
    assert [(r["ts"], r["misuse"], r["buttonIndex"]) for r in raw] == [
        ("2026-03-01T11:00:00.000+0200", False, 3),
        ("2026-03-01T11:00:02.000+0200", True, 0),
        ("2026-03-01T11:00:04.000+0200", True, 0),
        ("2026-03-01T11:00:06.000+0200", False, 3),  # arrived late, after +8 and +20
        ("2026-03-01T11:00:08.000+0200", True, 0),
        ("2026-03-01T11:00:20.000+0200", False, 3),
    ]
    assert {r["timePrecision"] for r in raw} == {"second"}


def test_v2_feedbacks_misuse(server: ApiProcess, seeded: Seeded) -> None:
    params: dict[str, Any] = {"surveyId": 100, "experiencePointId": 11, "startDate": "2026-03-01",
              "endDate": "2026-03-02"}  # fmt: skip
    without = v2(server, seeded, "results/button-feedbacks.json", **params).json()
    with_misuse = v2(server, seeded, "results/button-feedbacks.json", includeMisuse="true",
                     **params).json()  # fmt: skip
    assert len(with_misuse) - len(without) == 3
    assert not any(r["misuse"] for r in without)
    assert sum(r["misuse"] for r in with_misuse) == 3


# --- hour precision ----------------------------------------------------------------------


def test_hour_counts_expand_into_presses_with_stable_ids(
    server: ApiProcess, seeded: Seeded
) -> None:
    params: dict[str, Any] = {
        "experiencePointId": 11,
        "startDate": "2026-03-01",
        "endDate": "2026-03-02",
    }
    rows = [r for r in v2(server, seeded, "results/button-feedbacks.json", **params).json()
            if r["timePrecision"] == "hour"]  # fmt: skip
    assert len(rows) == sum(n for _, n in SMS_COUNTS)
    for r in rows:
        assert r["localTime"] == "2026-03-01T16:00:00+02:00"  # to the hour, never a minute
        assert r["utcTime"] == "2026-03-01T14:00:00Z"
        assert (r["transport"], r["smileyId"], r["clockCorrected"]) == ("sms", 1002, False)
        uuid.UUID(r["feedbackId"])
    ids = {r["feedbackId"] for r in rows}
    assert len(ids) == len(rows)
    raw = v1(server, seeded, "surveys/11-100/rawresults", date_start="2026-03-01T14:00:00Z",
             date_end="2026-03-01T15:00:00Z").json()  # fmt: skip
    assert {r["feedbackId"] for r in raw if r["timePrecision"] == "hour"} == ids
    # A later SMS raises button 2 from 3 to 5: the first three keep their ids.
    asyncio.run(set_sms_count(seeded, 2, 5))
    try:
        again = [r for r in v2(server, seeded, "results/button-feedbacks.json", **params).json()
                 if r["timePrecision"] == "hour"]  # fmt: skip
        assert len(again) == len(rows) + 2
        assert ids < {r["feedbackId"] for r in again}
        hourly = v1(
            server,
            seeded,
            "surveys/11-100/results",
            truncate="hour",
            date_start="2026-03-01T16:00:00+0200",
            date_end="2026-03-01T17:00:00+0200",
        ).json()
        assert hourly == [{"ts": "2026-03-01T16:00:00.000+0200", "data": [0, 5, 0, 1],
                           "happyIndex": 44}]  # fmt: skip
    finally:
        asyncio.run(set_sms_count(seeded, 2, 3))


def test_press_ids_are_stable_uuids(server: ApiProcess, seeded: Seeded) -> None:
    params: dict[str, Any] = {
        "experiencePointId": 12,
        "startDate": "2026-03-02",
        "endDate": "2026-03-03",
    }
    first = v2(server, seeded, "results/button-feedbacks.json", **params).json()
    second = v2(server, seeded, "results/button-feedbacks.json", **params).json()
    assert [r["feedbackId"] for r in first] == [r["feedbackId"] for r in second]
    namespace = uuid.UUID("6f1c2a4e-3b5d-5e7f-9a0b-1c2d3e4f5a6b")
    assert first[0]["feedbackId"] == str(uuid.uuid5(namespace, "1004:0"))


# --- pyHappyOrNot ------------------------------------------------------------------------


def store_counts(seeded: Seeded) -> dict[tuple[int, int], int]:
    """(location, survey): counted presses and hour counts, read from the store directly."""
    query_press = ("SELECT t.location, t.survey, count(*) FROM press p JOIN terminal t"
                   " ON t.id = p.terminal_id WHERE {} GROUP BY 1, 2")  # fmt: skip
    query_hour = ("SELECT t.location, t.survey, sum(h.count) FROM hourly h JOIN terminal t"
                  " ON t.id = h.terminal_id GROUP BY 1, 2")  # fmt: skip
    found: dict[tuple[int, int], int] = {}
    if seeded.kind == "sqlite":
        db = sqlite3.connect(seeded.url[len("sqlite:///") :])
        rows = list(db.execute(query_press.format("p.misuse = 0"))) + list(db.execute(query_hour))
        db.close()
    else:

        async def fetch() -> list[Any]:
            conn = await asyncpg.connect(seeded.url)
            try:
                return [*await conn.fetch(query_press.format("NOT p.misuse")),
                        *await conn.fetch(query_hour)]  # fmt: skip
            finally:
                await conn.close()

        rows = asyncio.run(fetch())
    for location, survey, n in rows:
        found[(location, survey)] = found.get((location, survey), 0) + int(n)
    return found


PYHAPPYORNOT = """
import sys
from pyHappyOrNot import pyHappyOrNot as client
client.API_URL = sys.argv[1]
print(client.HappyOrNot().getJSON())
"""


def test_pyhappyornot_against_live_server_matches_store(server: ApiProcess, seeded: Seeded) -> None:
    client, token, _ = seeded.tokens["acme"]
    out = subprocess.run(
        [sys.executable, "-c", PYHAPPYORNOT, f"{server.base}/v1"], capture_output=True, text=True,
        env={"X_HON_Client_Id": client, "X_HON_API_Token": token}, check=True, timeout=60,
    )  # fmt: skip
    tree = json.loads(out.stdout)
    seen: dict[tuple[int, int], int] = {}
    for group in tree["folders"]:
        for point in group["folders"]:
            for survey in point["surveys"]:
                assert survey["folder"]["key"] == point["key"]
                total = sum(sum(bucket["data"]) for bucket in survey["results"])
                seen[(point["key"], survey["question"]["key"])] = total
    expected = store_counts(seeded)
    assert seen == {k: v for k, v in expected.items() if k[0] in (11, 12, 14)}
    assert seen[(12, 100)] == 219 + 1  # the example and one early press


# --- scope -------------------------------------------------------------------------------

ACME_ONLY = {
    "experience-points.json": (10, 11, 12, 13, 14),
    "smileys.json": (1001, 1002, 1004, 1005),
}


def test_another_company_sees_nothing_of_acme(server: ApiProcess, seeded: Seeded) -> None:
    points = v2(server, seeded, "experience-points.json", token="globex").json()
    assert {p["experiencePointId"] for p in points} == {20, 21}
    assert {s["smileyId"] for s in v2(server, seeded, "smileys.json", token="globex").json()} == {
        2001
    }
    for path in ("surveys.json", "questions.json", "follow-up-questions.json",
                 "question-localizations.json"):  # fmt: skip
        body = v2(server, seeded, path, token="globex").json()
        ids = {r.get("surveyId", r.get("questionId", r.get("followupQuestionId"))) for r in body}
        assert ids == {200}, path
    options = v2(server, seeded, "follow-up-options.json", token="globex").json()
    assert {o["followupQuestionId"] for o in options} == {200}
    window: dict[str, Any] = {"startDate": "2026-03-01", "endDate": "2026-03-03"}
    for path in ("results/button-feedbacks.json", "results/follow-up-feedbacks.json",
                 "results/happy-index.json"):  # fmt: skip
        assert v2(server, seeded, path, token="globex", surveyId=100, **window).json() == []
        assert v2(server, seeded, path, token="globex", experiencePointId=11, **window).json() == []
    rows = v2(server, seeded, "results/button-feedbacks.json", token="globex", **window).json()
    assert rows
    assert {r["smileyId"] for r in rows} == {2001}
    for path in ("folders/11", "folders/10/children", "folders/acme", "surveys/11-100",
                 "surveys/100", "surveys/11-100/results", "surveys/11-100/rawresults",
                 "surveys/11-100/followup", "surveys/11-100/openfeedback"):  # fmt: skip
        response = v1(server, seeded, path, token="globex")
        assert response.status_code == 404, path
    tree = v1(server, seeded, "folders", token="globex", surveys="true").json()
    assert "acme" not in json.dumps(tree).lower()
    assert "Finland" not in json.dumps(tree)


def test_subtree_scope(server: ApiProcess, seeded: Seeded) -> None:
    points = v2(server, seeded, "experience-points.json", token="helsinki").json()
    assert points == [{"experiencePointId": 11, "name": "Helsinki store",
                       "type": "EXPERIENCE-POINT", "timeZone": "Europe/Helsinki"}]  # fmt: skip
    finland = v2(server, seeded, "experience-points.json", token="finland").json()
    assert {p["experiencePointId"] for p in finland} == {10, 11, 12}
    assert "parent" not in finland[0]  # the scope root's parent is outside the scope
    smileys = v2(server, seeded, "smileys.json", token="helsinki").json()
    assert {s["smileyId"] for s in smileys} == {1001, 1002}
    assert [s["surveyId"] for s in v2(server, seeded, "surveys.json", token="finland").json()] == [
        100
    ]
    window: dict[str, Any] = {"startDate": "2026-03-01", "endDate": "2026-03-03"}
    rows = v2(server, seeded, "results/button-feedbacks.json", token="helsinki", **window).json()
    assert rows
    assert {r["experiencePointId"] for r in rows} == {11}
    assert v2(server, seeded, "results/button-feedbacks.json", token="helsinki",
              experiencePointId=12, **window).json() == []  # fmt: skip
    assert v2(server, seeded, "results/follow-up-feedbacks.json", token="helsinki",
              experiencePointId=12, **window).json() == []  # fmt: skip
    assert v2(server, seeded, "experience-points.json", token="helsinki",
              rootExperiencePointId=10).json() == []  # fmt: skip
    for path in ("folders/12", "folders/10", "folders/12/children", "surveys/12-100",
                 "surveys/12-100/results", "surveys/12-100/rawresults", "surveys/12-100/followup",
                 "surveys/101", "surveys/14-101"):  # fmt: skip
        assert v1(server, seeded, path, token="helsinki").status_code == 404, path
    tree = v1(server, seeded, "folders", token="helsinki", surveys="true").json()
    assert [f["key"] for f in tree["folders"]] == [11]
    assert [s["key"] for s in tree["folders"][0]["surveys"]] == ["11-100"]
    # The bare survey id counts only what the scope sees.
    total = sum(
        sum(b["data"]) for b in v1(server, seeded, "surveys/100/results", token="helsinki").json()
    )
    assert total == store_counts(seeded)[(11, 100)]


# --- credentials, methods, limits, parameters ------------------------------------------------


def test_credentials(server: ApiProcess, seeded: Seeded) -> None:
    client, token, _ = seeded.tokens["acme"]
    url = f"{server.base}/v1/folders"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=(client, token)).status_code == 200
    assert (
        httpx.get(url, headers={"X-HON-Client-Id": client, "X-HON-API-Token": token}).status_code
        == 200
    )
    assert httpx.get(url, auth=(client, token + "x")).status_code == 401
    assert httpx.get(url, auth=(seeded.tokens["globex"][0], token)).status_code == 401
    answer = httpx.get(url, auth=("nobody", "nothing"))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic")
    v2url = f"{server.base}/v2/surveys.json"
    assert httpx.get(v2url).status_code == 401
    assert httpx.get(v2url, headers={"X-HON-API-Token": token}).status_code == 200
    assert httpx.get(v2url, params={"auth": token}).status_code == 200
    assert httpx.get(v2url, params={"auth": "wrong"}).status_code == 401
    for name in ("revoked", "expired"):
        assert httpx.get(v2url, params={"auth": seeded.tokens[name][1]}).status_code == 401
        assert httpx.get(url, auth=seeded.tokens[name][:2]).status_code == 401
    introspect = httpx.get(
        f"{server.base}/v2/token/introspect", params={"auth": seeded.tokens["helsinki"][1]}
    )
    assert introspect.json() == {"token_id": seeded.tokens["helsinki"][2], "token_name": "helsinki",
                                 "scopes": ["read", "company:acme", "location:11"]}  # fmt: skip


def test_only_get_and_head(server: ApiProcess, seeded: Seeded) -> None:
    token = seeded.tokens["acme"][1]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/v2/surveys.json", "/v1/folders", "/v2/results/button-feedbacks.csv"):
            answer = httpx.request(method, server.base + path, headers={"X-HON-API-Token": token})
            assert answer.status_code == 405, (method, path)
    for method in ("OPTIONS", "TRACE"):
        assert httpx.request(method, f"{server.base}/v1/folders").status_code == 405
    streamed = httpx.head(f"{server.base}/v2/results/button-feedbacks.csv",
                          params={"auth": token, "period": "2026-03"})  # fmt: skip
    assert streamed.status_code == 200
    assert streamed.content == b""
    head = httpx.head(f"{server.base}/v2/surveys.json", headers={"X-HON-API-Token": token})
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("v2/results/button-feedbacks.json", {"startDate": "2026-13-01"}, "startDate"),
        ("v2/results/button-feedbacks.json", {"startDate": "yesterday"}, "startDate"),
        (
            "v2/results/button-feedbacks.json",
            {"startDate": "2026-03-01", "endDate": "2026-02-01"},
            "endDate",
        ),
        (
            "v2/results/button-feedbacks.json",
            {"startDate": "2025-01-01", "endDate": "2026-01-02"},
            "endDate",
        ),
        ("v2/results/button-feedbacks.json", {"period": "last-fortnight"}, "period"),
        ("v2/results/button-feedbacks.json", {"period": "2026-q5"}, "period"),
        ("v2/results/button-feedbacks.json", {"limit": "10001"}, "limit"),
        ("v2/results/button-feedbacks.json", {"offset": "-1"}, "offset"),
        ("v2/results/button-feedbacks.json", {"order": "sideways"}, "order"),
        ("v2/results/button-feedbacks.json", {"includeMisuse": "perhaps"}, "includeMisuse"),
        ("v2/results/follow-up-feedbacks.csv", {"csvSeparator": ";;"}, "csvSeparator"),
        ("v2/results/button-feedbacks.xml", {}, "format"),
        ("v2/experience-points.json", {"type": "SHOP"}, "type"),
        ("v1/surveys/11-100/results", {"truncate": "minute"}, "truncate"),
        ("v1/surveys/11-100/results", {"date_start": "1st of March"}, "date_start"),
        ("v1/surveys/11-100/rawresults", {"date_end": "2026-02-30"}, "date_end"),
    ],
)
def test_bad_parameters_are_named(
    server: ApiProcess, seeded: Seeded, path: str, params: dict[str, str], parameter: str
) -> None:
    version, _, rest = path.partition("/")
    answer = (v1 if version == "v1" else v2)(server, seeded, rest, **params)
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter
    assert parameter in answer.json()["error"]


def test_rate_limit_answers_429_with_retry_after(seeded: Seeded) -> None:
    with running(seeded, rate_limit="3/minute") as limited:
        token = seeded.tokens["acme"][1]
        other = seeded.tokens["globex"][1]
        codes = [httpx.get(f"{limited.base}/v2/surveys.json", params={"auth": token}).status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [200, 200, 200, 429]
        answer = httpx.get(f"{limited.base}/v2/surveys.json", params={"auth": token})
        assert answer.status_code == 429
        assert 1 <= int(answer.headers["retry-after"]) <= 20
        # Per token: another token is not held back.
        assert (
            httpx.get(f"{limited.base}/v2/surveys.json", params={"auth": other}).status_code == 200
        )


# --- paging, CSV, periods ----------------------------------------------------------------------


def test_paging_headers_and_link(server: ApiProcess, seeded: Seeded) -> None:
    params: dict[str, Any] = {
        "experiencePointId": 12,
        "startDate": "2026-03-02",
        "endDate": "2026-03-03",
    }
    everything = v2(server, seeded, "results/button-feedbacks.json", **params).json()
    assert len(everything) == 219
    page = v2(server, seeded, "results/button-feedbacks.json", limit=100, **params)
    assert page.headers["x-more-available"] == "true"
    collected = page.json()
    link = page.headers["link"]
    while link:
        url = link[1 : link.index(">")]
        assert 'rel="next"' in link
        page = httpx.get(url, headers={"X-HON-API-Token": seeded.tokens["acme"][1]})
        collected += page.json()
        link = page.headers.get("link", "")
    assert page.headers["x-more-available"] == "false"
    assert [r["feedbackId"] for r in collected] == [r["feedbackId"] for r in everything]
    descending = v2(server, seeded, "results/button-feedbacks.json", order="desc", **params).json()
    assert descending == everything[::-1]
    assert v2(server, seeded, "results/button-feedbacks.json", period="2026-03",
              experiencePointId=12).json()[1:220] == everything  # fmt: skip


def test_csv_columns_and_separator(server: ApiProcess, seeded: Seeded) -> None:
    params: dict[str, Any] = {
        "experiencePointId": 12,
        "startDate": "2026-03-02",
        "endDate": "2026-03-03",
    }
    answer = v2(server, seeded, "results/button-feedbacks.csv", csvSeparator=";", **params)
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text), delimiter=";"))
    assert rows[0] == ["feedbackId", "smileyId", "localTime", "surveyId", "experiencePointId",
                       "buttonIndex", "misuse", "position", "ui", "smileyType", "utcTime",
                       "timePrecision", "transport", "clockCorrected"]  # fmt: skip
    assert len(rows) == 220
    assert rows[1][1:] == ["1004", "2026-03-02T10:00:00+02:00", "100", "12", "0", "false", "0",
                           "physical", "SMILEY_TERMINAL", "2026-03-02T08:00:00Z", "second", "tcp",
                           "false"]  # fmt: skip
    follow = v2(server, seeded, "results/follow-up-feedbacks.json", experiencePointId=11,
                startDate="2026-03-01", endDate="2026-03-02").json()  # fmt: skip
    assert follow
    assert all(r["followupOptionId"] in (10001, 10002) for r in follow)
    assert {r["position"] for r in follow} == {1}


def test_openapi_documents_the_extensions(server: ApiProcess) -> None:
    document = httpx.get(f"{server.base}/openapi.json").json()
    fields = document["components"]["schemas"]["ButtonFeedback"]["properties"]
    for name in ("utcTime", "timePrecision", "transport", "clockCorrected"):
        assert name in fields
        assert fields[name].get("description")
    assert "/v2/results/happy-index.{format}" in document["paths"]
    assert httpx.get(f"{server.base}/docs").status_code == 200


def test_tokens_cli(seeded: Seeded) -> None:
    config, _ = seeded.config()
    made = subprocess.run([GATEWAY, "tokens", "create", "--company", "acme", "--scope", "12",
                           "--name", "cli", "--expires", "2099-01-01", "--config", str(config)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    client = made.stdout.split("client id:")[1].split()[0]
    listed = subprocess.run([GATEWAY, "tokens", "list", "--config", str(config)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert client in listed
    assert "2099-01-01" in listed
    assert made.stdout.split("token:")[1].split()[0] not in listed
    revoked = subprocess.run([GATEWAY, "tokens", "revoke", client, "--config", str(config)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert revoked.returncode == 0
    bad = subprocess.run([GATEWAY, "tokens", "create", "--company", "acme", "--scope", "21",
                          "--config", str(config)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "--scope" in bad.stderr


def test_dates_are_days_at_the_experience_point(server: ApiProcess, seeded: Seeded) -> None:
    """2026-03-01 in Helsinki runs from 22:00Z on 28 February: a press at 23:30Z is in it."""
    march = v2(server, seeded, "results/button-feedbacks.json", experiencePointId=12,
               startDate="2026-03-01", endDate="2026-03-02").json()  # fmt: skip
    assert [r["localTime"] for r in march] == ["2026-03-01T01:30:00+02:00"]
    assert [r["utcTime"] for r in march] == ["2026-02-28T23:30:00Z"]
    february = v2(server, seeded, "results/button-feedbacks.json", experiencePointId=12,
                  period="2026-02").json()  # fmt: skip
    assert february == []


def test_whole_survey_results_match_per_point_results(server: ApiProcess, seeded: Seeded) -> None:
    """A bare survey id seen whole is answered from the per-survey rollup where there is one."""
    whole = v1(server, seeded, "surveys/101/results").json()
    assert whole == v1(server, seeded, "surveys/14-101/results").json()
    assert [b["data"] for b in whole] == [[2, 2, 2, 2, 2]]
    assert whole[0]["happyIndex"] == 50

    def total(key: str, **params: Any) -> list[int]:
        sums = [0, 0, 0, 0]
        for bucket in v1(server, seeded, f"surveys/{key}/results", **params).json():
            sums = [a + b for a, b in zip(sums, bucket["data"], strict=True)]
        return sums

    for params in ({}, {"truncate": "hour", "date_start": "2026-03-01", "date_end": "2026-03-03"}):
        per_point = [a + b for a, b in zip(total("11-100", **params), total("12-100", **params),
                                           strict=True)]  # fmt: skip
        assert total("100", **params) == per_point
