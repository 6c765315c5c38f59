"""The central store's tables by name: the one place writers, readers and the API agree on.

Both backends create these tables (SQLite: ``sqlite_schema.py``, PostgreSQL:
``pg_schema/*.sql``); queries name them through these constants, so a table
renamed in a migration is renamed here once.
"""

from __future__ import annotations

COMPANY = "company"
LOCATION = "location"
SURVEY = "survey"
TERMINAL = "terminal"
PRESS = "press"
HOURLY = "hourly"
"""Hour-precision counts (SMS), one row per terminal, hour and button."""
PRESS_HOURLY = "press_hourly"
"""Presses per terminal and hour (always on PostgreSQL; SQLite does not keep it)."""
PRESS_HOURLY_SURVEY = "press_hourly_survey"
"""Presses per survey and hour."""
REJECTED = "rejected"
API_TOKEN = "api_token"  # noqa: S105 (a table name)
"""The query API's credentials, created by the API on first use."""

REGISTRY_COLUMNS: dict[str, tuple[str, ...]] = {
    COMPANY: ("id", "name"),
    LOCATION: ("id", "company", "name", "parent", "timezone"),
    SURVEY: ("id", "company", "question", "locale", "scale", "misuse_interval_s"),
    TERMINAL: ("id", "key", "location", "survey", "name", "phone"),
}
"""The registry tables of every store, their columns in this order."""

TOKEN_COLUMNS = ("id", "client_id", "company", "scope", "name", "created_at", "expires_at",
                 "revoked_at")  # fmt: skip
"""The columns of API_TOKEN a credential is read from (its hash apart)."""
